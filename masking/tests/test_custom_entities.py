"""Entities an admin defines: a regular expression, an optional validator, a deny list."""

from __future__ import annotations

from masking import compile_policy

EMPLOYEE = {"name": "employee_id", "pattern": r"\bEMP-[0-9]{6}\b"}


def test_a_custom_pattern_is_masked_with_its_own_label() -> None:
    policy = compile_policy({"entities": [], "custom": [EMPLOYEE]})
    assert policy.mask_text("assigned to EMP-123456 and EMP-654321") == (
        "assigned to [EMPLOYEE_ID] and [EMPLOYEE_ID]",
        {"employee_id": 2},
    )


def test_a_validator_keeps_only_matches_that_pass_it() -> None:
    loyalty = {"name": "loyalty_card", "pattern": r"\bLC(?P<secret>[0-9]{16})\b", "validator": "luhn"}
    policy = compile_policy({"entities": [], "custom": [loyalty]})
    masked, counts = policy.mask_text("LC4111111111111111 LC4111111111111112")
    # Only the named group "secret" is masked.
    assert masked == "LC[LOYALTY_CARD] LC4111111111111112"
    assert counts == {"loyalty_card": 1}


def test_a_deny_list_masks_literal_values_as_whole_words() -> None:
    codenames = {"name": "codename", "deny_list": ["Falcon", "Night Jar"], "method": "hash"}
    policy = compile_policy({"entities": [], "custom": [codenames]}, hash_key=b"k" * 16)
    masked, counts = policy.mask_text("Falcon and Night Jar, not Falconry or falcon")
    assert counts == {"codename": 2}
    assert masked.startswith("[CODENAME:") and "Falconry or falcon" in masked
    assert "Night Jar" not in masked


def test_deny_lists_can_ignore_case() -> None:
    codenames = {"name": "codename", "deny_list": ["falcon"], "ignore_case": True}
    policy = compile_policy({"entities": [], "custom": [codenames]})
    assert policy.mask_text("FALCON falcon Falcon") == ("[CODENAME] [CODENAME] [CODENAME]", {"codename": 3})


def test_custom_entities_run_alongside_builtin_ones_and_in_rows() -> None:
    policy = compile_policy({"entities": ["email"], "custom": [EMPLOYEE]})
    rows, counts = policy.mask_rows(
        [None, None], [[b"EMP-000001", b"bob@example.com"], [None, b"x EMP-000002"]]
    )
    assert rows == [(b"[EMPLOYEE_ID]", b"[EMAIL]"), (None, b"x [EMPLOYEE_ID]")]
    assert counts == {"employee_id": 2, "email": 1}


def test_a_custom_pattern_never_eats_into_a_placeholder() -> None:
    digits = {"name": "digits", "pattern": r"[0-9A-Z]{4,}"}
    policy = compile_policy({"entities": {"card": "partial"}, "custom": [digits]})
    masked, counts = policy.mask_text("4111 1111 1111 1111 and 98765")
    assert masked == "[CARD:****1111] and [DIGITS]"
    assert policy.mask_text(masked) == (masked, {})


def test_custom_placeholders_are_recognised_by_the_policy_write_guard() -> None:
    policy = compile_policy({"custom": [EMPLOYEE]})
    assert policy.contains_placeholder("UPDATE t SET owner = '[EMPLOYEE_ID]'")
    assert not policy.contains_placeholder("UPDATE t SET owner = 'EMP-000001'")
