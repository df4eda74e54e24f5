"""New policy versions reach sessions that are already open, end to end through the gateway.

An open psycopg session is allowed a statement; an administrator saves a version that
denies it (or rolls back, binds another policy, applies a file, takes the reviewers away);
the same session's next try is decided by the new version within the watcher's interval
(``AIRLOCK_POLICY_REFRESH_MS``, 1 s; the tests wait up to 30 s on a loaded machine), and
its statement events record the version that decided. A version that does not compile
denies everything in open sessions, with a message saying so.
"""

from __future__ import annotations

import io
import time

import pytest
from psycopg import errors

from gateway.actions import do_update_connection
from gateway.models import Connection
from gateway.postgres.server import default_decision_point
from gateway.tests.postgres.conftest import wait_until
from policies import actions
from policies.models import Policy
from policies.stored import reviewer_groups

WAIT = 30.0  # generous: the bound is one interval (1 s) plus a compile, on a loaded machine
READ = "SELECT count(*) FROM items"

ALLOW_READS = {
    "default": "deny",
    "rules": [
        {"name": "reads", "match": {"operations": ["read", "transaction", "session"]}, "action": "allow"},
    ],
}
DENY_ITEMS = {
    "default": "deny",
    "rules": [
        {
            "name": "no-items",
            "match": {"tables": ["public.items"]},
            "action": "deny",
            "message": "items are closed for inventory",
        },
        *ALLOW_READS["rules"],
    ],
}
# Writes to items need a dba's approval (bob is the only member of dba).
REVIEWED = {
    "default": "deny",
    "rules": [
        {
            "name": "items-writes",
            "match": {"operations": ["write"], "tables": ["public.items"]},
            "action": "review",
            "reviewers": ["dba"],
        },
        *ALLOW_READS["rules"],
    ],
}


@pytest.fixture
def refresh_gateway(gateway_factory):
    def start(spec, name="agents"):
        policy = actions.do_save_policy(None, name, spec)
        Connection.objects.filter(name="shop").update(policy=policy)
        return gateway_factory(decision_point_factory=default_decision_point)

    return start


def _outcome(conn, statement=READ):
    """ "allowed" or the message of the 42501 error the gateway answered with."""
    try:
        conn.execute(statement).fetchall()
    except errors.InsufficientPrivilege as exc:
        return exc.diag.message_primary or str(exc)
    return "allowed"


def _wait_outcome(conn, want, statement=READ):
    """Retry ``statement`` on the open session until the outcome satisfies ``want``; its time."""
    started = time.monotonic()
    seen: list[str] = []

    def check():
        seen.append(_outcome(conn, statement))
        return want(seen[-1])

    wait_until(check, timeout=WAIT, what=f"a new decision on {statement!r} (last: {seen[-1:]})")
    return seen[-1], time.monotonic() - started


def _statement_versions(env, text=READ):
    return [
        (p["action"], p["policy_version"])
        for kind, p in env.events(0)
        if kind == "statement" and p["text"] == text
    ]


def test_a_stricter_version_reaches_an_open_session_and_so_does_the_reverse(refresh_gateway):
    env = refresh_gateway(ALLOW_READS)
    conn = env.connect(autocommit=True)
    try:
        assert _outcome(conn) == "allowed"

        assert actions.do_save_policy(None, "agents", DENY_ITEMS).version == 2
        message, took = _wait_outcome(conn, lambda outcome: outcome != "allowed")
        assert message == "items are closed for inventory"
        assert took < WAIT

        assert actions.do_save_policy(None, "agents", ALLOW_READS).version == 3
        outcome, _ = _wait_outcome(conn, lambda outcome: outcome == "allowed")
        assert outcome == "allowed"
        # Another statement of the same session, still open the whole time.
        assert conn.execute("SELECT name FROM items WHERE id = 2").fetchone() == ("item 2",)
    finally:
        conn.close()

    versions = _statement_versions(env)
    # Every decision is recorded with the version that made it, in the order they came.
    assert versions[0] == ("allow", 1)
    assert ("deny", 2) in versions
    assert versions[-1] == ("allow", 3)
    assert versions == sorted(versions, key=lambda v: v[1])
    assert {action for action, version in versions if version == 2} == {"deny"}
    assert {action for action, version in versions if version != 2} == {"allow"}
    decisions = [p for kind, p in env.events(0) if kind == "decision"]
    assert {(d["rule"], d["policy_version"]) for d in decisions} == {("no-items", 2)}


