"""The real policy engine behind the gateway, end to end with the real psql (and psycopg).

Every SQL family of SECURITY-CASES.md, with the variants the engine's own tests use
(policies/tests/test_security_cases.py): under the read-only-agent pack none of them
runs, and psql gets 42501; under a permissive policy for a writing agent the dangerous
ones are refused or held (review is refused until approvals exist), while ordinary
statements of every family are allowed. Decisions are recorded with their rule and the
policy version that made them.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pytest
from psycopg import errors

from gateway.models import Connection
from gateway.postgres import protocol as pg
from gateway.postgres.server import default_decision_point
from gateway.tests.postgres.conftest import wait_until
from gateway.tests.postgres.rawclient import RawSession, fields
from policies import actions
from policies.packs import pack
from policies.tests.test_security_cases import (
    ATTACKS,
    GUARDED_SPEC,
    ORDINARY_READS,
    ORDINARY_WRITES,
    _variants,
)

READ_ONLY_SPEC = {k: v for k, v in pack("read-only-agent").items() if k != "description"}
FAMILIES = sorted({case[0] for case in ATTACKS})
ERROR = re.compile(r"^(?:ERROR|FATAL):  ([0-9A-Z]{5}): ", re.M)


@pytest.fixture
def policy_gateway(gateway_factory, bob):
    """Start a gateway whose connection "shop" uses ``spec`` (bob staffs the dba group)."""

    def start(name, spec):
        policy = actions.do_save_policy(None, name, spec)
        # approval_mode "return": a held statement is refused at once, naming its approval
        # request, instead of waiting for a reviewer (docs/approvals.md).
        Connection.objects.filter(name="shop").update(
            policy=policy, options={"sslmode": "disable", "approval_mode": "return"}
        )
        env = gateway_factory(decision_point_factory=default_decision_point)
        env.policy = policy
        return env

    return start


def psql(env, *commands, dbname="shop", extra_env=None, timeout=120):
    """Run the real psql through the gateway, one ``-c`` (one Query message) per command."""
    args = ["psql", "-X", "-q", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=0"]
    args += ["-d", env.conninfo(dbname=dbname, password=env.token)]
    for command in commands:
        args += ["-c", command]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    run_env.update(extra_env or {})
    return subprocess.run(
        args, env=run_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def codes(result):
    return ERROR.findall(result.stderr)


def _commands(statements):
    """Each statement, then a ROLLBACK: a denial inside BEGIN ... must not spill over."""
    commands = []
    for statement in statements:
        commands += [statement, "ROLLBACK"]
    return commands


def _attacks(family, only_everywhere=False):
    return [
        variant
        for fam, statement, session, everywhere in ATTACKS
        if fam == family and session is None and (everywhere or not only_everywhere)
        for variant in _variants(statement)
    ]


def _decisions(env):
    return [payload for kind, payload in env.events() if kind == "decision"]


def _statements(env):
    return [payload for kind, payload in env.events() if kind == "statement"]


def _items_intact(env):
    with env.pg.admin("shop") as conn:
        return conn.execute("SELECT count(*) FROM items").fetchone() == (10,)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_read_only_pack_lets_no_attack_of_the_family_run_through_psql(policy_gateway, family):
    env = policy_gateway("read-only-agent", READ_ONLY_SPEC)
    attacks = _attacks(family)
    assert len(attacks) >= 20

    result = psql(env, *_commands(attacks))

    # Each attack is one Query; the first refused statement of it ends it with 42501.
    assert codes(result) == ["42501"] * len(attacks), result.stderr
    decisions = _decisions(env)
    assert len(decisions) == len(attacks)
    assert {(d["action"], d["policy"], d["policy_version"]) for d in decisions} == {
        ("deny", "read-only-agent", 1)
    }
    assert _items_intact(env)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_permissive_policy_stops_the_dangerous_attacks_of_the_family_through_psql(policy_gateway, family):
    env = policy_gateway("guarded", GUARDED_SPEC)
    attacks = _attacks(family, only_everywhere=True)

    result = psql(env, *_commands(attacks))

    assert codes(result) == ["42501"] * len(attacks), result.stderr
    decisions = _decisions(env)
    assert {d["action"] for d in decisions} <= {"deny", "review"}
    # Held statements are refused at once naming their approval request (approval_mode
    # return); nobody approves them here, so none runs.
    held = [d for d in decisions if d["message"].startswith("waiting for approval")]
    assert result.stderr.count("ERROR:  42501: waiting for approval") == len(held)
    assert {d["rule"] for d in held} <= {"code", "destructive", "whole-table"}
    assert {(d["policy"], d["policy_version"]) for d in decisions} == {("guarded", 1)}
    assert all(d["rule"] for d in decisions if d["action"] == "review")
    assert _items_intact(env)


@pytest.mark.parametrize("spec_name", ["read-only-agent", "guarded"])
def test_ordinary_reads_are_allowed_through_psql(policy_gateway, spec_name):
    env = policy_gateway(spec_name, READ_ONLY_SPEC if spec_name == "read-only-agent" else GUARDED_SPEC)
    reads = [variant for statement in ORDINARY_READS for variant in _variants(statement)]

    result = psql(env, "SELECT count(*) FROM items", *_commands(reads))

    assert "42501" not in codes(result), (
        result.stderr
    )  # other errors: tables these examples name do not exist
    assert re.match(r"\s*count\s*-+\s*10\b", result.stdout), result.stdout
    statements = _statements(env)
    assert len(statements) > len(reads)
    assert {s["action"] for s in statements} == {"allow"}
    assert {s["policy_version"] for s in statements if s["protocol"] == "simple"} == {1}


def test_ordinary_writes_are_allowed_by_the_permissive_policy_through_psql(policy_gateway):
    env = policy_gateway("guarded", GUARDED_SPEC)
    writes = [variant for statement in ORDINARY_WRITES for variant in _variants(statement)]
    # Inside a transaction that is rolled back: the shared test database stays as it is.
    commands = []
    for statement in writes:
        commands += ["BEGIN", statement, "ROLLBACK"]

    result = psql(
        env,
        "BEGIN",
        "UPDATE items SET price = price + 1 WHERE id = 1",
        "SELECT price FROM items WHERE id = 1",
        "ROLLBACK",
        *commands,
    )

    assert "42501" not in codes(result), result.stderr
    assert "2.5" in result.stdout  # the UPDATE ran (1.5 + 1), then was rolled back
    assert {s["action"] for s in _statements(env)} == {"allow"}
    assert _items_intact(env)


def test_a_denial_reaches_psql_with_the_rules_message_and_the_policy_version(policy_gateway):
    env = policy_gateway("read-only-agent", READ_ONLY_SPEC)

    result = psql(env, "SELECT pg_read_file('/etc/passwd')", "SELECT 1 AS still_here")

    assert "ERROR:  42501: reading or writing files on the database server is not allowed" in result.stderr
    assert 'DETAIL:  rule "no-server-file-functions" of policy read-only-agent version 1' in result.stderr
    assert "still_here" in result.stdout
    (decision,) = _decisions(env)
    assert decision == {
        "action": "deny",
        "rule": "no-server-file-functions",
        "policy": "read-only-agent",
        "policy_version": 1,
        "message": "reading or writing files on the database server is not allowed",
        "statement": "SELECT pg_read_file('/etc/passwd')",
    }


def test_prepared_statements_are_judged_as_what_they_run(policy_gateway):
    """SQL-05: SQL PREPARE/EXECUTE and protocol-level named statements."""
    env = policy_gateway("read-only-agent", READ_ONLY_SPEC)

    result = psql(
        env,
        "PREPARE ok AS SELECT count(*) FROM items",
        "EXECUTE ok",
        "PREPARE d AS DELETE FROM items",
        "EXECUTE d",
    )
    assert codes(result) == ["42501", "42501"], result.stderr
    assert re.search(r"count\s*-+\s*10\b", result.stdout)

    with env.connect(autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM items WHERE id = %s", (-1,), prepare=True)
        names = [row[0] for row in conn.execute("SELECT name FROM pg_prepared_statements")]
        for name in names:  # a protocol-level statement the server holds, run through SQL
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f'EXECUTE "{name}"(-1)')
    assert _items_intact(env)


def test_startup_packet_options_are_refused(policy_gateway):
    """SQL-10: ``options=-c ...`` would set anything before the first statement."""
    env = policy_gateway("guarded", GUARDED_SPEC)

    result = psql(env, "SELECT 1", extra_env={"PGOPTIONS": "-c default_transaction_read_only=off"})

    assert result.returncode != 0
    assert 'the startup parameter "options" is not allowed through Airlock' in result.stderr


def test_startup_settings_are_judged_by_the_policy_like_set(policy_gateway):
    """SQL-10: a startup parameter is judged as the SET it amounts to, and recorded."""
    spec = {
        "default": "allow",
        "rules": [
            {
                "name": "fixed-timezone",
                "match": {"settings": ["timezone"]},
                "action": "deny",
                "message": "UTC only",
            }
        ],
    }
    env = policy_gateway("no-timezone", spec)

    refused = psql(env, "SELECT 1", extra_env={"PGTZ": "Europe/Paris"})
    allowed = psql(env, "SHOW TimeZone")

    assert refused.returncode != 0
    assert 'a startup setting is not allowed: UTC only (rule "fixed-timezone")' in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    statement, decision = (
        [p for k, p in env.events(0) if k == "statement"][-1],
        _decisions_of(env, 0)[0],
    )
    assert (statement["text"], statement["protocol"], statement["action"]) == (
        "SET \"timezone\" = 'Europe/Paris'",
        "startup",
        "deny",
    )
    assert (decision["rule"], decision["policy_version"]) == ("fixed-timezone", 1)


def _decisions_of(env, index):
    return [payload for kind, payload in env.events(index) if kind == "decision"]


def test_the_read_only_pack_admits_psqls_own_startup_settings(policy_gateway):
    env = policy_gateway("read-only-agent", READ_ONLY_SPEC)

    result = psql(env, "SHOW application_name", extra_env={"PGAPPNAME": "report", "PGCLIENTENCODING": "UTF8"})

    assert result.returncode == 0, result.stderr
    assert "report" in result.stdout
    startup = [s for s in _statements(env) if s["protocol"] == "startup"]
    assert {s["text"] for s in startup} >= {
        "SET \"application_name\" = 'report'",
        "SET \"client_encoding\" = 'UTF8'",
    }
    assert {(s["action"], s["rule"]) for s in startup} == {("allow", "harmless-settings")}


def test_the_function_call_message_from_psql_is_refused(policy_gateway):
    """SQL-10: psql's \\lo_import writes a large object through FunctionCall messages."""
    env = policy_gateway("guarded", GUARDED_SPEC)
    with env.pg.admin("shop") as conn:
        before = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()

    result = psql(env, "\\lo_import /etc/hostname")

    assert "FunctionCall protocol message is not allowed" in result.stderr, result.stderr
    with env.pg.admin("shop") as conn:
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone() == before


