"""Types whose values no built-in detector can match (``pgtypes.ENTITY_FREE_TYPE_OIDS``):
the content detectors skip them, so this proves they would find nothing there."""

from __future__ import annotations

import re

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


def _detectors_find(value: str) -> tuple[str, dict[str, int]]:
    """Every built-in detector run over ``value`` as a whole, in both engines: what
    ``mask_text`` would give without its shortcut for such integers."""
    found = []
    for engine in ENGINES:
        counts: dict[str, int] = {}
        masked, _ = engine.compile_policy({}).scanner()._mask_builtin(value, counts)
        found.append((masked, counts))
    assert found[0] == found[-1]
    return found[0]


@pytest.mark.parametrize("value", LIMITS)
def test_no_built_in_detector_matches_the_limits(value: str) -> None:
    assert _detectors_find(value) == (value, {})
    assert EVERY_BUILTIN.mask_text(value) == (value, {})


@settings(max_examples=2000, deadline=None)
@given(st.one_of(*TEXT_FORMS.values()))
def test_no_built_in_detector_matches_any_value_of_these_types(value: str) -> None:
    assert _detectors_find(value) == (value, {})


@settings(max_examples=2000, deadline=None)
@given(st.one_of(TEXT_FORMS[INT4], TEXT_FORMS[OID], st.text(alphabet="-+0123456789 a\u0663", max_size=12)))
def test_the_integers_masking_skips_are_exactly_what_these_types_print(value: str) -> None:
    """``Scanner.mask_into`` returns such an integer unread (a bound parameter ``42``): only
    the text forms the detectors were run over above qualify."""
    from masking.scanner import entity_free_integer

    printed = re.fullmatch("-?[0-9]+", value) is not None and str(int(value)) == value
    assert entity_free_integer(value) == (printed and -(2**31) <= int(value) <= 2**32 - 1)
    for engine in ENGINES:
        assert engine.compile_policy({}).scanner().mask_text(value)[0] == _detectors_find(value)[0]


@pytest.mark.parametrize("engine", ENGINES, ids=["interpreted", "compiled"])
def test_a_custom_entity_still_reads_a_bound_integer(engine) -> None:  # type: ignore[no-untyped-def]
    policy = engine.compile_policy({"custom": [{"name": "badge", "pattern": r"\b7[0-9]{5}\b"}]})
    assert policy.mask_text("712345") == ("[BADGE]", {"badge": 1})
    assert engine.compile_policy({}).mask_text("712345") == ("712345", {})


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
