"""Rule semantics of the compiled policy: ordering, match keys, actions, combining."""

from __future__ import annotations

import pytest

from policies.engine import PolicyError, compile_policy, register_classifier
from policies.types import Action, Request


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


def policy(*rules, **spec):
    return compile_policy("p", 7, {"rules": list(rules), **spec})


def rule(name, action="allow", **match):
    extra = {}
    if action == "review":
        extra = {"reviewers": ["dba"]}
    return {"name": name, "match": match, "action": action, **extra}


def test_the_first_matching_rule_wins():
    p = policy(rule("deny-writes", "deny", operations=["write"]), rule("all", "allow"))
    decision = p.evaluate(request("DELETE FROM t WHERE id = 1"))
    assert (decision.action, decision.rule) == (Action.DENY, "deny-writes")
    assert p.evaluate(request("SELECT 1")).rule == "all"


def test_the_default_applies_when_no_rule_matches():
    decision = policy(rule("reads", operations=["read"])).evaluate(request("INSERT INTO t VALUES (1)"))
    assert decision.action is Action.DENY and decision.rule is None
    assert "default" in decision.message
    decision = policy(rule("x", "deny", operations=["ddl"]), default="allow").evaluate(request("SELECT 1"))
    assert decision.action is Action.ALLOW


def test_the_decision_names_the_policy_version_and_classification():
    decision = policy(rule("reads", operations=["read"])).evaluate(request("SELECT * FROM t"))
    assert (decision.policy, decision.policy_version) == ("p", 7)
    assert decision.classification["tables_read"] == ["public.t"]
    assert decision.classification["statements"][0]["rule"] == "reads"


def test_a_rule_message_reaches_the_decision():
    p = policy({"name": "no", "match": {}, "action": "deny", "message": "ask the DBA"})
    assert p.evaluate(request("SELECT 1")).message == "ask the DBA"


def test_all_given_match_keys_must_match():
    p = policy(rule("agent-reads", operations=["read"], groups=["agents"], connections=["shop"]))
    assert p.evaluate(request("SELECT 1")).action is Action.ALLOW
    assert p.evaluate(request("SELECT 1", groups=frozenset({"other"}))).action is Action.DENY
    assert p.evaluate(request("SELECT 1", connection="billing")).action is Action.DENY
    assert p.evaluate(request("DELETE FROM t WHERE id = 1")).action is Action.DENY


def test_an_allow_rule_covers_only_statements_that_do_nothing_else():
    p = policy(rule("reads", operations=["read"]))
    # A write inside a CTE: the statement reads and writes, the rule allows reads only.
    assert p.evaluate(request("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")).action is Action.DENY
    assert p.evaluate(request("SELECT pg_terminate_backend(1)")).action is Action.DENY
    assert p.evaluate(request("SELECT my_function()")).action is Action.DENY


def test_a_deny_rule_catches_a_statement_that_does_any_listed_thing():
    p = policy(rule("no-writes", "deny", operations=["write"]), default="allow")
    assert p.evaluate(request("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")).action is Action.DENY
    assert p.evaluate(request("SELECT * FROM t")).action is Action.ALLOW


def test_table_globs_match_schema_qualified_names():
    p = policy(
        rule("secret", "deny", tables=["secret.*"]),
        rule("app-reads", operations=["read"], tables=["public.*", "reporting.daily_*"]),
    )
    assert (
        p.evaluate(request("SELECT * FROM orders JOIN reporting.daily_sales ON true")).action is Action.ALLOW
    )
    assert p.evaluate(request("SELECT * FROM orders JOIN reporting.monthly ON true")).action is Action.DENY
    assert p.evaluate(request("SELECT * FROM secret.keys")).rule == "secret"
    assert p.evaluate(request('SELECT * FROM "SECRET"."keys"')).rule == "secret"  # deny ignores case
    assert p.evaluate(request("SELECT 1")).action is Action.DENY  # touches no table: not covered


def test_a_table_pattern_without_a_schema_matches_any_schema():
    p = policy(rule("no-users", "deny", tables=["users"]), default="allow")
    assert p.evaluate(request("SELECT * FROM crm.users")).action is Action.DENY
    assert p.evaluate(request("SELECT * FROM users")).action is Action.DENY
    assert p.evaluate(request("SELECT * FROM users2")).action is Action.ALLOW