def test_each_session_records_the_policy_version_it_was_decided_by(policy_gateway):
    env = policy_gateway("read-only-agent", READ_ONLY_SPEC)
    first = env.connect(autocommit=True)
    try:
        with pytest.raises(errors.InsufficientPrivilege):
            first.execute("DELETE FROM items WHERE id = -1")
        edited = dict(READ_ONLY_SPEC, rules=[*READ_ONLY_SPEC["rules"], {"name": "spare", "action": "deny"}])
        assert actions.do_save_policy(None, "read-only-agent", edited).version == 2
        # A new session logs in with the new version at once.
        with env.connect(autocommit=True) as second:
            with pytest.raises(errors.InsufficientPrivilege):
                second.execute("DELETE FROM items WHERE id = -2")

        # An open session follows it within the policy watcher's interval
        # (test_policy_refresh.py has the details); the error's detail names the version.
        def first_on_version_2() -> bool:
            with pytest.raises(errors.InsufficientPrivilege) as denied:
                first.execute("DELETE FROM items WHERE id = -1")
            return (denied.value.diag.message_detail or "").endswith("version 2")

        wait_until(first_on_version_2, timeout=30, what="the open session to follow version 2")
    finally:
        first.close()

    seen = []
    for index in (0, 1):
        seen.append([(p["policy"], p["policy_version"]) for k, p in env.events(index) if k == "decision"])
    assert seen[0][0] == ("read-only-agent", 1)
    assert seen[0][-1] == ("read-only-agent", 2)
    assert seen[0] == sorted(seen[0])
    assert seen[1] == [("read-only-agent", 2)]