def test_a_new_version_reaches_a_shape_the_open_session_was_allowed_for(refresh_gateway):
    """Statements of a shape the session was allowed for are allowed without asking the
    policy (``gateway.decision``): a new version still decides the next one of that shape,
    and every statement is recorded with its own text and the version that decided it."""
    env = refresh_gateway(ALLOW_READS)
    conn = env.connect(autocommit=True)
    lookup = "SELECT name FROM items WHERE id = {}"
    try:
        for n in (1, 2, 3):
            assert conn.execute(lookup.format(n)).fetchone() == (f"item {n}",)
        assert actions.do_save_policy(None, "agents", DENY_ITEMS).version == 2
        message, _ = _wait_outcome(conn, lambda outcome: outcome != "allowed", statement=lookup.format(4))
        assert message == "items are closed for inventory"
        assert _outcome(conn, lookup.format(5)) == "items are closed for inventory"
    finally:
        conn.close()
    recorded = [
        (p["text"], p["action"], p["policy_version"]) for kind, p in env.events(0) if kind == "statement"
    ]
    assert recorded[:3] == [(lookup.format(n), "allow", 1) for n in (1, 2, 3)]
    assert recorded[-2:] == [(lookup.format(4), "deny", 2), (lookup.format(5), "deny", 2)]
    assert {version for _, action, version in recorded if action == "allow"} == {1}


def test_a_rollback_reaches_an_open_session(refresh_gateway):
    env = refresh_gateway(DENY_ITEMS)
    actions.do_save_policy(None, "agents", ALLOW_READS)  # version 2, before the session opens
    conn = env.connect(autocommit=True)
    try:
        assert _outcome(conn) == "allowed"

        policy = Policy.objects.get(name="agents")
        assert actions.do_rollback_policy(None, policy, 1).version == 3
        message, _ = _wait_outcome(conn, lambda outcome: outcome != "allowed")
        assert message == "items are closed for inventory"
    finally:
        conn.close()
    assert _statement_versions(env)[-1] == ("deny", 3)


def test_binding_another_policy_to_the_connection_reaches_an_open_session(refresh_gateway):
    env = refresh_gateway(ALLOW_READS)
    strict = actions.do_save_policy(None, "strict", DENY_ITEMS)
    conn = env.connect(autocommit=True)
    try:
        assert _outcome(conn) == "allowed"

        do_update_connection(None, Connection.objects.get(name="shop"), policy=strict)
        message, _ = _wait_outcome(conn, lambda outcome: outcome != "allowed")
        assert message == "items are closed for inventory"

        # Unbinding every policy: the open session denies everything (fail closed).
        do_update_connection(None, Connection.objects.get(name="shop"), policy=None)
        message, _ = _wait_outcome(conn, lambda outcome: "has no policy" in outcome, "SELECT 1")
        assert message == 'connection "shop" has no policy: every statement is denied'
    finally:
        conn.close()
    decisions = [p for kind, p in env.events(0) if kind == "decision"]
    assert ("strict", 1) in {(d["policy"], d["policy_version"]) for d in decisions}


def test_manage_py_apply_reaches_an_open_session(refresh_gateway, tmp_path):
    from django.core.management import call_command

    env = refresh_gateway(ALLOW_READS)
    conn = env.connect(autocommit=True)
    try:
        assert _outcome(conn) == "allowed"
        (tmp_path / "policies.yaml").write_text(
            "policies:\n"
            "  - name: agents\n"
            "    default: deny\n"
            "    rules:\n"
            "      - {name: no-items, match: {tables: [public.items]}, action: deny, message: applied}\n"
            "      - {name: reads, match: {operations: [read, transaction, session]}, action: allow}\n"
        )
        call_command("apply", "-f", str(tmp_path / "policies.yaml"), stdout=io.StringIO())
        assert Policy.objects.get(name="agents").version == 2
        message, _ = _wait_outcome(conn, lambda outcome: outcome != "allowed")
        assert message == "applied"
    finally:
        conn.close()


def test_reviewers_gone_makes_open_sessions_fail_closed_with_a_clear_message(refresh_gateway, bob):
    env = refresh_gateway(REVIEWED)
    assert "dba" in reviewer_groups()
    conn = env.connect(autocommit=True)
    try:
        assert _outcome(conn) == "allowed"

        bob.is_active = False  # the only member of dba: no review could ever be answered
        bob.save()
        message, _ = _wait_outcome(conn, lambda outcome: outcome != "allowed")
        assert message.startswith('policy "agents" version 1 of connection "shop" cannot be used (')
        assert "reviewer group 'dba' does not exist or has no members" in message
        assert message.endswith("every statement is denied until an administrator fixes it")
        # Every statement, not only the ones the review rule names.
        assert _outcome(conn, "SELECT 1") == message

        bob.is_active = True
        bob.save()
        outcome, _ = _wait_outcome(conn, lambda outcome: outcome == "allowed")
        assert outcome == "allowed"
    finally:
        conn.close()


