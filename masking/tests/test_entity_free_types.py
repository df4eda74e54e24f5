"""Types whose values no built-in detector can match (``pgtypes.ENTITY_FREE_TYPE_OIDS``):
the content detectors skip them, so this proves they would find nothing there."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import masking.policy
from gateway import native
from masking.errors import MaskingError
from masking.pgtypes import BOOL, ENTITY_FREE_TYPE_OIDS, INT2, INT4, OID, TEXT

ENGINES = [masking.policy, native.load(masking.policy)]  # interpreted and, when built, compiled
EVERY_BUILTIN = masking.policy.compile_policy({})  # every built-in entity, redacted

# The text forms PostgreSQL prints for each type (and its limits).
TEXT_FORMS = {
    BOOL: st.sampled_from(["t", "f"]),
    INT2: st.integers(-(2**15), 2**15 - 1).map(str),
    INT4: st.integers(-(2**31), 2**31 - 1).map(str),
    OID: st.integers(0, 2**32 - 1).map(str),
}
LIMITS = ["0", "-1", "-32768", "32767", "-2147483648", "2147483647", "4294967295", "4111111111", "1234567890"]


def test_the_list_is_the_types_this_file_checks() -> None:
    assert set(TEXT_FORMS) == ENTITY_FREE_TYPE_OIDS


@pytest.mark.parametrize("value", LIMITS)
def test_no_built_in_detector_matches_the_limits(value: str) -> None:
    assert EVERY_BUILTIN.mask_text(value) == (value, {})


@settings(max_examples=2000, deadline=None)
@given(st.one_of(*TEXT_FORMS.values()))
def test_no_built_in_detector_matches_any_value_of_these_types(value: str) -> None:
    assert EVERY_BUILTIN.mask_text(value) == (value, {})


@pytest.mark.parametrize("engine", ENGINES, ids=["interpreted", "compiled"])
def test_a_result_of_such_columns_passes_through_unread(engine) -> None:  # type: ignore[no-untyped-def]
    policy = engine.compile_policy({})
    columns = [("public.accounts", "id"), ("public.accounts", "active")]
    masker = policy.result_masker(columns, type_oids=[INT4, BOOL], formats=[0])
    assert masker.passes_through
    rows = [[b"4111111111", b"t"], [None, b"f"]]
    assert masker.mask_rows(rows) == ([(b"4111111111", b"t"), (None, b"f")], {})


@pytest.mark.parametrize("engine", ENGINES, ids=["interpreted", "compiled"])
def test_other_columns_of_the_result_are_still_scanned(engine) -> None:  # type: ignore[no-untyped-def]
    policy = engine.compile_policy({})
    masker = policy.result_masker(
        [("public.accounts", "id"), ("public.accounts", "note")], type_oids=[INT4, TEXT], formats=[0]
    )
    assert not masker.passes_through
    masked, counts = masker.mask_rows([[b"7", b"mail ann@example.com"]])
    assert masked == [(b"7", b"mail [EMAIL]")] and counts == {"email": 1}


@pytest.mark.parametrize("engine", ENGINES, ids=["interpreted", "compiled"])
def test_custom_entities_still_read_them(engine) -> None:  # type: ignore[no-untyped-def]
    # An admin's pattern may be digits alone: an int4 it matches becomes NULL (not text-like).
    policy = engine.compile_policy({"custom": [{"name": "badge", "pattern": r"\b7[0-9]{5}\b"}]})
    masker = policy.result_masker([("public.staff", "badge")], type_oids=[INT4], formats=[0])
    assert not masker.passes_through
    assert masker.mask_rows([[b"712345"], [b"12"]]) == ([(None,), (b"12",)], {"badge": 1})


@pytest.mark.parametrize("engine", ENGINES, ids=["interpreted", "compiled"])
def test_a_row_of_the_wrong_width_is_refused_even_when_nothing_would_be_masked(engine) -> None:  # type: ignore[no-untyped-def]
    masker = engine.compile_policy({}).result_masker([("t", "n")], type_oids=[INT4], formats=[0])
    with pytest.raises(MaskingError, match="every row must have 1 values"):
        masker.mask_rows([[b"1", b"secret@example.com"]])
