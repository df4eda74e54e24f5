"""The editor's "Try it" decides exactly as ``manage.py policy check`` (and so the gateway)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from console.tests.factories import make_agent, make_connection
from policies import actions
from policies.packs import combine
from policies.tests.factories import SHOP_SPEC, make_policy

pytestmark = pytest.mark.django_db

STATEMENTS = [
    "SELECT * FROM orders WHERE id = 1",
    "/* hi */ DELETE FROM orders",
    "SELECT 1; DROP TABLE orders",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$",
    "EXECUTE p",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    'SELECT "pg_catalog"."pg_read_file"(\'/etc/passwd\')',
    "COPY orders TO PROGRAM 'sh'",
    "SET ROLE postgres",
    "SET default_transaction_read_only = off",
    "EXPLAIN ANALYZE DELETE FROM orders",
    "SELECT rolpassword FROM pg_authid",
    "UPDATE orders SET paid = true WHERE id = 3",
    "SELEC 1",
    "BEGIN; SELECT 1; COMMIT",
]


@pytest.fixture
def admin(client, alice):
    client.force_login(alice)
    return client


def policy_check(connection, agent, statement):
    out = StringIO()
    try:
        call_command(
            "policy", "check", "--connection", connection, "--agent", agent, "--json", statement, stdout=out
        )
    except SystemExit:
        pass  # the exit status says the action; the JSON is what is compared
    return json.loads(out.getvalue())


def try_it(client, policy, statement, agent="billing-bot", connection="shop", **extra):
    response = client.post(
        reverse("policies:try", kwargs={"pk": policy.pk}),
        {"statement": statement, "agent": agent, "connection": connection, **extra},
        HTTP_ACCEPT="application/json",
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "spec",
    [
        SHOP_SPEC,
        combine("read-only-agent", default="deny"),
        combine("no-server-files", "no-role-changes", default="allow"),
    ],
    ids=["shop", "read-only", "guardrails"],
)
def test_try_it_gives_the_decision_manage_py_policy_check_gives(admin, bob, spec):
    policy = make_policy("p", spec)
    make_connection(policy=policy)
    make_agent(groups=["agents", "reporting"])

    for statement in STATEMENTS:
        status, answer = try_it(admin, policy, statement)
        assert status == 200, answer
        assert answer["decision"] == policy_check("shop", "billing-bot", statement), statement
        assert answer["errors"] == [] and answer["notes"] == []


def test_try_it_uses_the_agents_groups_and_the_connections_name(admin, bob):
    spec = {
        "default": "deny",
        "rules": [
            {
                "name": "ops-anything",
                "match": {"groups": ["ops"], "connections": ["shop-*"]},
                "action": "allow",
            },
            {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
        ],
    }
    policy = make_policy("p", spec)
    make_connection("shop-eu", policy=policy)
    make_connection("shop", policy=policy)
    make_agent("billing-bot")
    make_agent("ops-bot", groups=["agents", "ops"])

    def decide(agent, connection):
        return try_it(admin, policy, "DELETE FROM t", agent, connection)[1]["decision"]

    assert decide("ops-bot", "shop-eu")["rule"] == "ops-anything"
    assert decide("ops-bot", "shop")["action"] == "deny"
    assert decide("billing-bot", "shop-eu")["action"] == "deny"


def test_try_it_shows_the_full_classification_and_parse_errors(admin, bob):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()

    _, answer = try_it(admin, policy, "INSERT INTO audit.log SELECT lower(email) FROM users")
    details = answer["decision"]["classification"]
    assert (answer["decision"]["action"], answer["decision"]["rule"]) == ("review", "writes")
    assert details["operations"] == ["read", "write"]
    assert details["tables_read"] == ["public.users"] and details["tables_written"] == ["audit.log"]
    assert details["functions"] == ["lower"]
    for text in ("public.users", "audit.log", "lower", "review", "writes", "1 approval from dba"):
        assert text in answer["html"]

    _, broken = try_it(admin, policy, "SELEC 1")
    assert broken["decision"]["action"] == "deny" and broken["decision"]["classification"]["error"]
    assert 'id="try-parse-error"' in broken["html"] and "Does not parse" in broken["html"]


def test_try_it_escapes_what_was_typed(admin, bob):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()

    _, answer = try_it(admin, policy, "SELECT '<img src=x onerror=alert(1)>'")

    assert "<img" not in answer["html"] and "&lt;img" in answer["html"]


def test_try_it_says_when_the_connection_uses_another_policy_or_refuses_the_agent(admin, bob):
    policy = make_policy()
    other = make_policy("other", {"default": "allow", "rules": []})
    make_connection(policy=other)
    make_agent("stranger", groups=[])

    status, answer = try_it(admin, policy, "SELECT 1", agent="stranger")

    assert status == 200 and answer["decision"]["policy"] == "agents-default"
    assert answer["notes"] == [
        "Connection shop uses policy other, not this one: this is what agents-default would decide.",
        "Agent stranger is in none of the groups of connection shop: the gateway refuses its login there.",
    ]


def test_try_it_can_ask_an_earlier_version(admin, bob):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()
    policy = actions.do_save_policy(None, policy.name, {"default": "allow", "rules": []})

    _, now = try_it(admin, policy, "DROP TABLE t")
    _, then = try_it(admin, policy, "DROP TABLE t", version="1")

    assert (now["decision"]["action"], now["decision"]["policy_version"]) == ("allow", 2)
    assert (then["decision"]["action"], then["decision"]["rule"], then["decision"]["policy_version"]) == (
        "deny",
        "no-drop",
        1,
    )
    status, missing = try_it(admin, policy, "SELECT 1", version="9")
    assert status == 400 and missing["errors"] == ["policy agents-default has no version 9"]


def test_try_it_reports_a_policy_that_no_longer_compiles(admin, bob):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()
    bob.is_active = False  # the only member of dba
    bob.save()

    status, answer = try_it(admin, policy, "SELECT 1")

    assert status == 400 and answer["decision"] is None
    assert (
        answer["errors"][1]
        == "policy.rules[2].reviewers[0]: reviewer group 'dba' does not exist or has no members"
    )
    assert "does not compile" in answer["html"]


def test_unknown_agents_and_connections_are_reported(admin, bob):
    policy = make_policy()

    status, answer = try_it(admin, policy, "SELECT 1", agent="nobody", connection="nowhere")

    assert status == 400
    assert answer["errors"] == ["no agent named 'nobody'", "no connection named 'nowhere'"]


def test_without_javascript_the_policy_page_shows_the_result(admin, bob):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()

    response = admin.post(
        reverse("policies:try", kwargs={"pk": policy.pk}),
        {"statement": "DROP TABLE t", "agent": "billing-bot", "connection": "shop"},
    )

    html = response.content.decode()
    assert response.status_code == 200 and 'id="rules"' in html
    assert 'id="try-action">deny<' in html and 'id="try-rule">no-drop<' in html
    assert ">DROP TABLE t</textarea>" in html  # the statement stays in the box
