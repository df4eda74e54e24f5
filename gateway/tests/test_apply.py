"""manage.py apply / export against the real PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import connection as db_connection

from audit.models import AuditRecord
from gateway import secrets
from gateway.declarative.export import export_yaml
from gateway.declarative.loader import ConfigError
from gateway.declarative.plan import apply_config
from gateway.models import Connection
from gateway.tests.dbdump import database_text, dump_database
from identity.actions import do_issue_token
from identity.models import Agent
from policies.models import Policy, PolicyVersion

SHOP_PASSWORD = "shop-Pa55-0f7c1e2d"

# The example from the issue, as written there.
ISSUE_EXAMPLE = """
groups: [{name: agents}, {name: dba}]
connections:
  - {name: shop, kind: postgres, host: 127.0.0.1, port: 5432, database: shop,
     username: shop_app, password: "${SHOP_PG_PASSWORD}", groups: [agents], policy: agents-default}
agents:
  - {name: billing-bot, groups: [agents], on_behalf_of: alice}
policies:
  - name: agents-default
    default: deny
    rules:
      - {name: reads, match: {operations: [read]}, action: allow}
      - {name: writes, match: {operations: [write]}, action: review, reviewers: [dba], timeout: 10m}
"""

ENV = {"SHOP_PG_PASSWORD": SHOP_PASSWORD}

pytestmark = pytest.mark.django_db


def apply(text: str, env: dict[str, str] | None = None, **kwargs):  # type: ignore[no-untyped-def]
    return apply_config(text, environ=ENV if env is None else env, **kwargs)


def test_apply_creates_everything_from_the_issue_example(alice):
    result = apply(ISSUE_EXAMPLE)

    assert {str(c) for c in result.changes} >= {"+ group agents", "+ group dba", "+ agent billing-bot"}
    shop = Connection.objects.get(name="shop")
    assert (shop.kind, shop.host, shop.port, shop.database, shop.username) == (
        "postgres",
        "127.0.0.1",
        5432,
        "shop",
        "shop_app",
    )
    assert secrets.get_secrets(shop) == {"password": SHOP_PASSWORD}
    assert [g.name for g in shop.groups.all()] == ["agents"]
    assert shop.policy.name == "agents-default"
    bot = Agent.objects.get(name="billing-bot")
    assert bot.group_names() == ["agents"]
    assert bot.on_behalf_of == alice
    policy = Policy.objects.get(name="agents-default")
    assert policy.version == 1
    assert policy.spec["rules"][1] == {
        "name": "writes",
        "match": {"operations": ["write"]},
        "action": "review",
        "reviewers": ["dba"],
        "timeout": "10m",
    }
    assert PolicyVersion.objects.filter(policy=policy).count() == 1
    actions = set(AuditRecord.objects.values_list("action", flat=True))
    assert {"group.create", "connection.create", "agent.create", "policy.create", "config.apply"} <= actions
    assert set(AuditRecord.objects.values_list("actor", flat=True)) == {"apply"}


def test_a_second_apply_changes_nothing_and_writes_nothing(alice):
    apply(ISSUE_EXAMPLE)
    before = dump_database()

    result = apply(ISSUE_EXAMPLE)

    assert result.changes == []
    assert dump_database() == before  # no audit record, no policy version, no re-encryption


def test_a_changed_file_changes_only_what_differs(alice):
    apply(ISSUE_EXAMPLE)
    audit_before = AuditRecord.objects.count()
    changed = ISSUE_EXAMPLE.replace("port: 5432", "port: 6432").replace("timeout: 10m", "timeout: 15m")

    result = apply(changed)

    assert sorted(str(c) for c in result.changes) == [
        "~ connection shop: port: 5432 -> 6432",
        "~ policy agents-default: rules changed: new version 2",
    ]
    assert Connection.objects.get(name="shop").port == 6432
    policy = Policy.objects.get(name="agents-default")
    assert policy.version == 2
    assert list(policy.versions.values_list("number", flat=True)) == [2, 1]
    new = AuditRecord.objects.order_by("id")[audit_before:]
    assert [r.action for r in new] == ["policy.update", "connection.update", "config.apply"]
    update = new[1]
    assert update.before["port"] == 5432 and update.after["port"] == 6432


def test_a_changed_secret_is_applied_and_audited_by_name_only(alice):
    apply(ISSUE_EXAMPLE)
    result = apply(ISSUE_EXAMPLE, env={"SHOP_PG_PASSWORD": "n3w-secret-9a8b"})

    assert [str(c) for c in result.changes] == ["~ connection shop: password changed"]
    assert secrets.get_secrets(Connection.objects.get(name="shop")) == {"password": "n3w-secret-9a8b"}
    update = AuditRecord.objects.get(action="connection.update")
    assert update.detail == {"secrets_changed": ["password"]}
    assert "n3w-secret-9a8b" not in json.dumps([update.before, update.after, update.detail])


BAD_FILE = """
groups:
  - name: agents
  - {name: dba, colour: blue}
