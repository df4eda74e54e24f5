"""Spec validation: every problem is reported by its path, with a message that says why."""

from __future__ import annotations

import pytest

from policies.packs import PACKS, combine, pack
from policies.spec import parse_duration, validate_policy_spec


def problems(spec) -> dict[str, str]:
    return dict(validate_policy_spec(spec, "policies[0]"))


def test_the_issue_example_is_valid():
    spec = {
        "name": "agents-default",
        "default": "deny",
        "rules": [
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
    assert validate_policy_spec(spec, "policies[0]") == []


@pytest.mark.parametrize("name", sorted(PACKS))
def test_every_pack_is_valid(name):
    assert validate_policy_spec(pack(name), name) == []


def test_packs_combine_in_order_without_duplicates():
    spec = combine("no-server-files", "no-role-changes", "no-server-files", default="allow")
    assert validate_policy_spec(spec, "x") == []
    names = [r["name"] for r in spec["rules"]]
    assert names == [
        "no-server-file-functions",
        "no-server-file-access",
        "no-role-switch",
        "no-privilege-changes",
    ]
    spec["rules"].clear()
    assert pack("no-server-files")["rules"], "a pack handed out is a copy"


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ("nope", "policies[0]", "must be a mapping"),
        ({"defualt": "deny"}, "policies[0].defualt", "unknown key"),
        ({"default": "maybe"}, "policies[0].default", "must be one of allow, deny, review"),
        ({"default": "observe"}, "policies[0].default", "must be one of"),
        ({"on_parse_error": "ignore"}, "policies[0].on_parse_error", "must be one of"),
        ({"default": "review"}, "policies[0].reviewers", "non-empty list of reviewer groups"),
        ({"rules": {}}, "policies[0].rules", "must be a list"),
        ({"rules": ["x"]}, "policies[0].rules[0]", "must be a mapping"),
        ({"rules": [{"action": "allow"}]}, "policies[0].rules[0].name", "is required"),
        ({"rules": [{"name": "a", "action": "permit"}]}, "policies[0].rules[0].action", "must be one of"),
        (
            {"rules": [{"name": "a", "action": "allow", "when": {}}]},
            "policies[0].rules[0].when",
            "unknown key",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": []}]},
            "policies[0].rules[0].match",
            "must be a mapping",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"operation": ["read"]}}]},
            "policies[0].rules[0].match.operation",
            "unknown match key",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"operations": ["read", "reads"]}}]},
            "policies[0].rules[0].match.operations[1]",
            "unknown operation 'reads'",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"operations": []}}]},
            "policies[0].rules[0].match.operations",
            "non-empty list",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"protocol": "psql"}}]},
            "policies[0].rules[0].match.protocol[0]",
            "unknown protocol",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"facts": ["nowhere"]}}]},
            "policies[0].rules[0].match.facts[0]",
            "unknown fact",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"functions": ["@files"]}}]},
            "policies[0].rules[0].match.functions[0]",
            "unknown function set '@files'",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"tables": ["a.b.c"]}}]},
            "policies[0].rules[0].match.tables[0]",
            "'schema.table'",
        ),
        (
            {"rules": [{"name": "a", "action": "allow", "match": {"groups": ["ok", 3]}}]},
            "policies[0].rules[0].match.groups[1]",
            "non-empty string",
        ),
        (
            {"rules": [{"name": "a", "action": "deny", "match": {"regex": "(unclosed"}}]},
            "policies[0].rules[0].match.regex",
            "not a valid regular expression",
        ),
        (
            {"rules": [{"name": "a", "action": "deny", "match": {"no_where": "yes"}}]},
            "policies[0].rules[0].match.no_where",
            "true or false",
        ),
        ({"rules": [{"name": "a", "action": "review"}]}, "policies[0].rules[0].reviewers", "reviewer groups"),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": []}]},
            "policies[0].rules[0].reviewers",
            "reviewer groups",
        ),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": ["dba"], "approvals": 0}]},
            "policies[0].rules[0].approvals",
            "between 1 and",
        ),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": ["dba"], "approvals": True}]},
            "policies[0].rules[0].approvals",
            "whole number",
        ),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": ["dba"], "timeout": "10 minutes"}]},
            "policies[0].rules[0].timeout",
            "duration",
        ),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": ["dba"], "timeout": "0s"}]},
            "policies[0].rules[0].timeout",
            "longer than zero",
        ),
        (
            {"rules": [{"name": "a", "action": "deny", "reviewers": ["dba"]}]},
            "policies[0].rules[0].reviewers",
            "only review rules",
        ),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": ["dba"], "approval_mode": "later"}]},
            "policies[0].rules[0].approval_mode",
            "must be one of wait, return",
        ),
        (
            {"rules": [{"name": "a", "action": "review", "reviewers": ["dba"], "approval_mode": True}]},
            "policies[0].rules[0].approval_mode",
            "must be one of wait, return",
        ),
        (
            {"rules": [{"name": "a", "action": "deny", "approval_mode": "return"}]},
            "policies[0].rules[0].approval_mode",
            "only review rules have an approval mode",
        ),
        (
            {"approval_mode": "return", "default": "review", "reviewers": ["dba"]},
            "policies[0].approval_mode",
            "unknown key",
        ),
        (
            {"rules": [{"name": "a", "action": "deny", "would": "allow"}]},
            "policies[0].rules[0].would",
            "only observe",
        ),
        (
            {"rules": [{"name": "a", "action": "observe", "would": "log"}]},
            "policies[0].rules[0].would",
            "must be one of",
        ),
        (
            {"rules": [{"name": "a", "action": "deny", "message": 3}]},
            "policies[0].rules[0].message",
            "must be a string",
        ),
        ({"trusted_functions": []}, "policies[0].trusted_functions", "non-empty list"),
    ],
)
def test_it_reports_problems_by_path(spec, path, message):
    found = problems(spec)
    assert path in found, found
    assert message in found[path]


def test_duplicate_rule_names_are_reported_on_the_second():
    found = problems({"rules": [{"name": "a", "action": "allow"}, {"name": "a", "action": "deny"}]})
    assert found == {"policies[0].rules[1].name": "duplicate rule name 'a'"}


def test_every_problem_is_listed_not_just_the_first():
    found = problems(
        {
            "default": "x",
            "rules": [
                {"name": "a", "action": "x"},
                {"name": "b", "action": "allow", "match": {"operations": ["y"], "facts": ["z"]}},
            ],
        }
    )
    assert set(found) == {
        "policies[0].default",
        "policies[0].rules[0].action",
        "policies[0].rules[1].match.operations[0]",
        "policies[0].rules[1].match.facts[0]",
    }


def test_a_single_string_is_a_list_of_one():
    spec = {"rules": [{"name": "a", "action": "allow", "match": {"operations": "read", "groups": "agents"}}]}
    assert problems(spec) == {}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), (90, 90), ("45", 45)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "ten minutes", "10x", "-1s", "31d", 0, -5, True, None, 1.5])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)
