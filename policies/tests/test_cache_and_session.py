"""The decision cache never serves a wrong decision, and session state follows the session."""

from __future__ import annotations

from policies.engine import compile_policy
from policies.packs import pack
from policies.sql import apply_session_effects, forget_prepared, remember_prepared
from policies.types import Action, Request

SPEC = {
    "default": "deny",
    "rules": [
        {"name": "ops-everything", "match": {"groups": ["ops"]}, "action": "allow"},
        {"name": "secret", "match": {"tables": ["secret.*"]}, "action": "deny"},
        {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
        {
            "name": "replica-writes",
            "match": {"connections": ["replica"], "operations": ["write"]},
            "action": "allow",
        },
        {
            "name": "bot-writes",
            "match": {"agents": ["writer-bot"], "operations": ["write"]},
            "action": "allow",
        },
    ],
}


def request(statement: str, **overrides) -> Request:
    fields = {
        "protocol": "postgres",
        "connection": "shop",
        "agent": "billing-bot",
        "groups": frozenset({"agents"}),
        "statement": statement,
    }
    fields.update(overrides)
    return Request(**fields)


def test_a_repeated_statement_is_served_from_the_cache():
    policy = compile_policy("p", 1, SPEC)
    first = policy.evaluate(request("SELECT * FROM t WHERE id = 1"))
    second = policy.evaluate(request("SELECT * FROM t WHERE id = 1"))
    assert second is first
    assert (policy.misses, policy.hits) == (1, 1)


def test_the_cache_key_holds_groups_connection_agent_protocol_and_kind():
    policy = compile_policy("p", 1, SPEC)
    statement = "UPDATE t SET a = 1 WHERE id = 1"
    assert policy.evaluate(request(statement)).action is Action.DENY
    assert policy.evaluate(request(statement, groups=frozenset({"ops"}))).rule == "ops-everything"
    assert policy.evaluate(request(statement, connection="replica")).rule == "replica-writes"
    assert policy.evaluate(request(statement, agent="writer-bot")).rule == "bot-writes"
    assert policy.evaluate(request(statement)).action is Action.DENY
    assert policy.evaluate(request("pg_read_file", kind="function_call")).rule is None
    assert policy.evaluate(request("pg_read_file")).action is Action.DENY  # not valid SQL
    assert policy.misses == 6


def test_execute_is_cached_per_prepared_body():
    policy = compile_policy("p", 1, SPEC)
    reads = {"prepared": {"p": ["PREPARE p AS SELECT 1"]}}
    writes = {"prepared": {"p": ["PREPARE p AS DELETE FROM t WHERE id = 1"]}}
    assert policy.evaluate(request("EXECUTE p", session=reads)).action is Action.ALLOW
    assert policy.evaluate(request("EXECUTE p", session=writes)).action is Action.DENY
    assert policy.evaluate(request("EXECUTE p", session=reads)).action is Action.ALLOW
    assert policy.evaluate(request("EXECUTE p")).action is Action.DENY
    # A statement without EXECUTE does not depend on what is prepared.
    policy.evaluate(request("SELECT 2", session=reads))
    hits = policy.hits
    policy.evaluate(request("SELECT 2", session=writes))
    assert policy.hits == hits + 1


def test_the_cache_key_holds_the_search_path():
    policy = compile_policy("p", 1, SPEC)
    assert policy.evaluate(request("SELECT * FROM tokens")).rule == "reads"
    widened = {"search_path": ("public", "secret")}
    assert policy.evaluate(request("SELECT * FROM tokens", session=widened)).rule == "secret"


def test_a_new_policy_version_decides_afresh():
    v1 = compile_policy("p", 1, SPEC)
    assert v1.evaluate(request("SELECT 1")).action is Action.ALLOW
    v2 = compile_policy("p", 2, {"default": "deny", "rules": []})
    decision = v2.evaluate(request("SELECT 1"))
    assert (decision.action, decision.policy_version) == (Action.DENY, 2)


def test_the_cache_is_bounded_and_evicted_entries_are_decided_again():
    policy = compile_policy("p", 1, SPEC, cache_size=3)
    # Ten shapes: a statement of a shape seen before would be decided by its shape.
    for n in range(10):
        policy.evaluate(request(f"SELECT {n} AS c{n}"))
    assert len(policy._cache) == 3
    # The oldest go first: the last three are still served from the cache.
    for n in (7, 8, 9):
        policy.evaluate(request(f"SELECT {n} AS c{n}"))
    assert (policy.hits, policy.misses) == (3, 10)
    assert policy.evaluate(request("SELECT 0 AS c0")).action is Action.ALLOW
    assert policy.misses == 11


def test_statements_decided_by_their_shape_leave_the_cache_to_repeated_texts():
    """A statement of a known shape with new constants (a new id every time) is decided by
    its shape and not kept by its text: it never pushes a repeated text out of the cache."""
    policy = compile_policy("p", 1, SPEC, cache_size=3)
    policy.evaluate(request("SELECT note FROM notes WHERE id = 1"))
    for n in range(2, 100):
        decision = policy.evaluate(request(f"SELECT note FROM notes WHERE id = {n}"))
        assert decision.classification["statements"][0]["text"] == f"SELECT note FROM notes WHERE id = {n}"
    assert (policy.shape_hits, len(policy._cache)) == (98, 1)
    hits = policy.hits
    assert policy.evaluate(request("SELECT note FROM notes WHERE id = 1")).action is Action.ALLOW
    assert policy.hits == hits + 1


def test_very_long_statements_are_decided_but_not_kept():
    policy = compile_policy("p", 1, SPEC)
    long_insert = "INSERT INTO t VALUES " + ", ".join(f"({n})" for n in range(5000))
    assert policy.evaluate(request(long_insert)).action is Action.DENY
    assert policy.evaluate(request(long_insert)).action is Action.DENY
    assert (policy.hits, len(policy._cache)) == (0, 0)


def test_groups_given_as_a_set_are_accepted():
    policy = compile_policy("p", 1, SPEC)
    assert policy.evaluate(request("DELETE FROM t WHERE id = 1", groups={"ops"})).rule == "ops-everything"


def test_parse_errors_are_cached_too():
    policy = compile_policy("p", 1, SPEC)
    assert policy.evaluate(request("SELEC 1")).action is Action.DENY
    assert policy.evaluate(request("SELEC 1")).action is Action.DENY
    assert policy.hits == 1


def test_remember_and_forget_prepared_statements():
    session: dict = {}
    remember_prepared(session, "", "SELECT 1")
    remember_prepared(session, "", "SELECT 2")
    remember_prepared(session, "s1", "SELECT 1")
    remember_prepared(session, "s1", "DELETE FROM t")
    remember_prepared(session, "s1", "DELETE FROM t")
    assert session["prepared"] == {"": ["SELECT 2"], "s1": ["SELECT 1", "DELETE FROM t"]}
    forget_prepared(session, "s1")
    assert session["prepared"] == {"": ["SELECT 2"]}
    forget_prepared(session)
    assert session["prepared"] == {}


def test_session_effects_round_trip_through_the_gateway():
    policy = compile_policy("ro", 1, pack("read-only-agent"))
    session: dict = {}
    prepare = policy.evaluate(request("PREPARE q(int) AS SELECT * FROM users WHERE id = $1", session=session))
    assert prepare.action is Action.ALLOW
    apply_session_effects(session, prepare.session_effects)
    assert policy.evaluate(request("EXECUTE q(1)", session=session)).action is Action.ALLOW
    deallocate = policy.evaluate(request("DISCARD ALL", session=session))
    apply_session_effects(session, deallocate.session_effects)
    assert session["prepared"] == {}
    assert policy.evaluate(request("EXECUTE q(1)", session=session)).action is Action.DENY


def test_search_path_changes_only_widen():
    session: dict = {}
    apply_session_effects(session, [("search_path", "app", "public")])
    apply_session_effects(session, [("search_path", "other")])
    assert session["search_path"] == ("public", "app", "other")


def test_a_failed_prepare_does_not_hide_the_statement_that_really_runs():
    """A PREPARE of a taken name fails on the server: EXECUTE still runs the first body."""
    policy = compile_policy(
        "p",
        1,
        {
            "default": "deny",
            "rules": [
                {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
                {
                    "name": "writes",
                    "match": {"operations": ["write"]},
                    "action": "review",
                    "reviewers": ["dba"],
                },
            ],
        },
    )
    session: dict = {}
    first = policy.evaluate(request("PREPARE p AS DELETE FROM t WHERE id = 1", session=session))
    assert first.action is Action.REVIEW  # approved, and the server prepares it
    apply_session_effects(session, first.session_effects)
    second = policy.evaluate(request("PREPARE p AS SELECT 1", session=session))
    assert second.action is Action.ALLOW  # the server refuses it: the name is taken
    apply_session_effects(session, second.session_effects)
    assert policy.evaluate(request("EXECUTE p", session=session)).action is Action.REVIEW