connections:
  - name: shop
    kind: postgres
    host: 127.0.0.1
    port: "5432"
    password: "${MISSING_PASSWORD}"
    groups: [agents, agnets]
    policy: no-such-policy
  - name: box
    kind: ssh
    host: 10.0.0.5
    port: 22
    password: hunter2-literal
    private_key: "${BOX_KEY}"
    enabeld: false
  - {name: cluster, kind: kubernetes, host: "https://k8s.example:6443", token: "${K8S}", options: {namespace: Prod}}
  - {name: shop, kind: mysql, host: db}
agents:
  - {name: billing-bot, groups: [agents], on_behalf_of: nobody, enabled: "yes"}
policies:
  - name: agents-default
    default: maybe
    rules:
      - {name: writes, match: {operations: [write]}, action: review, reviewers: [nobody-group]}
"""


def test_a_bad_file_lists_every_problem_by_path_and_changes_nothing(alice):
    apply(ISSUE_EXAMPLE)
    before = dump_database()

    with pytest.raises(ConfigError) as caught:
        apply(BAD_FILE, env={"BOX_KEY": "k", "K8S": ""})

    reported = {(p.path, p.message) for p in caught.value.problems}
    paths = [p.path for p in caught.value.problems]
    expected_paths = {
        "groups[1].colour",  # unknown key
        "connections[0].port",  # wrong type
        "connections[0].password",  # missing variable
        "connections[0].groups[1]",  # unknown group
        "connections[0].policy",  # unknown policy
        "connections[1].password",  # literal secret
        "connections[1].enabeld",  # typo
        "connections[2].token",  # empty variable
        "connections[2].options.namespace",  # bad option value
        "connections[3].name",  # duplicate name
        "connections[3].kind",  # unknown kind
        "agents[0].on_behalf_of",  # unknown person
        "agents[0].enabled",  # wrong type
        "policies[0].default",  # bad value (policies.spec)
        "policies[0].rules[0].reviewers[0]",  # unknown reviewer group
    }
    assert expected_paths <= set(paths), sorted(reported)
    assert ("connections[0].port", "must be an integer") in reported
    assert (
        "connections[0].password",
        "environment variable MISSING_PASSWORD is not set (nor MISSING_PASSWORD_FILE)",
    ) in reported
    assert (
        "connections[0].policy",
        "unknown policy 'no-such-policy' (not in the file nor in the database)",
    ) in reported
    assert any(
        m.startswith("must be a ${ENV_VAR} reference: literal secrets are refused")
        for p, m in reported
        if p == "connections[1].password"
    )
    # Each problem carries the line it is on.
    by_path = {p.path: p for p in caught.value.problems}
    assert by_path["connections[0].port"].line == 9
    assert by_path["connections[1].enabeld"].line == 19
    assert str(by_path["connections[0].port"]) == "connections[0].port: must be an integer (line 9)"
    # No secret value appears in any message, not even the literal one.
    assert "hunter2-literal" not in str(caught.value)
    assert dump_database() == before


def test_yaml_syntax_errors_are_reported_with_line_and_column(alice):
    before = dump_database()
    text = "groups:\n  - name: agents\n  - name: [dba\nconnections: []\n"
    with pytest.raises(ConfigError) as caught:
        apply(text)
    (problem,) = caught.value.problems
    assert problem.path == "(yaml)"
    assert problem.message.startswith("line 4, column 12: ")
    assert dump_database() == before


def test_a_key_given_twice_is_reported_not_silently_overwritten(alice):
    text = "connections:\n  - name: a\n    kind: postgres\n    host: h\n    host: other\n"
    with pytest.raises(ConfigError) as caught:
        apply(text)
    assert [str(p) for p in caught.value.problems] == [
        "connections[0].host: given twice (first on line 4) (line 5)"
    ]


def test_unknown_top_level_sections_are_reported(alice):
    with pytest.raises(ConfigError) as caught:
        apply("connection: []\npolicies: []\n")
    assert [str(p) for p in caught.value.problems] == [
        "connection: unknown key (expected one of: groups, connections, agents, policies, masking) (line 1)"
    ]


def test_secrets_may_come_from_a_NAME_FILE_variable(alice, tmp_path):
    path = tmp_path / "pw"
    path.write_text("from-a-file-77\n")
    apply(ISSUE_EXAMPLE, env={"SHOP_PG_PASSWORD_FILE": str(path)})
    assert secrets.get_secrets(Connection.objects.get(name="shop")) == {"password": "from-a-file-77"}


def test_a_secret_field_left_out_keeps_the_stored_secret_and_null_clears_it(alice):
    apply(ISSUE_EXAMPLE)
    without = ISSUE_EXAMPLE.replace('password: "${SHOP_PG_PASSWORD}", ', "")
    assert apply(without).changes == []
    assert secrets.get_secrets(Connection.objects.get(name="shop")) == {"password": SHOP_PASSWORD}

    cleared = ISSUE_EXAMPLE.replace('"${SHOP_PG_PASSWORD}"', "null")
    assert [str(c) for c in apply(cleared).changes] == ["~ connection shop: password cleared"]
    assert secrets.get_secrets(Connection.objects.get(name="shop")) == {}


def test_dry_run_reports_the_changes_and_changes_nothing(alice):
    before = dump_database()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOP_PG_PASSWORD", SHOP_PASSWORD)
        path = _write(ISSUE_EXAMPLE)
        call_command("apply", "-f", path, "--dry-run", stdout=out)
    text = out.getvalue()
    assert "+ connection shop: secrets set: password" in text
    assert "+ policy agents-default" in text
    assert "Dry run: 5 to create, 0 to update, 0 to delete; nothing was changed." in text
    assert SHOP_PASSWORD not in text
    assert dump_database() == before


def _write(text: str) -> str:
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    handle.write(text)
    handle.close()
    return handle.name


def test_the_command_lists_problems_and_fails(alice):
    path = _write(BAD_FILE)
    with pytest.raises(CommandError) as caught:
        call_command("apply", "-f", path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "problems; nothing was changed" in message
    assert "\n  connections[0].port: must be an integer (line 9)" in message
    os.unlink(path)


def test_the_actor_option_names_the_person_in_the_audit_log(alice):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOP_PG_PASSWORD", SHOP_PASSWORD)
        call_command("apply", "-f", _write(ISSUE_EXAMPLE), "--actor", "alice", stdout=io.StringIO())
    assert set(AuditRecord.objects.values_list("actor", flat=True)) == {"alice"}
    assert PolicyVersion.objects.get().author == alice
    with pytest.raises(CommandError, match="--actor: no person with username 'nobody'"):
        call_command("apply", "-f", _write(ISSUE_EXAMPLE), "--actor", "nobody")


def test_without_prune_nothing_is_deleted(alice):
    apply(ISSUE_EXAMPLE)
    assert apply("connections: []\nagents: []\npolicies: []\n").changes == []
    assert Connection.objects.count() == 1 and Agent.objects.count() == 1 and Policy.objects.count() == 1


def test_prune_deletes_what_the_files_sections_no_longer_list(alice):
    apply(ISSUE_EXAMPLE)
    do_issue_token("apply", Agent.objects.get(name="billing-bot"))

    result = apply("connections: []\nagents: []\npolicies: []\n", prune=True)

    assert [str(c) for c in result.changes] == [
        "- connection shop",
        "- agent billing-bot",
        "- policy agents-default",
    ]
    assert not Connection.objects.exists() and not Agent.objects.exists() and not Policy.objects.exists()
    assert {"connection.delete", "agent.delete", "policy.delete"} <= set(
        AuditRecord.objects.values_list("action", flat=True)
    )
    # Groups are never pruned: they hold people and roles the file may not describe.
    assert Group.objects.filter(name__in=["agents", "dba"]).count() == 2


def test_prune_leaves_alone_sections_the_file_does_not_have(alice):
    apply(ISSUE_EXAMPLE)
    result = apply("agents: []\n", prune=True)
    assert [str(c) for c in result.changes] == ["- agent billing-bot"]
    assert Connection.objects.filter(name="shop").exists()


def test_prune_refuses_to_delete_a_policy_a_remaining_connection_uses(alice):
    apply(ISSUE_EXAMPLE)
    before = dump_database()
    with pytest.raises(ConfigError) as caught:
        apply("policies: []\n", prune=True)
    assert [str(p) for p in caught.value.problems] == [
        "policies: --prune would delete policy 'agents-default', which connection 'shop' (not in the file) uses (line 1)"
    ]
    assert dump_database() == before


def test_group_members_are_set_exactly_when_given(alice, bob, carol):
    apply("groups:\n  - {name: dba, members: [alice, carol]}\n")
    assert sorted(Group.objects.get(name="dba").user_set.values_list("username", flat=True)) == [
        "alice",
        "carol",
    ]  # bob (from the fixture) removed
    record = AuditRecord.objects.get(action="group.members")
    assert record.before["members"] == ["bob"] and record.after["members"] == ["alice", "carol"]
    # Without members: membership is not managed.
    assert apply("groups:\n  - {name: dba}\n").changes == []


def test_export_then_apply_round_trips(alice, bob):
    apply(ISSUE_EXAMPLE)
    apply(
        textwrap.dedent(
            """
            connections:
              - name: box
                kind: ssh
                description: "build host\\nsecond line"
                host: 10.0.0.5
                username: deploy
                private_key: "${BOX_KEY}"
                options: {host_key: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}
                groups: [agents]
                enabled: false
              - {name: cluster, kind: kubernetes, host: "https://k8s.example:6443", token: "${K8S_TOKEN}",
                 ca_cert: "${K8S_CA}", options: {namespace: prod}, groups: [dba]}
            agents:
              - {name: ci-bot, description: CI, groups: [dba], owner: bob, enabled: false}
            """
        ),
        env={
            "BOX_KEY": "-----BEGIN KEY-----\nabc\n-----END KEY-----",
            "K8S_TOKEN": "tok-1",
            "K8S_CA": "ca-pem",
        },
    )
    first = export_yaml()

    assert "${SHOP_PASSWORD}" in first and "${BOX_PRIVATE_KEY}" in first and "${CLUSTER_TOKEN}" in first
    env = {
        "SHOP_PASSWORD": SHOP_PASSWORD,
        "BOX_PRIVATE_KEY": "-----BEGIN KEY-----\nabc\n-----END KEY-----",
        "CLUSTER_TOKEN": "tok-1",
        "CLUSTER_CA_CERT": "ca-pem",
    }
    # Applying the export to the same state changes nothing.
    assert apply(first, env=env).changes == []

    # Applying it to an empty registry rebuilds the same state.
    stored = {c.name: secrets.get_secrets(c) for c in Connection.objects.all()}
    Connection.objects.all().delete()
    Agent.objects.all().delete()
    Policy.objects.all().delete()
    apply(first, env=env)
    assert export_yaml() == first
    assert {c.name: secrets.get_secrets(c) for c in Connection.objects.all()} == stored


def test_export_never_contains_a_secret_value(alice):
    apply(ISSUE_EXAMPLE)
    agent = Agent.objects.get(name="billing-bot")
    raw_token = do_issue_token("apply", agent).raw
    out = io.StringIO()
    call_command("export", stdout=out)
    text = out.getvalue()
    assert SHOP_PASSWORD not in text
    assert raw_token not in text and raw_token[:12] not in text
    assert Connection.objects.get(name="shop").secret_ciphertext not in text
    assert "password: ${SHOP_PASSWORD}" in text
    assert "#   SHOP_PASSWORD" in text
    assert yaml.safe_load(text)["connections"][0]["password"] == "${SHOP_PASSWORD}"


def test_secrets_are_nowhere_in_the_database_or_the_audit_log_in_clear(alice):
    apply(ISSUE_EXAMPLE)
    apply(ISSUE_EXAMPLE, env={"SHOP_PG_PASSWORD": "second-Secret-4c4c"})
    text = database_text()
    assert SHOP_PASSWORD not in text
    assert "second-Secret-4c4c" not in text
    audit = json.dumps(list(AuditRecord.objects.values()), default=str)
    assert "second-Secret-4c4c" not in audit and SHOP_PASSWORD not in audit
    assert "password" in audit  # the field is named, so the search above looked at the right records


@pytest.mark.django_db(transaction=True)
def test_apply_reads_the_file_from_standard_input(alice):
    env = dict(os.environ, SHOP_PG_PASSWORD=SHOP_PASSWORD)
    settings = db_connection.settings_dict
    env["DATABASE_URL"] = (
        f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "apply", "-f", "-"],
        input=ISSUE_EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("5 created, 0 updated, 0 deleted.")
    assert Connection.objects.filter(name="shop").exists()

    bad = subprocess.run(
        [sys.executable, "manage.py", "apply", "-f", "-"],
        input="connections: [{name: x, kind: postgres, host: h, port: abc}]\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert (
        "<stdin>: 1 problem; nothing was changed\n  connections[0].port: must be an integer (line 1)"
        in bad.stderr
    )


@pytest.mark.parametrize(
    "variable", ["AIRLOCK_SECRET_KEYS", "AIRLOCK_SECRET_KEY", "DATABASE_URL", "REDIS_URL"]
)
def test_a_secret_cannot_be_taken_from_airlocks_own_settings(alice, variable):
    # Copied into a connection's password, a key could be sent to whatever host the file names.
    text = ISSUE_EXAMPLE.replace("SHOP_PG_PASSWORD", variable)
    with pytest.raises(ConfigError) as caught:
        apply(text, env={variable: "value"})
    assert [str(p) for p in caught.value.problems] == [
        f"connections[0].password: {variable} is one of Airlock's own settings, not a connection secret (line 5)"
    ]


def test_apply_restores_secrets_that_no_key_decrypts_any_more(alice, settings):
    from cryptography.fernet import Fernet

    settings.AIRLOCK_SECRET_KEYS = [Fernet.generate_key().decode()]
    apply(ISSUE_EXAMPLE)
    settings.AIRLOCK_SECRET_KEYS = [Fernet.generate_key().decode()]  # the old key is lost

    result = apply(ISSUE_EXAMPLE)

    assert [str(c) for c in result.changes] == [
        "~ connection shop: secrets replaced (the stored secret could not be decrypted)"
    ]
    assert secrets.get_secrets(Connection.objects.get(name="shop")) == {"password": SHOP_PASSWORD}
    assert apply(ISSUE_EXAMPLE).changes == []


# --- connections' recordings: retention and legal hold ----------------------------------

WITH_RECORDINGS = ISSUE_EXAMPLE.replace(
    "policy: agents-default}",
    "policy: agents-default,\n     recordings: {retention_days: 90, legal_hold: true, hold_reason: case 2026-14}}",
)


def test_apply_sets_a_connections_retention_and_legal_hold_through_their_audited_actions(alice):
    from recordings.models import ConnectionRule

    result = apply(WITH_RECORDINGS)
    assert (
        "~ recordings shop: retention_days: None -> 90; legal_hold: False -> True; hold_reason changed"
        in [str(c) for c in result.changes]
    )
    rule = ConnectionRule.objects.get(connection_name="shop")
    assert (rule.retention_days, rule.legal_hold, rule.hold_reason, rule.updated_by) == (
        90,
        True,
        "case 2026-14",
        "apply",
    )
    actions = AuditRecord.objects.filter(target_type="gateway.connection", action__startswith="recordings.")
    assert sorted(actions.values_list("action", flat=True)) == [
        "recordings.connection_hold",
        "recordings.connection_retention",
    ]
    assert apply(WITH_RECORDINGS).changes == []

    # A file that leaves legal_hold out leaves the hold alone; retention_days: null is the default.
    result = apply(
        WITH_RECORDINGS.replace("legal_hold: true, hold_reason: case 2026-14", "").replace("90,", "null")
    )
    assert [str(c) for c in result.changes] == ["~ recordings shop: retention_days: 90 -> None"]
    rule.refresh_from_db()
    assert (rule.retention_days, rule.legal_hold) == (None, True)
    # Releasing takes an explicit legal_hold: false.
    apply(WITH_RECORDINGS.replace("legal_hold: true, hold_reason: case 2026-14", "legal_hold: false"))
    rule.refresh_from_db()
    assert (rule.retention_days, rule.legal_hold, rule.hold_reason) == (90, False, "")


def test_bad_recordings_settings_are_reported_by_path(alice):
    bad = ISSUE_EXAMPLE.replace(
        "policy: agents-default}",
        "policy: agents-default,\n     recordings: {retention_days: -3, legal_hold: true, keep: yes}}",
    )
    with pytest.raises(ConfigError) as caught:
        apply(bad)
    paths = {p.path: p.message for p in caught.value.problems}
    assert "whole number of days" in paths["connections[0].recordings.retention_days"]
    assert "required with legal_hold: true" in paths["connections[0].recordings.hold_reason"]
    assert "unknown key" in paths["connections[0].recordings.keep"]
    with pytest.raises(ConfigError) as caught:
        apply(ISSUE_EXAMPLE.replace("policy: agents-default}", "policy: agents-default, recordings: 30}"))
    assert [p.path for p in caught.value.problems] == ["connections[0].recordings"]
    assert not Connection.objects.exists()


def test_export_round_trips_a_connections_recordings(alice):
    from recordings.models import ConnectionRule

    apply(WITH_RECORDINGS)
    first = export_yaml()
    shop = next(c for c in yaml.safe_load(first)["connections"] if c["name"] == "shop")
    assert shop["recordings"] == {"retention_days": 90, "legal_hold": True, "hold_reason": "case 2026-14"}
    env = {"SHOP_PASSWORD": SHOP_PASSWORD}
    assert apply(first, env=env).changes == []
    ConnectionRule.objects.all().delete()
    apply(first, env=env)
    assert export_yaml() == first