def test_a_saved_version_that_does_not_compile_denies_in_open_sessions(refresh_gateway, bob):
    env = refresh_gateway(ALLOW_READS)
    conn = env.connect(autocommit=True)
    try:
        assert _outcome(conn) == "allowed"
        # Saved without the reviewer check (the console and apply refuse it; an older
        # client or a direct write may not): nobody is in "night-shift".
        broken = dict(
            REVIEWED, rules=[dict(REVIEWED["rules"][0], reviewers=["night-shift"]), *ALLOW_READS["rules"]]
        )
        assert actions.do_save_policy(None, "agents", broken).version == 2
        message, _ = _wait_outcome(conn, lambda outcome: outcome != "allowed")
        assert "version 2" in message and "'night-shift' does not exist or has no members" in message
    finally:
        conn.close()
    assert _statement_versions(env)[-1] == ("deny", 2)


def _slot(name="shop"):
    from gateway.policy_watch import REGISTRY

    # By id: slots of an earlier test's "shop" may linger until their sessions are collected.
    pk = Connection.objects.get(name=name).pk
    (slot,) = [slot for slot in REGISTRY.slots() if slot.connection_id == pk]
    return slot


def test_prepared_statements_and_other_sessions_hit_the_connections_decision_cache(refresh_gateway):
    env = refresh_gateway(ALLOW_READS)
    statement = "SELECT name FROM items WHERE id = %s"
    with env.connect(autocommit=True) as first:
        # psycopg's prepare=True: a named Parse once, then Bind/Execute of that statement.
        assert first.execute(statement, (1,), prepare=True).fetchone() == ("item 1",)
        policy = _slot().policy
        hits, misses = policy.hits, policy.misses
        for n in range(2, 12):
            assert first.execute(statement, (n % 10 + 1,), prepare=True).fetchone() is not None
        assert (policy.hits - hits, policy.misses - misses) == (10, 0)
        # Another session on the connection shares the compiled policy and its cache.
        with env.connect(autocommit=True) as second:
            assert _slot().policy is policy
            hits, misses = policy.hits, policy.misses
            for n in range(1, 6):
                assert second.execute(statement, (n,), prepare=True).fetchone() is not None
            assert (policy.hits - hits, policy.misses - misses) == (5, 0)


def test_observe_rules_are_recorded_on_the_statement_and_enforce_nothing(refresh_gateway):
    spec = {
        "default": "deny",
        "rules": [
            {"name": "watch-items", "match": {"tables": ["public.items"]}, "action": "observe"},
            *ALLOW_READS["rules"],
        ],
    }
    env = refresh_gateway(spec)
    with env.connect(autocommit=True) as conn:
        assert _outcome(conn) == "allowed"
        assert _outcome(conn, "SELECT 1") == "allowed"
    statements = {p["text"]: p for kind, p in env.events(0) if kind == "statement"}
    assert statements[READ]["action"] == "allow"
    assert statements[READ]["rule"] == "reads"
    assert statements[READ]["observed"] == ["watch-items"]
    assert "observed" not in statements["SELECT 1"]


def test_the_watcher_recompiles_only_what_changed(make_connection, bob):
    """A refresh with nothing changed keeps the compiled policy (and its warm cache)."""
    from gateway.policy_watch import PolicyRegistry

    registry = PolicyRegistry()
    policy = actions.do_save_policy(None, "agents", REVIEWED)
    connection = make_connection("warehouse")
    Connection.objects.filter(pk=connection.pk).update(policy=policy)
    slot = registry.slot_for(Connection.objects.select_related("policy").get(pk=connection.pk))
    compiled = slot.policy
    assert compiled.version == 1

    assert registry.refresh() == 0
    assert registry.refresh() == 0
    assert slot.policy is compiled
    # A login on the same connection reuses it too.
    again = registry.slot_for(Connection.objects.select_related("policy").get(pk=connection.pk))
    assert again is slot and slot.policy is compiled

    actions.do_save_policy(None, "agents", ALLOW_READS)
    assert registry.refresh() == 1
    assert slot.policy is not compiled and slot.policy.version == 2
    assert registry.refresh() == 0
