"""``manage.py policy check``: the decision for a connection's policy and an agent's groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from conftest import database_url
from gateway.models import Connection
from identity.models import Agent
from policies.models import Policy

SPEC = {
    "default": "deny",
    "rules": [
        {"name": "no-drop", "match": {"facts": ["destructive"]}, "action": "deny", "message": "no DROP here"},
        {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
        {
            "name": "writes",
            "match": {"operations": ["write"]},
            "action": "review",
            "reviewers": ["dba"],
            "timeout": "10m",
        },
    ],
}


@pytest.fixture
def shop(db, bob):
    agents = Group.objects.create(name="agents")
    policy = Policy.objects.create(name="agents-default", spec=SPEC, version=4)
    connection = Connection.objects.create(name="shop", kind="postgres", host="127.0.0.1", policy=policy)
    connection.groups.add(agents)
    agent = Agent.objects.create(name="billing-bot")
    agent.groups.add(agents)
    return connection


def run(*args):
    """The command's output and exit status (it exits 2 for review and 3 for deny)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("policy", "check", *args, stdout=out, stderr=err)
        status = 0
    except SystemExit as stop:
        status = stop.code
    return out.getvalue(), err.getvalue(), status


def test_it_prints_an_allow_with_its_classification(shop):
    out, _err, status = run(
        "--connection", "shop", "--agent", "billing-bot", "SELECT lower(email) FROM users"
    )
    assert status == 0
    assert "action:  allow" in out and "rule:    reads" in out
    assert "policy:  agents-default v4" in out
    assert "public.users" in out and "lower" in out


def test_it_prints_a_denial_with_the_rule_message_as_json(shop):
    out, _err, status = run(
        "--connection", "shop", "--agent", "billing-bot", "--json", "SELECT 1; DROP TABLE t"
    )
    assert status == 3
    decision = json.loads(out)
    assert (decision["action"], decision["rule"], decision["message"]) == ("deny", "no-drop", "no DROP here")
    assert decision["policy_version"] == 4
    assert decision["classification"]["tables_written"] == ["public.t"]
    assert [s["action"] for s in decision["classification"]["statements"]] == ["allow", "deny"]


def test_it_prints_a_review_with_its_reviewers(shop):
    out, _err, status = run(
        "--connection", "shop", "--agent", "billing-bot", "UPDATE t SET a = 1 WHERE id = 1"
    )
    assert status == 2
    assert "1 approval(s) from dba, timeout 600s\n" in out
    # A rule's own approval mode is said too, in the text and in JSON.
    spec = shop.policy.spec
    spec["rules"] = [
        {**rule, "approval_mode": "return"} if rule["name"] == "writes" else rule for rule in spec["rules"]
    ]
    shop.policy.save()
    out, _err, status = run(
        "--connection", "shop", "--agent", "billing-bot", "UPDATE t SET a = 1 WHERE id = 1"
    )
    assert status == 2 and "1 approval(s) from dba, timeout 600s, approval mode return" in out
    out, _err, _status = run(
        "--connection", "shop", "--agent", "billing-bot", "--json", "UPDATE t SET a = 1 WHERE id = 1"
    )
    assert json.loads(out)["approval_mode"] == "return"


def test_the_agents_groups_decide(shop):
    Group.objects.create(name="ops")
    ops_bot = Agent.objects.create(name="ops-bot")
    ops_bot.groups.add(Group.objects.get(name="ops"))
    shop.policy.spec = {
        "default": "deny",
        "rules": [{"name": "ops", "match": {"groups": ["ops"]}, "action": "allow"}],
    }
    shop.policy.save()
    assert run("--connection", "shop", "--agent", "ops-bot", "DELETE FROM t")[2] == 0
    _out, err, status = run("--connection", "shop", "--agent", "billing-bot", "DELETE FROM t")
    assert status == 3
    _out, err, _status = run("--connection", "shop", "--agent", "ops-bot", "SELECT 1")
    assert "none of the groups" in err


def test_unknown_names_and_missing_policies_are_clear_errors(shop):
    with pytest.raises(CommandError, match="no connection named 'nope'"):
        call_command("policy", "check", "--connection", "nope", "--agent", "billing-bot", "SELECT 1")
    with pytest.raises(CommandError, match="no agent named 'nobody'"):
        call_command("policy", "check", "--connection", "shop", "--agent", "nobody", "SELECT 1")
    Connection.objects.create(name="bare", kind="postgres", host="127.0.0.1")
    with pytest.raises(CommandError, match="has no policy"):
        call_command("policy", "check", "--connection", "bare", "--agent", "billing-bot", "SELECT 1")


def test_a_review_naming_a_group_without_members_is_refused(shop):
    Group.objects.create(name="empty")
    shop.policy.spec = {
        "default": "deny",
        "rules": [{"name": "w", "match": {}, "action": "review", "reviewers": ["dba", "empty"]}],
    }
    shop.policy.save()
    with pytest.raises(CommandError, match="reviewer group 'empty' does not exist or has no members"):
        call_command("policy", "check", "--connection", "shop", "--agent", "billing-bot", "SELECT 1")


def test_a_dash_reads_the_statements_from_stdin(shop, monkeypatch):
    monkeypatch.setattr(sys, "stdin", StringIO("-- migration\nSELECT 1;\nDROP TABLE users;\n"))
    out, _err, status = run("--connection", "shop", "--agent", "billing-bot", "-")
    assert status == 3
    assert "rule:    no-drop" in out


@pytest.mark.django_db(transaction=True)
def test_it_runs_from_the_command_line(shop):

    env = {"DATABASE_URL": database_url()}
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "policy",
            "check",
            "--connection",
            "shop",
            "--agent",
            "billing-bot",
            "--json",
            "/* x */ DELETE FROM t",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2, proc.stderr
    assert json.loads(proc.stdout)["rule"] == "writes"
