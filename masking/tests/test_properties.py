"""Properties over generated inputs: checksums decide, masking is idempotent, nothing leaks,
and the batch path agrees with masking each value on its own."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import compile_policy
from masking.tests.cases import NEGATIVE, POSITIVE
from masking.validators import luhn_valid

POLICY = compile_policy({})
HASHING = compile_policy({"default_method": "hash"}, hash_key=b"property-test-key-0123")
PARTIAL = compile_policy({"default_method": "partial"})
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXAMPLES = [case for cases in POSITIVE.values() for case in cases]
SECRETS = [secret for _, secret in EXAMPLES]
LOOK_ALIKES = [text for texts in NEGATIVE.values() for text in texts]
FILLER = [
    "hello",
    "order",
    "2024-01-15 12:30:00+00",
    "42",
    "x=1",
    "SELECT 1",
    "café",
    "[INFO]",
    "total 12.50",
]
SEPARATORS = [" ", "\n", ", ", "; ", "\t", " | "]


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always completes a Luhn number")


luhn_numbers = (
    st.integers(11, 17)
    .flatmap(lambda n: st.tuples(st.sampled_from("123456789"), st.text("0123456789", min_size=n, max_size=n)))
    .map(lambda parts: _luhn_complete(parts[0] + parts[1]))
)

non_luhn_16 = (
    st.tuples(st.sampled_from("123456789"), st.text("0123456789", min_size=15, max_size=15))
    .map(lambda parts: parts[0] + parts[1])
    .filter(lambda number: not luhn_valid(number))
)

texts = st.lists(
    st.tuples(st.sampled_from(SECRETS + LOOK_ALIKES + FILLER), st.sampled_from(SEPARATORS)), max_size=8
).map(lambda parts: "".join(a + b for a, b in parts))

planted = st.lists(
    st.tuples(st.sampled_from(EXAMPLES), st.sampled_from(FILLER), st.sampled_from(SEPARATORS)),
    min_size=1,
    max_size=6,
)

shapes = st.text(alphabet="0123456789 -.:@/+()_=abcdefxyzAKIZEMLP[]*\n", max_size=60)


@SETTINGS
@given(luhn_numbers, st.sampled_from(["", " ", "-"]), st.sampled_from(SEPARATORS))
def test_random_valid_luhn_numbers_are_masked(number: str, separator: str, around: str) -> None:
    grouped = separator.join(number[i : i + 4] for i in range(0, len(number), 4))
    masked, counts = POLICY.mask_text(f"paid{around}{grouped}{around}ok")
    assert counts.get("card") == 1
    assert number[-8:] not in masked.replace(separator, "")


@SETTINGS
@given(non_luhn_16)
def test_random_sixteen_digit_numbers_failing_luhn_stay_visible(number: str) -> None:
    text = f"order {number} shipped"
    assert POLICY.mask_text(text) == (text, {})


@SETTINGS
@given(texts)
def test_masking_is_idempotent(text: str) -> None:
    for policy in (POLICY, HASHING, PARTIAL):
        once, _ = policy.mask_text(text)
        assert policy.mask_text(once) == (once, {})


@SETTINGS
@given(shapes)
def test_masking_is_idempotent_on_arbitrary_shapes(text: str) -> None:
    once, _ = POLICY.mask_text(text)
    assert POLICY.mask_text(once) == (once, {})


@SETTINGS
@given(planted)
def test_masked_output_never_contains_a_planted_secret(parts: list[tuple[tuple[str, str], str, str]]) -> None:
    text = "".join(f"{filler}{sep}{example}{sep}" for (example, _), filler, sep in parts)
    for policy in (POLICY, HASHING, PARTIAL):
        masked, counts = policy.mask_text(text)
        assert counts  # (a truncated PEM block masks everything after it, so fewer may be counted)
        for (_, secret), _, _ in parts:
            assert secret not in masked


@SETTINGS
@given(
    st.lists(st.lists(st.one_of(st.none(), texts, shapes), min_size=3, max_size=3), max_size=12),
    st.booleans(),
)
def test_the_batch_path_agrees_with_masking_each_value(rows: list[list[str | None]], as_bytes: bool) -> None:
    data = [[None if v is None else v.encode() if as_bytes else v for v in row] for row in rows]
    masked, counts = POLICY.mask_rows([None, ("t", "c"), None], data)
    expected_counts: dict[str, int] = {}
    for row_in, row_out in zip(data, masked, strict=True):
        for value_in, value_out in zip(row_in, row_out, strict=True):
            if value_in is None:
                assert value_out is None
                continue
            one, found = POLICY.mask_text(value_in)
            assert value_out == one
            for entity, n in found.items():
                expected_counts[entity] = expected_counts.get(entity, 0) + n
    assert counts == expected_counts


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_masks_without_error(text: str) -> None:
    masked, counts = POLICY.mask_text(text)
    assert isinstance(masked, str)
    assert all(n > 0 for n in counts.values())


# The batch fast path (``Scanner.mask_batch``: every value of a column joined with NUL and
# scanned in one pass) must mask exactly what masking each value on its own masks.
# Secrets glued to each other: masking one gives its neighbour the context a second pass needs.
glued = st.tuples(
    st.sampled_from(SECRETS), st.sampled_from(["", "@", "1", "a", "x.", ":"]), st.sampled_from(SECRETS)
).map("".join)
batch_values = st.lists(
    st.one_of(st.sampled_from(SECRETS), glued, texts, shapes, st.text(max_size=40)), max_size=20
)


def _one_by_one(policy, values):  # type: ignore[no-untyped-def]
    expected_counts: dict[str, int] = {}
    expected = []
    for value in values:
        masked, found = policy.mask_text(value)
        expected.append(masked)
        for entity, n in found.items():
            expected_counts[entity] = expected_counts.get(entity, 0) + n
    return expected, expected_counts


@SETTINGS
@given(batch_values)
def test_the_joined_batch_masks_exactly_what_each_value_alone_masks(values: list[str]) -> None:
    for policy in (POLICY, HASHING, PARTIAL):
        counts: dict[str, int] = {}
        out = policy.scanner().mask_batch(values, counts)
        if out is None:  # only a value holding NUL sends the batch value by value
            assert any("\x00" in value for value in values)
            continue
        expected, expected_counts = _one_by_one(policy, values)
        assert out == expected
        assert counts == expected_counts
        # Unchanged values come back as the same objects (the caller relies on it).
        assert all((a is b) == (a == b) for a, b in zip(out, values, strict=True))


@SETTINGS
@given(
    st.lists(st.sampled_from(SECRETS), min_size=8, max_size=40),
    st.lists(st.one_of(texts, shapes, glued), max_size=10),
    st.randoms(use_true_random=False),
)
def test_a_dense_column_masks_exactly_what_each_value_alone_masks(
    secrets: list[str], others: list[str], rng
) -> None:  # type: ignore[no-untyped-def]
    column = secrets + others
    rng.shuffle(column)
    rows = [[value.encode(), value, None] for value in column]
    for policy in (POLICY, HASHING, PARTIAL):
        masked, counts = policy.mask_rows([None, None, None], rows)
        expected, expected_counts = _one_by_one(policy, column)
        assert [row[0] for row in masked] == [text.encode("utf-8", "surrogateescape") for text in expected]
        assert [row[1] for row in masked] == expected
        assert [row[2] for row in masked] == [None] * len(column)
        assert counts == {entity: 2 * n for entity, n in expected_counts.items()}


def test_a_value_needing_a_second_pass_gets_it_in_a_batch() -> None:
    values = ["+1 555 201 3344Alice.Smith+billing@mail.example.co.uk", "bob@example.com"]
    counts: dict[str, int] = {}
    assert POLICY.scanner().mask_batch(values, counts) == ["[PHONE][EMAIL]", "[EMAIL]"]
    assert counts == {"phone": 1, "email": 2}


def test_a_batch_holding_nul_or_custom_entities_is_left_to_the_value_by_value_path() -> None:
    assert POLICY.scanner().mask_batch(["a\x00b", "bob@example.com"], {}) is None
    custom = compile_policy({"custom": [{"name": "ticket", "pattern": "T-[0-9]+"}]})
    assert custom.scanner().mask_batch(["T-1"], {}) is None
