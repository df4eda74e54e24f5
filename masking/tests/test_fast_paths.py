"""The fast paths give exactly what the general scan gives, on secrets and on near misses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import compile_policy
from masking.tests.cases import NEGATIVE, POSITIVE

KEY = b"fast-path-test-key-0123"
POLICIES = {
    "redact": compile_policy({}),
    "hash": compile_policy({"default_method": "hash"}, hash_key=KEY),
    "partial": compile_policy({"default_method": "partial"}),
}

# Values that look like one secret but are not one, or not only one.
NEAR_MISSES = [
    "4111 1111 1111 1112",  # fails Luhn
    "4111111111111112",
    "0111111111111111",  # starts with 0
    "4111 1111 1111 1111 12/27",  # a card, then an expiry date
    "4111111111111111 ",
    " 4111111111111111",
    "card 4111111111111111",
    "41111111111111111111111",  # too long
    "GB82WEST12345698765433",  # wrong IBAN check digits
    "GB82WEST123456987654321",  # one character too many
    "GB82 WEST 1234 5698 7654 32X",
    "XX82WEST12345698765432",
    "bob@example.com,",
    # The scan's first match is a valid token at the start, though the whole is an email.
    "xoxb-1234567890abcdef@example.com",
    "glpat-abcdefghij0123456789@example.com",
    "bob@example.com bob@example.com",
    "bob@example.com1",
    "bob@example",
    "mailto:bob@example.com",
    "+1 555 201 3344 ext 5",
    "+1 555 201 3344 5566 7788 99",  # too many digits for E.164
    "+1 555",
    "555-201-3344x",
    "999.1.1.1",
    "10.1.2.3.4",
    "10.1.2.3:5432",
    "010.1.2.3",
    "123-45-67890",
    "000-12-3456",
    "2001:db8::8a2e:370:7334:",
    "::",
    "12:30:00",
    "eyJub3QiOiJ0aGlzIn0.eyJ4IjoxfQ.c2ln",  # decodes, but names no alg
    "postgres://app:secret@db/shop",
    "password=[PASSWORD]",
    "[EMAIL]",
    "[CARD:****1111]",
    "[EMAIL:0123abcd]",
    "[EMAIL]bob@example.com",
    "bob@example.com[EMAIL]",
    "",
    "x",
]
WHOLE_SECRETS = [text for cases in POSITIVE.values() for text, secret in cases if text == secret]
CORPUS = (
    WHOLE_SECRETS
    + NEAR_MISSES
    + [text for cases in POSITIVE.values() for text, _ in cases]
    + [text for texts in NEGATIVE.values() for text in texts]
)


def _whole(policy, values):  # type: ignore[no-untyped-def]
    scanner = policy.scanner()
    selection = scanner.selection("\x00".join(values))
    counts: dict[str, int] = {}
    if not selection:
        return [None] * len(values), counts
    return scanner._mask_whole(values, scanner._combined_for(selection), counts), counts


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_a_value_masked_whole_is_masked_as_the_scan_masks_it(method: str) -> None:
    policy = POLICIES[method]
    for value in CORPUS:
        out, counts = _whole(policy, [value])
        expected, expected_counts = policy.mask_text(value)
        if out[0] is not None:
            assert out[0] == expected, value
            assert counts == expected_counts, value


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_a_value_that_is_one_secret_takes_the_whole_value_path(method: str) -> None:
    policy = POLICIES[method]
    for value in WHOLE_SECRETS:
        out, _ = _whole(policy, [value])
        assert out[0] is not None, value
        assert out[0] != value


def test_near_misses_are_left_to_the_scan() -> None:
    for value in NEAR_MISSES:
        out, counts = _whole(POLICIES["redact"], [value])
        # Either left to the scan, or unchanged (a placeholder, an empty value).
        assert out[0] is None or (out[0] == value and not counts), value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=30), st.sampled_from(sorted(POLICIES)))
def test_the_whole_value_path_agrees_with_the_scan_in_any_company(values: list[str], method: str) -> None:
    # The batch's union of detectors decides the expression: other values change it.
    policy = POLICIES[method]
    out, counts = _whole(policy, values)
    expected_counts: dict[str, int] = {}
    for value, fast in zip(values, out, strict=True):
        expected, found = policy.mask_text(value)
        if fast is not None:
            assert fast == expected, value
            for entity, n in found.items():
                expected_counts[entity] = expected_counts.get(entity, 0) + n
    assert counts == expected_counts
    batch_counts: dict[str, int] = {}
    assert policy.scanner().mask_batch(values, batch_counts) == [policy.mask_text(v)[0] for v in values]
