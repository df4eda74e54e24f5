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