def test_a_policy_whose_reviewers_cannot_be_found_refuses_the_login(policy_gateway, bob):
    bob.is_active = False  # the only member of dba
    bob.save()
    env = policy_gateway("guarded", GUARDED_SPEC)

    result = psql(env, "SELECT 1")

    assert result.returncode != 0
    assert 'the policy of connection "shop" cannot be loaded' in result.stderr


def test_a_connection_without_a_policy_denies_every_statement(gateway_factory):
    env = gateway_factory(decision_point_factory=default_decision_point)

    result = psql(env, "SELECT 1")

    # Even psql's own startup settings (application_name...) are refused.
    assert result.returncode != 0
    assert 'connection "shop" has no policy: every statement is denied' in result.stderr
    raw = RawSession(env.port)
    try:
        assert raw.login("billing-bot", env.token)[-1][0] == "Z"  # no startup settings at all
        raw.send(pg.query("SELECT 1"))
        errors_ = [fields(body) for typ, body in raw.until("Z") if typ == "E"]
    finally:
        raw.close()
    assert [(e["C"], e["M"]) for e in errors_] == [
        ("42501", 'connection "shop" has no policy: every statement is denied')
    ]


def test_unqualified_names_resolve_on_the_servers_search_path(policy_gateway, make_connection, private_pg):
    """A database whose search_path puts another schema first: ``keys`` is vault.keys."""
    database = f"vault_{uuid.uuid4().hex[:8]}"
    with private_pg.admin() as conn:
        conn.execute(f"CREATE DATABASE {database} OWNER scram_user")
        conn.execute(f"ALTER DATABASE {database} SET search_path = vault, public")
    with private_pg.admin(database) as conn:
        conn.execute("SET ROLE scram_user")
        conn.execute("CREATE SCHEMA vault")
        conn.execute("CREATE TABLE vault.keys (secret text)")
        conn.execute("INSERT INTO vault.keys VALUES ('s3cr3t')")
        conn.execute("CREATE TABLE public.keys (secret text)")
    spec = {
        "default": "deny",
        "rules": [
            {
                "name": "public-reads",
                "match": {"operations": ["read"], "tables": ["public.*"]},
                "action": "allow",
            },
            {
                "name": "psql-settings",
                "match": {"operations": ["session"], "settings": ["application_name", "client_encoding"]},
                "action": "allow",
            },
        ],
    }
    env = policy_gateway("public-only", spec)
    make_connection("vault", database=database)
    Connection.objects.filter(name="vault").update(policy=env.policy)

    result = psql(env, "SELECT * FROM public.keys", "SELECT * FROM keys", dbname="vault")

    assert codes(result) == ["42501"], result.stderr
    assert "s3cr3t" not in result.stdout
    denied = _decisions(env)
    assert [d["statement"] for d in denied] == ["SELECT * FROM keys"]


