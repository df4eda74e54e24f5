"""The masking spec: every problem listed with its path; a valid spec compiles."""

from __future__ import annotations

import pytest

from masking import MaskingSpecError, compile_policy, validate_masking_spec

VALID = {
    "default_method": "redact",
    "entities": {"email": "hash", "card": {"method": "partial"}, "ip": "redact"},
    "custom": [
        {"name": "employee_id", "pattern": r"EMP-[0-9]{6}", "method": "redact"},
        {"name": "loyalty", "pattern": r"LC(?P<secret>[0-9]{16})", "validator": "luhn"},
        {"name": "codename", "deny_list": ["Falcon"], "ignore_case": True},
    ],
    "columns": [
        {"match": "public.users.email", "method": "hash", "entity": "email"},
        {"match": "*.ssn", "method": "redact"},
    ],
    "exempt": [
        {"column": "orders.order_ref", "entities": ["card"]},
        {"group": "fraud-team", "entities": ["card", "codename"]},
        {"group": "dba", "column": "users.*"},
    ],
}


def test_a_valid_spec_has_no_problems_and_compiles() -> None:
    assert validate_masking_spec(VALID) == []
    policy = compile_policy(VALID, hash_key=b"k" * 16)
    assert "EMPLOYEE_ID" in policy.labels


def test_an_empty_spec_masks_every_builtin_entity() -> None:
    assert validate_masking_spec({}) == []
    assert compile_policy(None).mask_text("bob@example.com 10.1.2.3")[0] == "[EMAIL] [IP]"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ([], [("masking", "must be a mapping")]),
        ({"colums": []}, [("masking.colums", "is not a known key")]),
        ({"default_method": "blur"}, [("masking.default_method", "must be one of redact, partial, hash")]),
        (
            {"entities": {"emial": "redact"}},
            [("masking.entities.emial", "is not a built-in entity (define it under custom)")],
        ),
        (
            {"entities": {"email": "blur"}},
            [("masking.entities.email", "must be one of redact, partial, hash")],
        ),
        ({"entities": ["email", "nope"]}, [("masking.entities[1]", "'nope' is not a built-in entity")]),
        (
            {"entities": 3},
            [("masking.entities", "must be 'all', a list of entity names or a mapping of name to method")],
        ),
        ({"custom": {}}, [("masking.custom", "must be a list")]),
        (
            {"custom": [{"name": "Bad Name", "pattern": "x"}]},
            [("masking.custom[0].name", "must be a lower-case name like employee_id")],
        ),
        (
            {"custom": [{"name": "email", "pattern": "x"}]},
            [("masking.custom[0].name", "'email' is already an entity")],
        ),
        ({"custom": [{"name": "x"}]}, [("masking.custom[0]", "needs a pattern, a deny_list or both")]),
        (
            {"custom": [{"name": "x", "pattern": "a*"}]},
            [("masking.custom[0].pattern", "matches the empty string")],
        ),
        (
            {"custom": [{"name": "x", "deny_list": []}]},
            [("masking.custom[0].deny_list", "must be a non-empty list of non-empty strings")],
        ),
        (
            {"custom": [{"name": "x", "pattern": "a", "validator": "md5"}]},
            [
                (
                    "masking.custom[0].validator",
                    "must be one of card, iban, ipv4, ipv6, jwt, luhn, mod97, phone, ssn",
                )
            ],
        ),
        (
            {"custom": [{"name": "x", "pattern": "a", "ignore_case": "yes"}]},
            [("masking.custom[0].ignore_case", "must be true or false")],
        ),
        (
            {"columns": [{"match": "email", "method": "redact"}]},
            [
                (
                    "masking.columns[0].match",
                    "must be table.column or schema.table.column (globs * ? [...] allowed)",
                )
            ],
        ),
        (
            {"columns": [{"match": "a.b.c.d", "method": "redact"}]},
            [
                (
                    "masking.columns[0].match",
                    "must be table.column or schema.table.column (globs * ? [...] allowed)",
                )
            ],
        ),
        (
            {"columns": [{"match": "t.c"}]},
            [("masking.columns[0].method", "must be one of redact, partial, hash")],
        ),
        (
            {"columns": [{"match": "t.c", "method": "redact", "entity": "E-mail"}]},
            [("masking.columns[0].entity", "must be a lower-case name like email")],
        ),
        ({"exempt": [{"entities": ["card"]}]}, [("masking.exempt[0]", "needs a column, a group or both")]),
        (
            {"exempt": [{"group": "x", "entities": ["nope"]}]},
            [("masking.exempt[0].entities[0]", "'nope' is not an entity of this policy")],
        ),
    ],
)
def test_each_problem_is_reported_with_its_path(spec: object, expected: list[tuple[str, str]]) -> None:
    assert validate_masking_spec(spec) == expected


def test_all_problems_are_reported_at_once() -> None:
    problems = validate_masking_spec(
        {"default_method": "x", "columns": [{"match": "x"}], "exempt": [{}]}, "masking"
    )
    assert [path for path, _ in problems] == [
        "masking.default_method",
        "masking.columns[0].match",
        "masking.columns[0].method",
        "masking.exempt[0]",
    ]


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(\w*)*x", r"(?:x|(?:ab+)+)+", r"(a|b+)*c"])
def test_patterns_with_nested_unbounded_repetition_are_refused(pattern: str) -> None:
    problems = validate_masking_spec({"custom": [{"name": "x", "pattern": pattern}]})
    assert problems and "exponential" in problems[0][1]


def test_an_invalid_regular_expression_is_refused_with_the_reason() -> None:
    [(path, message)] = validate_masking_spec({"custom": [{"name": "x", "pattern": "([a-"}]})
    assert path == "masking.custom[0].pattern"
    assert message.startswith("is not a valid regular expression")


def test_compile_policy_refuses_an_invalid_spec_listing_every_problem() -> None:
    with pytest.raises(MaskingSpecError) as caught:
        compile_policy({"default_method": "x", "custom": [{"name": "x"}]})
    assert [path for path, _ in caught.value.problems] == ["masking.default_method", "masking.custom[0]"]


def test_an_exemption_may_carry_a_reason_as_text():
    assert validate_masking_spec({"exempt": [{"group": "fraud", "reason": "fraud checks"}]}) == []
    assert validate_masking_spec({"exempt": [{"group": "fraud", "reason": 3}]}) == [
        ("masking.exempt[0].reason", "must be text")
    ]
