import re
from io import StringIO

from django.contrib.auth import authenticate
from django.core.management import call_command

from audit.models import AuditRecord
from conftest import free_port
from gateway.models import Connection
from identity.actions import authenticate_token
from identity.models import Agent, AgentToken, User
from policies.models import Policy


def _demo(*args: str) -> str:
    out = StringIO()
    call_command("demo", *args, stdout=out)
    return out.getvalue()


def test_demo_creates_people_a_policy_an_agent_and_a_connection_and_prints_secrets_once(db):
    output = _demo()
    passwords = dict(re.findall(r"(\w+)\s+password: (\S+)", output))
    assert set(passwords) == {"admin", "reviewer", "auditor"}
    for username, role in [("admin", "admin"), ("reviewer", "reviewer"), ("auditor", "auditor")]:
        user = authenticate(username=username, password=passwords[username])
        assert user is not None and user.role_names() == {role}
    raw = re.search(r"demo-agent token: (alk_\S+)", output).group(1)
    token = authenticate_token("demo-agent", raw)
    assert token is not None and token.agent.group_names() == ["agents"]
    policy = Policy.objects.get(name="demo")
    assert policy.spec["default"] == "deny"
    connection = Connection.objects.get(name="demo")
    assert (connection.host, connection.port, connection.database, connection.username) == (
        "127.0.0.1",
        5432,
        "postgres",
        "postgres",
    )
    assert [g.name for g in connection.groups.all()] == ["agents"] and connection.policy == policy
    records = str(list(AuditRecord.objects.values("before", "after", "detail")))
    assert raw not in records and not any(p in records for p in passwords.values())


def test_demo_run_again_changes_nothing_and_prints_no_secret(db):
    _demo()
    counts = (
        User.objects.count(),
        Agent.objects.count(),
        AgentToken.objects.count(),
        AuditRecord.objects.count(),
    )
    output = _demo()
    assert "password:" not in output and "alk_" not in output
    assert "exists" in output
    assert counts == (
        User.objects.count(),
        Agent.objects.count(),
        AgentToken.objects.count(),
        AuditRecord.objects.count(),
    )


def test_demo_issues_a_fresh_token_when_asked_or_when_none_is_usable(db):
    from identity.actions import do_revoke_token

    _demo()
    raw = re.search(r"token: (alk_\S+)", _demo("--new-token")).group(1)
    assert authenticate_token("demo-agent", raw) is not None
    for token in AgentToken.objects.all():
        do_revoke_token(None, token)
    raw = re.search(r"token: (alk_\S+)", _demo()).group(1)
    assert authenticate_token("demo-agent", raw) is not None


def test_demo_skips_the_connection_when_no_postgres_answers(db):
    port = free_port()
    output = _demo("--postgres", f"127.0.0.1:{port}")
    assert f"not created: no PostgreSQL at 127.0.0.1:{port}" in output
    assert not Connection.objects.exists()
    assert Agent.objects.filter(name="demo-agent").exists()