def test_a_search_path_given_at_startup_is_followed(policy_gateway):
    spec = {
        "default": "deny",
        "rules": [
            {
                "name": "public-reads",
                "match": {"operations": ["read"], "tables": ["public.*"]},
                "action": "allow",
            },
            {
                "name": "harmless",
                "match": {"operations": ["session"], "settings": ["search_path", "application_name"]},
                "action": "allow",
            },
        ],
    }
    env = policy_gateway("public-only", spec)
    raw = RawSession(env.port)
    try:
        assert raw.login("billing-bot", env.token, search_path="pg_temp, public")[-1][0] == "Z"
        raw.send(pg.query("SELECT count(*) FROM items"))
        messages = raw.until("Z")
    finally:
        raw.close()
    # pg_temp first: "items" may be a temporary table, which public.* does not cover.
    errors_ = [fields(body) for typ, body in messages if typ == "E"]
    assert errors_ and errors_[0]["C"] == "42501"


def test_the_demo_policy_lets_psql_connect_and_judges_the_tours_statements(policy_gateway, bob):
    """The README's tour, step 4, under the policy ``manage.py demo`` creates: psql's
    startup settings (application_name, and what PG* variables add) are allowed, a read
    runs, DDL is denied and a write is held (here refused at once, naming its request)."""
    from console.management.commands.demo import demo_policy_spec

    env = policy_gateway("demo", demo_policy_spec())
    settings_env = {
        "PGAPPNAME": "tour",
        "PGCLIENTENCODING": "UTF8",
        "PGTZ": "UTC",
        "PGDATESTYLE": "ISO, MDY",
    }
    result = psql(
        env,
        "SELECT current_setting('application_name'), 40 + 2",
        "DROP TABLE t",
        "INSERT INTO t VALUES (1)",
        extra_env=settings_env,
    )

    assert re.search(r"tour\s*\|\s*42", result.stdout), result.stderr
    assert codes(result) == ["42501", "42501"]
    assert "no rule matched: the default of policy 'demo' is deny" in result.stderr
    assert re.search(r"waiting for approval \d+: ", result.stderr) and 'rule "writes"' in result.stderr
    # A setting outside the harmless list is still refused.
    refused = psql(env, "SET geqo = off")
    assert codes(refused) == ["42501"]