def test_a_table_under_an_unknown_search_path_is_denied_by_name_and_never_allowed():
    session = {"search_path": ("public", "*")}
    deny = policy(rule("secret", "deny", tables=["secret.tokens"]), default="allow")
    assert deny.evaluate(request("SELECT * FROM tokens", session=session)).action is Action.DENY
    allow = policy(rule("public", tables=["public.*"]))
    assert allow.evaluate(request("SELECT * FROM tokens", session=session)).action is Action.DENY
    assert allow.evaluate(request("SELECT * FROM tokens")).action is Action.ALLOW


def test_functions_match_names_globs_and_sets():
    p = policy(
        rule("files", "deny", functions=["@server_files"]),
        rule("dblink", "deny", functions=["dblink*"]),
        rule("mine", "allow", functions=["lower", "count"]),
        default="allow",
    )
    assert p.evaluate(request("SELECT pg_ls_dir('.')")).rule == "files"
    assert p.evaluate(request("SELECT * FROM dblink('x', 'y') AS t(a int)")).rule == "dblink"
    # Another schema's function named like a built-in is caught by a deny rule.
    assert p.evaluate(request("SELECT public.pg_read_file('x')")).rule == "files"
    assert p.evaluate(request("SELECT \"PG_READ_FILE\"('x')")).rule == "files"
    assert p.evaluate(request("SELECT lower(a), count(*) FROM t")).rule == "mine"
    assert p.evaluate(request("SELECT lower(a), upper(a) FROM t")).rule is None


def test_settings_match_and_a_run_time_name_is_never_covered():
    p = policy(
        rule("no-role", "deny", settings=["role", "session_*"]),
        rule("timeouts", operations=["session", "read"], settings=["*_timeout"]),
    )
    assert p.evaluate(request("SET ROLE x")).rule == "no-role"
    assert p.evaluate(request("SET statement_timeout = 1")).rule == "timeouts"
    assert p.evaluate(request("SELECT set_config('lock_timeout', '1', false)")).rule == "timeouts"
    decision = p.evaluate(request("SELECT set_config(name, '1', false) FROM t"))
    assert decision.rule == "no-role"


def test_regex_sees_the_normalized_statement():
    p = policy(rule("no-ssn", "deny", regex=r"^SELECT ssn FROM customers"), default="allow")
    for spelling in ('select /* x */ "ssn"   from customers', "SELECT\n  ssn\nFROM customers -- y"):
        assert p.evaluate(request(spelling)).action is Action.DENY, spelling
    assert p.evaluate(request("SELECT name FROM customers")).action is Action.ALLOW
    # Regular expressions are case-insensitive; each statement of a string is seen alone.
    p = policy(rule("no-ssn", "deny", regex=r"^select ssn\b"), default="allow")
    assert p.evaluate(request("SELECT 1; Select SSN from customers")).action is Action.DENY


def test_no_where_matches_whole_table_changes():
    p = policy(
        {"name": "hold", "match": {"no_where": True}, "action": "review", "reviewers": ["dba"]},
        {"name": "writes", "match": {"operations": ["write"], "no_where": False}, "action": "allow"},
    )
    assert p.evaluate(request("DELETE FROM t")).action is Action.REVIEW
    assert p.evaluate(request("DELETE FROM t WHERE id = 1")).action is Action.ALLOW


def test_protocol_connections_agents_and_groups():
    p = policy(
        rule("ssh-ops", protocol="ssh", groups=["ops"]),
        rule("bot", agents=["billing-*"], connections=["shop", "shop-*"], operations=["read"]),
    )
    assert p.evaluate(request("SELECT 1", connection="shop-replica")).rule == "bot"
    assert p.evaluate(request("SELECT 1", agent="other-bot")).rule is None
    assert p.evaluate(request("ls -la", protocol="ssh", groups=frozenset({"ops"}))).rule == "ssh-ops"
    assert p.evaluate(request("ls -la", protocol="ssh")).rule is None


def test_a_protocol_without_a_classifier_does_not_crash_and_only_who_rules_match():
    p = policy(
        rule("reads", operations=["read"]),
        rule("no-rm", "deny", regex=r"\brm\b"),
        rule("k8s", protocol="kubernetes"),
    )
    assert p.evaluate(request("rm -rf /srv", protocol="ssh")).rule == "no-rm"
    assert p.evaluate(request("cat /etc/hosts", protocol="ssh")).action is Action.DENY
    assert p.evaluate(request("ls", protocol="kubernetes", kind="exec")).rule == "k8s"


