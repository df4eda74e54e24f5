"""The fast paths give exactly what the general scan gives, on secrets and on near misses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import compile_policy
from masking.detectors import WHOLE_FORMS
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


# -- whole columns ------------------------------------------------------------------------

# Columns of one kind of secret, as a table holds them.
COLUMN_KINDS = {
    "email": ["bob@example.com", "Alice.Smith+billing@mail.example.co.uk", "carol_1990@sub.example.org"],
    "card": ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "3782 822463 10005"],
    "phone_international": ["+1 555 201 3344", "+44 (0)20 7946 0958", "+4930123456", "+33 1 23 45 67 89"],
    "phone_nanp": ["(555) 201-3344", "555-201-3344", "555.201.3344", "(555)201-3344"],
    "ipv4": ["10.0.0.1", "192.168.1.254", "8.8.8.8", "255.255.255.255"],
}
# Values a column of such secrets may also hold: each must go the slow way or stay as it is.
COLUMN_ODDITIES = [*NEAR_MISSES, "4111 1111 1111 1112", "+1 555", "+1 555 201 3344 5566 7788 99"]


def _whole_column(policy, values):  # type: ignore[no-untyped-def]
    """What ``mask_whole_column`` gives, with its leftovers masked by ``mask_batch``."""
    scanner = policy.scanner()
    found = scanner.mask_whole_column([None if v is None else v.encode() for v in values])
    if found is None:
        return None
    out, rest, counts = found
    texts = [values[row] for row in rest]
    masked = scanner.mask_batch(texts, counts)
    for row, text in zip(rest, masked, strict=True):
        out[row] = text.encode()
    return [None if v is None else v.decode() for v in out], counts


def _expected(policy, values):  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    out = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        masked, found = policy.mask_text(value)
        out.append(masked)
        for entity, n in found.items():
            counts[entity] = counts.get(entity, 0) + n
    return out, counts


@pytest.mark.parametrize("method", sorted(POLICIES))
@pytest.mark.parametrize("kind", sorted(COLUMN_KINDS))
def test_a_column_of_one_kind_of_secret_is_masked_whole_as_the_scan_masks_it(method: str, kind: str) -> None:
    policy = POLICIES[method]
    values = [*COLUMN_KINDS[kind] * 5, None, ""]
    found = _whole_column(policy, values)
    assert found is not None, kind
    assert found == _expected(policy, values)


@pytest.mark.parametrize("kind", sorted(COLUMN_KINDS))
@pytest.mark.parametrize("oddity", COLUMN_ODDITIES)
def test_a_column_with_an_odd_value_is_masked_as_the_scan_masks_it(kind: str, oddity: str) -> None:
    policy = POLICIES["partial"]
    values = [*COLUMN_KINDS[kind], oddity, *COLUMN_KINDS[kind]]
    found = _whole_column(policy, values)
    if found is not None:
        assert found == _expected(policy, values), oddity


def test_a_card_failing_luhn_is_left_to_the_scan_and_the_rest_masked_whole() -> None:
    values = ["4111111111111111", "4111111111111112", "5500-0000-0000-0004"]
    out, rest, counts = POLICIES["redact"].scanner().mask_whole_column([v.encode() for v in values])  # type: ignore[misc]
    assert rest == [1]
    assert out == [b"[CARD]", b"4111111111111112", b"[CARD]"]
    assert counts == {"card": 2}


def test_a_column_starting_with_a_placeholder_is_not_masked_whole() -> None:
    # A value that is a placeholder is taken by the placeholder first: the form alone
    # would not know. ("[EMAIL]" is no email, so a detector form never matches it either.)
    scanner = POLICIES["redact"].scanner()
    assert scanner.mask_whole_column([b"bob@example.com", b"[EMAIL]"]) is None
    assert scanner.mask_whole_column([b"bob@example.com", "bob@example.com".encode("utf-16")]) is None
    assert scanner.mask_whole_column([b"jos\xc3\xa9@example.com", b"bob@example.com"]) is None


@pytest.mark.parametrize("name", ["email", "card", "phone_international", "phone_nanp", "ipv4"])
def test_the_scan_tries_nothing_before_the_detector_it_masks_a_column_with(name: str) -> None:
    # With an earlier alternative that matches at a value's start, the column goes the
    # slow way: the earlier check is what makes the order of detectors safe to change.
    scanner = POLICIES["redact"].scanner()
    values = [v.encode() for v in COLUMN_KINDS[name]]
    assert scanner.mask_whole_column(values) is not None
    forms = scanner._whole_forms
    index = next(i for i, d in enumerate(scanner._detectors) if d.name == name)
    selection = scanner.selection(b"\x00".join(values))
    earlier = scanner._earlier_for(scanner._combined_for(selection), index)
    assert earlier.search("\x00[EMAIL]") is not None
    assert forms[index] is not None and forms[index][0] is WHOLE_FORMS[name]


_FORM_VALUES = st.sampled_from(["email", "card", "phone_international", "phone_nanp", "ipv4"]).flatmap(
    lambda name: st.lists(
        st.from_regex(WHOLE_FORMS[name].form, fullmatch=True).filter(str.isascii),
        min_size=1,
        max_size=12,
    )
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(_FORM_VALUES, st.sampled_from(sorted(POLICIES)))
def test_any_column_the_whole_form_matches_is_masked_as_the_scan_masks_it(
    values: list[str], method: str
) -> None:
    # Generated from the forms themselves: the argument that the form's full match is the
    # scan's first match, tried on values nobody thought of.
    policy = POLICIES[method]
    found = _whole_column(policy, values)
    if found is not None:
        assert found == _expected(policy, values)


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_a_result_with_columns_of_secrets_is_masked_as_value_by_value(method: str) -> None:
    policy = POLICIES[method]
    kinds = sorted(COLUMN_KINDS)
    rows = []
    for i in range(60):
        row: list[bytes | None] = [COLUMN_KINDS[k][i % len(COLUMN_KINDS[k])].encode() for k in kinds]
        if i % 7 == 0:
            row[i % len(kinds)] = None
        if i == 13:
            row[kinds.index("card")] = b"4111111111111112"  # the card column: fails Luhn
        if i == 21:
            row[kinds.index("email")] = "josé@exemple.fr".encode()  # the email column: not ASCII
        rows.append(row)
    masked, counts = policy.mask_rows([("public.t", k) for k in kinds], rows)
    expected_counts: dict[str, int] = {}
    for row, out in zip(rows, masked, strict=True):
        for value, got in zip(row, out, strict=True):
            if value is None:
                assert got is None
                continue
            text, found = policy.mask_text(value.decode())
            assert got == text.encode(), value
            for entity, n in found.items():
                expected_counts[entity] = expected_counts.get(entity, 0) + n
    assert counts == expected_counts
