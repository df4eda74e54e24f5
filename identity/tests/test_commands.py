"""``manage.py agent`` and ``manage.py user``: output, exit codes, and what they change."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditRecord
from conftest import database_url
from identity import tokens
from identity.actions import authenticate_token
from identity.models import Agent, AgentToken, User
from identity.tests.factories import issue, make_agent

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    options = {"stdin": StringIO(stdin)} if stdin is not None else {}
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def manage_py(transactional_db):
    """Runs the real ``python manage.py`` against the test database; returns the process."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url()

    def manage(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return manage


# --- agent ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_agent_create_prints_one_working_token_and_records_the_cli_as_actor(alice, bob):
    out, err = run(
        "agent", "create", "billing-bot", "--group", "agents", "--group", "billing",
        "--on-behalf-of", "alice", "--owner", "bob", "--label", "first",
    )  # fmt: skip

    raw = out.strip()
    assert tokens.looks_like_token(raw) and out.count("\n") == 1
    assert "Created agent billing-bot (groups: agents, billing)" in err
    assert "shown only this once" in err and raw not in err
    agent = Agent.objects.get(name="billing-bot")
    assert agent.on_behalf_of == alice and agent.owner == bob
    assert authenticate_token("billing-bot", raw).label == "first"
    assert list(AuditRecord.objects.filter(actor="cli").order_by("id").values_list("action", flat=True)) == [
        "agent.create",
        "token.issue",
    ]


@pytest.mark.django_db
def test_agent_token_issues_another_token_with_an_expiry():
    make_agent()
    issue(Agent.objects.get(name="billing-bot"))

    out, err = run("agent", "token", "billing-bot", "--expires", "30d", "--label", "rotation")

    token = authenticate_token("billing-bot", out.strip())
    assert token.label == "rotation"
    assert abs((token.expires_at - token.created_at).total_seconds() - 30 * 86400) < 60
    assert "expires" in err
    assert AgentToken.objects.filter(agent__name="billing-bot").count() == 2


@pytest.mark.django_db
def test_agent_revoke_takes_the_listed_prefix():
    agent = make_agent()
    keep, drop = issue(agent), issue(agent)

    _, err = run("agent", "revoke", "billing-bot", drop.token.prefix + "…")

    assert f"Revoked token {drop.token.prefix}" in err
    assert authenticate_token("billing-bot", drop.raw) is None
    assert authenticate_token("billing-bot", keep.raw) is not None
    assert AuditRecord.objects.filter(actor="cli", action="token.revoke").count() == 1
    with pytest.raises(CommandError, match="revoked already"):
        run("agent", "revoke", "billing-bot", drop.token.prefix)


@pytest.mark.django_db
def test_agent_revoke_refuses_an_unknown_or_too_short_prefix():
    issue(make_agent())

    with pytest.raises(CommandError, match="has no token starting with 'alk_zzzzzzzz'"):
        run("agent", "revoke", "billing-bot", "alk_zzzzzzzz")
    with pytest.raises(CommandError, match="at least the first 6 characters"):
        run("agent", "revoke", "billing-bot", "alk_")


@pytest.mark.django_db
def test_agent_list_shows_agents_and_token_prefixes_but_no_token(alice):
    agent = make_agent(on_behalf_of=alice)
    live, revoked = issue(agent, label="ci"), issue(agent)
    run("agent", "revoke", "billing-bot", revoked.token.prefix)

    out, _ = run("agent", "list")

    header, row, *token_lines = out.splitlines()
    assert header.split()[:2] == ["NAME", "ENABLED"]
    assert row.split()[:4] == ["billing-bot", "yes", "agents", "alice"]
    assert any(live.token.prefix in line and "active" in line and "'ci'" in line for line in token_lines)
    assert any(revoked.token.prefix in line and "revoked" in line for line in token_lines)
    assert live.raw not in out and revoked.raw not in out


@pytest.mark.django_db
def test_agent_disable_refuses_its_tokens_until_enabled():
    issued = issue(make_agent())

    run("agent", "disable", "billing-bot")
    assert authenticate_token("billing-bot", issued.raw) is None
    run("agent", "enable", "billing-bot")
    assert authenticate_token("billing-bot", issued.raw) is not None


@pytest.mark.django_db
def test_agent_bind_ties_a_jwt_subject_of_the_configured_issuer(settings):
    settings.AIRLOCK_JWT_ISSUERS = [{"issuer": "https://idp.example", "audience": "airlock"}]
    make_agent()

    run("agent", "bind", "billing-bot", "svc-billing")
    assert Agent.objects.get(name="billing-bot").external_subject == "https://idp.example|svc-billing"

    make_agent("report-bot")
    with pytest.raises(CommandError, match="'billing-bot' is already bound"):
        run("agent", "bind", "report-bot", "svc-billing")
    with pytest.raises(CommandError, match="not a configured JWT issuer"):
        run("agent", "bind", "report-bot", "svc-report", "--issuer", "https://other.example")

    run("agent", "unbind", "billing-bot")
    assert Agent.objects.get(name="billing-bot").external_subject == ""


@pytest.mark.django_db
def test_agent_create_with_a_jwt_subject_and_no_token(settings):
    settings.AIRLOCK_JWT_ISSUERS = [{"issuer": "https://idp.example", "audience": "airlock"}]

    out, err = run("agent", "create", "ci-bot", "--jwt-subject", "svc-ci", "--no-token")

    assert out == ""
    assert "https://idp.example|svc-ci" in err
    assert Agent.objects.get(name="ci-bot").external_subject == "https://idp.example|svc-ci"
    assert not AgentToken.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["agent", "token", "ghost"], "no agent named 'ghost'"),
        (["agent", "revoke", "ghost", "alk_abcdefgh"], "no agent named 'ghost'"),
        (["agent", "disable", "ghost"], "no agent named 'ghost'"),
        (["agent", "create", "bot", "--on-behalf-of", "nobody"], "--on-behalf-of: no person named 'nobody'"),
        (["agent", "create", "bot", "--expires", "soon"], "'soon' is not a duration"),
        (["agent", "create", "bad name!"], "name: Use letters, digits"),
        (["agent", "create", "bot", "--jwt-subject", "x"], "no JWT issuer is configured"),
    ],
)
def test_agent_bad_input_is_a_clear_error_and_changes_nothing(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        run(*args)
    assert not Agent.objects.exists()
    assert not AuditRecord.objects.exists()


@pytest.mark.django_db
def test_agent_create_refuses_a_taken_name():
    make_agent()
    with pytest.raises(CommandError, match="an agent named 'billing-bot' exists already"):
        run("agent", "create", "billing-bot")
    assert AgentToken.objects.count() == 0


def test_agent_exit_codes_and_streams_of_the_real_command(manage_py):
    created = manage_py("agent", "create", "billing-bot", "--group", "agents", "--expires", "1d")
    assert created.returncode == 0, created.stderr
    raw = created.stdout.strip()
    assert tokens.looks_like_token(raw)
    assert raw not in created.stderr
    assert authenticate_token("billing-bot", raw) is not None

    unknown = manage_py("agent", "token", "ghost")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert "CommandError: no agent named 'ghost'" in unknown.stderr

    missing = manage_py("agent")
    assert missing.returncode != 0
    assert "SUBCOMMAND" in missing.stderr


# --- user -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_user_create_makes_a_local_account_with_a_password_from_stdin(role_groups):
    _, err = run(
        "user",
        "create",
        "erin",
        "--role",
        "reviewer",
        "--group",
        "dba",
        "--password-stdin",
        stdin="Blue-Harbour-73\n",
    )

    erin = User.objects.get(username="erin")
    assert erin.check_password("Blue-Harbour-73")
    assert erin.has_role("reviewer") and not erin.has_role("admin")
    assert set(erin.groups.values_list("name", flat=True)) == {"reviewers", "dba"}
    assert "roles: reviewer; login: password" in err
    record = AuditRecord.objects.get(action="user.create")
    assert record.actor == "cli"
    assert "Blue-Harbour-73" not in str(record.after) and "pbkdf2" not in str(record.after)


@pytest.mark.django_db
def test_user_create_without_a_password_is_for_single_sign_on_only():
    _, err = run("user", "create", "frank", "--role", "auditor")

    frank = User.objects.get(username="frank")
    assert not frank.has_usable_password()
    assert frank.has_role("auditor")
    assert "single sign-on only" in err


@pytest.mark.django_db
def test_user_create_refuses_a_weak_password_and_creates_nothing():
    with pytest.raises(CommandError, match="too common|too short"):
        run("user", "create", "gina", "--role", "admin", "--password-stdin", stdin="password\n")
    with pytest.raises(CommandError, match="no password on standard input"):
        run("user", "create", "gina", "--password-stdin", stdin="")
    assert not User.objects.filter(username="gina").exists()
    assert not AuditRecord.objects.exists()


@pytest.mark.django_db
def test_user_create_refuses_a_taken_username(alice):
    with pytest.raises(CommandError, match="'alice' exists already"):
        run("user", "create", "alice", "--role", "auditor")
    assert not alice.has_role("auditor")


@pytest.mark.django_db
def test_user_list_shows_roles_and_groups(alice, bob, mallory):
    out, _ = run("user", "list")

    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["alice"][:3] == ["alice", "yes", "admin"]
    assert rows["bob"][2:4] == ["reviewer", "dba,reviewers"]
    assert rows["mallory"][2] == "-"


def test_user_create_real_command_refuses_an_unknown_role(manage_py):
    result = manage_py("user", "create", "hal", "--role", "superhero")

    assert result.returncode != 0
    assert "invalid choice: 'superhero'" in result.stderr
    assert not User.objects.filter(username="hal").exists()