def test_a_registered_classifier_is_used_for_its_protocol():
    from policies.classification import Classification, StatementInfo

    def shell(req: Request) -> Classification:
        return Classification(
            statements=tuple(
                StatementInfo(text=part.strip(), statement="command", operations=frozenset({"read"}))
                for part in req.statement.split(";")
            )
        )

    register_classifier("test-shell", shell)
    p = policy(rule("reads", operations=["read"]))
    assert p.evaluate(request("ls; cat x", protocol="test-shell")).action is Action.ALLOW


def test_observe_rules_log_and_enforce_nothing():
    p = policy(
        {"name": "watch-writes", "match": {"operations": ["write"]}, "action": "observe"},
        rule("all"),
    )
    decision = p.evaluate(request("DELETE FROM t WHERE id = 1"))
    assert decision.action is Action.ALLOW and decision.rule == "all"
    assert decision.observed == ("watch-writes",)
    assert p.evaluate(request("SELECT 1")).observed == ()


def test_an_observe_rule_that_would_allow_uses_the_allow_semantics():
    p = policy(
        {
            "name": "would-allow-reads",
            "match": {"operations": ["read"]},
            "action": "observe",
            "would": "allow",
        },
        rule("all"),
    )
    assert p.evaluate(request("SELECT 1")).observed == ("would-allow-reads",)
    assert p.evaluate(request("WITH d AS (DELETE FROM t RETURNING *) SELECT 1")).observed == ()


def test_a_review_rule_carries_reviewers_approvals_and_timeout():
    p = policy(
        {
            "name": "writes",
            "match": {"operations": ["write"]},
            "action": "review",
            "reviewers": ["dba", "leads"],
            "approvals": 2,
            "timeout": "10m",
        }
    )
    decision = p.evaluate(request("UPDATE t SET a = 1 WHERE id = 1"))
    assert decision.action is Action.REVIEW
    assert (decision.reviewers, decision.approvals_needed, decision.timeout_seconds) == (
        ("dba", "leads"),
        2,
        600,
    )


def test_a_review_rule_carries_its_approval_mode_and_none_when_it_says_nothing():
    p = policy(
        {**rule("deletes", "review", operations=["write"], tables=["orders"]), "approval_mode": "return"},
        {**rule("ddl", "review", operations=["ddl"]), "approval_mode": "wait"},
        rule("writes", "review", operations=["write"]),
        default="review",
        reviewers=["dba"],
    )
    assert p.evaluate(request("DELETE FROM orders WHERE id = 1")).approval_mode == "return"
    assert p.evaluate(request("CREATE TABLE x (id int)")).approval_mode == "wait"
    assert p.evaluate(request("DELETE FROM other WHERE id = 1")).approval_mode is None
    assert p.evaluate(request("VACUUM")).approval_mode is None  # the policy's default review
    assert p.evaluate(request("SELECT 1")).approval_mode is None


def test_held_statements_together_return_when_any_rule_says_return():
    p = policy(
        {**rule("deletes", "review", operations=["write"], tables=["orders"]), "approval_mode": "return"},
        {**rule("ddl", "review", operations=["ddl"]), "approval_mode": "wait"},
        rule("writes", "review", operations=["write"]),
        default="allow",
    )
    both = p.evaluate(request("CREATE TABLE x (id int); DELETE FROM orders WHERE id = 1"))
    assert (both.action, both.approval_mode) == (Action.REVIEW, "return")
    waits = p.evaluate(request("CREATE TABLE x (id int); DELETE FROM other WHERE id = 1"))
    assert (waits.action, waits.approval_mode) == (Action.REVIEW, "wait")
    unsaid = p.evaluate(request("DELETE FROM a WHERE id = 1; DELETE FROM b WHERE id = 1"))
    assert (unsaid.action, unsaid.approval_mode) == (Action.REVIEW, None)


