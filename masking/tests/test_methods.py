"""redact, partial and hash: what each writes, and that hash is keyed and stable."""

from __future__ import annotations

import re

import pytest

from masking import MaskingSpecError, compile_policy

KEY = b"0123456789abcdef-test-key"


def _policy(method: str, key: bytes | None = KEY) -> object:
    return compile_policy({"default_method": method}, hash_key=key)


def test_redact_writes_the_entity_label() -> None:
    policy = compile_policy({"entities": {"email": "redact"}})
    assert policy.mask_text("to bob@example.com") == ("to [EMAIL]", {"email": 1})


def test_partial_keeps_the_last_four_letters_or_digits() -> None:
    policy = compile_policy({"entities": {"card": "partial", "phone": "partial", "email": "partial"}})
    masked, _ = policy.mask_text("4111 1111 1111 1111 / +1 555 201 3344 / bob.smith@example.com")
    assert masked == "[CARD:****1111] / [PHONE:****3344] / [EMAIL:****ecom]"


def test_partial_redacts_values_too_short_to_hide_most_of() -> None:
    policy = compile_policy({"entities": {"password": "partial"}})
    assert policy.mask_text("password=abc123") == ("password=[PASSWORD]", {"password": 1})


def test_hash_is_a_short_keyed_stable_prefix() -> None:
    policy = compile_policy({"entities": {"email": "hash"}}, hash_key=KEY)
    first, _ = policy.mask_text("bob@example.com")
    second, _ = policy.mask_text("again: bob@example.com")
    assert re.fullmatch(r"\[EMAIL:[0-9a-f]{8}\]", first)
    assert second == f"again: {first}"


def test_hash_is_hmac_sha256_of_the_normalised_value_under_the_key() -> None:
    # Placeholders must stay the same across versions (joins, counts, saved results).
    import hmac

    policy = compile_policy({"entities": {"email": "hash"}}, hash_key=KEY)
    expected = hmac.digest(KEY, b"bob@example.com", "sha256").hex()[:8]
    for _ in range(3):  # the keyed state is reused, never consumed
        assert policy.mask_text("Bob@Example.com")[0] == f"[EMAIL:{expected}]"


def test_hash_normalises_so_the_same_value_joins() -> None:
    policy = compile_policy({"entities": {"email": "hash", "card": "hash"}}, hash_key=KEY)
    assert policy.mask_text("Bob@Example.COM")[0] == policy.mask_text("bob@example.com")[0]
    assert policy.mask_text("4111-1111-1111-1111")[0] == policy.mask_text("4111111111111111")[0]


def test_hash_differs_for_different_values_and_different_keys() -> None:
    policy = compile_policy({"entities": {"email": "hash"}}, hash_key=KEY)
    other_key = compile_policy({"entities": {"email": "hash"}}, hash_key=b"another-key-of-16-bytes")
    assert policy.mask_text("bob@example.com")[0] != policy.mask_text("alice@example.com")[0]
    assert policy.mask_text("bob@example.com")[0] != other_key.mask_text("bob@example.com")[0]


def test_a_column_rule_hash_joins_with_a_content_hash_of_the_same_entity() -> None:
    policy = compile_policy(
        {
            "entities": {"email": "hash"},
            "columns": [{"match": "users.email", "method": "hash", "entity": "email"}],
        },
        hash_key=KEY,
    )
    rows, _ = policy.mask_rows(
        [("users", "email"), (None, None)], [["Bob@example.com", "mail bob@example.com"]]
    )
    assert rows[0][1] == f"mail {rows[0][0]}"


@pytest.mark.parametrize("key", [None, b"short"])
def test_hash_without_a_long_enough_key_is_refused(key: bytes | None) -> None:
    with pytest.raises(MaskingSpecError, match="hash key"):
        compile_policy({"entities": {"email": "hash"}}, hash_key=key)
    with pytest.raises(MaskingSpecError, match="hash key"):
        compile_policy({"columns": [{"match": "t.c", "method": "hash"}]}, hash_key=key)
