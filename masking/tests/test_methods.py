"""redact, partial and hash: what each writes, and that hash is keyed and stable."""

from __future__ import annotations

import hmac
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize("length", [16, 63, 64, 65, 200])
def test_hash_is_hmac_sha256_for_keys_shorter_and_longer_than_the_hash_block(length: int) -> None:
    import hmac

    key = bytes(range(256))[:length]
    policy = compile_policy({"entities": {"password": "hash"}}, hash_key=key)
    for secret in ("x", "s3cret", "é" * 80, "\udcff-surrogate"):
        expected = hmac.digest(key, secret.encode("utf-8", "surrogateescape"), "sha256").hex()[:8]
        assert policy.mask_text(f"password={secret}")[0] == f"password=[PASSWORD:{expected}]"


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


COLUMN_VALUES = [
    "Bob@Example.COM",
    "josé@Exemple.fr",
    "4111-1111-1111-1111",
    "+1 (555) 201-3344",
    "GB82 west 1234 5698 7654 32",
    "078-05-1120",
    "::FFFF:10.0.0.1",
    "10.0.0.1",
    "short",
    "",
    "naïve ünïcode 12345678",
    "\udcff\udcfe bytes that are not UTF-8 1234",
]


# Whole columns take shortcuts too: all ASCII (hashing), no NULL (partial and hashing).
COLUMN_SETS = {
    "mixed": COLUMN_VALUES,
    "ascii": [v for v in COLUMN_VALUES if v.isascii()],
    "with NULL": [*COLUMN_VALUES[:3], None, *COLUMN_VALUES[6:8]],
}


@pytest.mark.parametrize("column", sorted(COLUMN_SETS))
@pytest.mark.parametrize("method", ["hash", "partial"])
@pytest.mark.parametrize("entity", ["email", "card", "phone", "iban", "ssn", "ip", "masked", "password"])
def test_a_column_rule_masks_bytes_as_it_masks_the_same_text(method: str, entity: str, column: str) -> None:
    # Bytes straight off the wire take shortcuts for ASCII values; they must not show.
    policy = compile_policy({"columns": [{"match": "t.c", "method": method, "entity": entity}]}, hash_key=KEY)
    for encoding in ("utf-8", "latin-1"):
        as_bytes = [
            [None if v is None else v.encode(encoding, "surrogateescape")] for v in COLUMN_SETS[column]
        ]
        as_text = [
            [None if row[0] is None else row[0].decode(encoding, "surrogateescape")] for row in as_bytes
        ]
        text_rows, text_counts = policy.mask_rows([("t", "c")], as_text, encoding=encoding)
        byte_rows, byte_counts = policy.mask_rows([("t", "c")], as_bytes, encoding=encoding)
        assert [row[0] and row[0].decode(encoding) for row in byte_rows] == [row[0] for row in text_rows]
        assert byte_counts == text_counts


def test_hashing_a_column_at_once_is_hmac_sha256_of_each_value() -> None:
    policy = compile_policy(
        {"columns": [{"match": "t.c", "method": "hash", "entity": "email"}]}, hash_key=KEY
    )
    values = [b"Bob@Example.COM", b"alice@example.org", b"", b"x"]
    rows, _ = policy.mask_rows([("t", "c")], [[v] for v in values])
    expected = [f"[EMAIL:{hmac.digest(KEY, v.lower(), 'sha256').hex()[:8]}]".encode() for v in values]
    assert [row[0] for row in rows] == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.from_regex(r"[a-z0-9.]{1,12}@[a-z]{1,8}\.(com|org)", fullmatch=True), min_size=1, max_size=30)
)
def test_the_hash_methods_cache_gives_the_placeholder_the_hmac_gives_and_keeps_no_secret(
    emails: list[str],
) -> None:
    from masking import placeholders
    from masking.detectors import ASCII_NORMALISERS, NORMALISERS

    renderer = placeholders.Renderer(
        "email", placeholders.Method.HASH, b"k" * 32, NORMALISERS.get("email"), ASCII_NORMALISERS.get("email")
    )
    values = [e.encode() for e in emails]
    first = renderer.hash_ascii_each(values)
    again = renderer.hash_ascii_each(list(reversed(values)))  # every one from the cache now
    assert first == [renderer(e).encode() for e in emails]
    assert again == list(reversed(first))
    assert all(type(key) is int for key in renderer._hashed)
    assert not any(v in repr(renderer._hashed) for v in emails)


def test_the_hash_methods_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from masking import placeholders

    monkeypatch.setattr(placeholders, "HASH_CACHE_SIZE", 8)
    renderer = placeholders.Renderer("email", placeholders.Method.HASH, b"k" * 32)
    values = [f"user{i}@example.com".encode() for i in range(50)]
    assert renderer.hash_ascii_each(values) == [renderer(v.decode()).encode() for v in values]
    assert len(renderer._hashed) <= 8