def test_several_statements_get_the_strictest_decision():
    p = policy(
        rule("reads", operations=["read"]),
        {"name": "writes", "match": {"operations": ["write"]}, "action": "review", "reviewers": ["dba"]},
        rule("ddl", "deny", operations=["ddl"]),
    )
    assert p.evaluate(request("SELECT 1; SELECT 2")).action is Action.ALLOW
    decision = p.evaluate(request("SELECT 1; UPDATE t SET a = 1 WHERE id = 1"))
    assert (decision.action, decision.rule) == (Action.REVIEW, "writes")
    decision = p.evaluate(request("UPDATE t SET a = 1 WHERE id = 1; DROP TABLE t; SELECT 1"))
    assert (decision.action, decision.rule) == (Action.DENY, "ddl")
    assert len(decision.reasons) == 3


def test_held_statements_needing_different_reviewers_are_refused_together():
    p = policy(
        {"name": "w", "match": {"operations": ["write"]}, "action": "review", "reviewers": ["dba", "leads"]},
        {
            "name": "d",
            "match": {"operations": ["ddl"]},
            "action": "review",
            "reviewers": ["leads"],
            "approvals": 2,
        },
        {"name": "a", "match": {"operations": ["admin"]}, "action": "review", "reviewers": ["ops"]},
    )
    decision = p.evaluate(request("UPDATE t SET a = 1 WHERE id = 1; CREATE TABLE x (id int)"))
    assert decision.action is Action.REVIEW
    assert (decision.reviewers, decision.approvals_needed) == (("leads",), 2)
    decision = p.evaluate(request("UPDATE t SET a = 1 WHERE id = 1; VACUUM"))
    assert decision.action is Action.DENY and "separately" in decision.message


def test_a_statement_that_does_not_parse_gets_on_parse_error():
    assert policy(default="allow").evaluate(request("SELEC 1")).action is Action.DENY
    p = policy(default="allow", on_parse_error="review", reviewers=["dba"], timeout="5m")
    decision = p.evaluate(request("SELEC 1"))
    assert (decision.action, decision.reviewers, decision.timeout_seconds) == (Action.REVIEW, ("dba",), 300)
    assert "could not be parsed" in decision.message


def test_a_statement_that_cannot_be_judged_gets_on_parse_error():
    decision = policy(default="allow").evaluate(request("SELECT 1; EXECUTE unknown_plan"))
    assert decision.action is Action.DENY
    assert "unknown_plan" in decision.message


def test_an_empty_statement_is_allowed():
    assert policy().evaluate(request("  -- nothing")).action is Action.ALLOW


def test_trusted_functions_are_not_opaque_code():
    spec_rules = [rule("reads", operations=["read"])]
    plain = policy(*spec_rules)
    trusting = policy(*spec_rules, trusted_functions=["uuid_generate_v4", "st_*"])
    statement = "SELECT uuid_generate_v4(), st_distance(a, b) FROM places"
    assert plain.evaluate(request(statement)).action is Action.DENY
    assert trusting.evaluate(request(statement)).action is Action.ALLOW
    assert trusting.evaluate(request("SELECT uuid_generate_v4(), evil()")).action is Action.DENY


def test_session_effects_are_reported_for_the_gateway():
    decision = policy(default="allow").evaluate(
        request("PREPARE p AS SELECT 1; SET search_path = app, public")
    )
    assert decision.session_effects == (
        ("prepare", "p", "PREPARE p AS SELECT 1"),
        ("search_path", "app", "public"),
    )


def test_compile_policy_lists_every_problem():
    with pytest.raises(PolicyError) as error:
        compile_policy(
            "bad",
            1,
            {
                "default": "maybe",
                "rules": [{"name": "r", "action": "allow", "match": {"operations": ["reads"]}}],
            },
        )
    assert ("policy.default", "must be one of allow, deny, review") in error.value.problems
    assert any(path == "policy.rules[0].match.operations[0]" for path, _ in error.value.problems)
    assert "policy.default" in str(error.value)


def test_reviewer_groups_that_cannot_be_found_are_a_configuration_error():
    spec = {
        "default": "review",
        "reviewers": ["dba"],
        "rules": [{"name": "w", "match": {}, "action": "review", "reviewers": ["dba", "ghosts"]}],
    }
    with pytest.raises(PolicyError) as error:
        compile_policy("p", 1, spec, known_groups={"dba"})
    assert error.value.problems == [
        ("policy.rules[0].reviewers[1]", "reviewer group 'ghosts' does not exist or has no members")
    ]
    with pytest.raises(PolicyError):
        compile_policy("p", 1, spec, known_groups=set())
    assert compile_policy("p", 1, spec, known_groups={"dba", "ghosts"}).version == 1
