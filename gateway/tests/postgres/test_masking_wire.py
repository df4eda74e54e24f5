"""Masking a result on the fast path gives the agent and the recording exactly what the
general path gives.

The relay masks a run of DataRows where they lie (``Relay._mask_wire``: ``scan_rows``,
``ResultMasker.mask_columns``, ``write_rows``) when the result's masker has a
``wire_plan``; otherwise, and whenever the fast path declines, through
``ResultMasker.mask_rows`` on the parsed rows (``Relay._mask_data_rows``). Here both run on
generated results (column rules of each method on text and non-text columns, content
detection on the rest, exemptions, custom entities; values with secrets, near misses,
NULLs, empty strings, NUL bytes and bytes that are not UTF-8) and must agree on the bytes
sent, the counts and the recorded sample, with the C build and with the reference.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.postgres import protocol as pg
from gateway.postgres import wirerows as pure
from gateway.tests.nativebuilds import built_or_fail
from masking import MaskingError, compile_policy
from masking.pgtypes import INT4, JSONB, TEXT

BYTEA = 17
TIMESTAMPTZ = 1184

KEY = b"wire-path-test-key-0123456"
TYPES = [TEXT, TEXT, TEXT, INT4, TIMESTAMPTZ]
SECRETS = [
    b"ann@example.com",
    b"4111111111111111",
    b"4111 1111 1111 1112",  # fails Luhn
    b"+44 20 7946 0018",
    b"ghp_Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6",
    b"rotated key ghp_Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6 and ann@example.com",
    b"10.1.2.3",
    b"ordered 3 items, delivered on time",
    b"2026-12-05 10:00:00+00",
    b"2026-12-05 10:00:00.123456+05:30 BC",
    b"01/01/2026 00:00:00 +442079460",  # DateStyle SQL, a zone abbreviation a session chose
    b"infinity",
    b"42",
    b"",
    b"[EMAIL]",
    b"caf\xc3\xa9 bob@example.org",
    b"\xff\xfe not utf-8 ann@example.com",
    b"a\x00b bob@example.org",
    b"order ORD-12345",
]
SPECS = [
    {"columns": [{"match": "public.t.c0", "method": "hash", "entity": "email"}]},
    {
        "columns": [
            {"match": "public.t.c0", "method": "partial", "entity": "card"},
            {"match": "public.t.c1", "method": "redact", "entity": "phone"},
            {"match": "public.t.c3", "method": "redact", "entity": "phone"},
        ]
    },
    {"default_method": "hash", "columns": [{"match": "public.t.c2", "method": "hash", "entity": "email"}]},
    {"entities": ["email", "card"], "default_method": "partial"},
    {"custom": [{"name": "order_id", "pattern": "ORD-[0-9]{5}"}]},
    {"exempt": [{"column": "public.t.c1", "entities": ["email"], "reason": "test"}]},
    {},
]


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


def _general(masker: Any, data: bytes, want: int) -> tuple[bytes, Any, list[Any]]:
    """What ``Relay._mask_data_rows``'s general path makes of the run: the bytes sent, the
    counts, the recorded sample (the values decoded, or left as bytes where not UTF-8)."""
    rows = pg.parse_data_rows(data, 0, len(data))[0]
    try:
        masked, counts = masker.mask_rows(rows)
    except MaskingError:
        return b"", "withheld", []
    sent = b"".join(
        pg.data_row(new) if tuple(old) != new else pg.data_row(old)
        for old, new in zip(rows, masked, strict=True)
    )
    return sent, counts, [list(row) for row in masked[:want]]


def _fast(wire: ModuleType, masker: Any, data: bytes, want: int) -> tuple[bytes, Any, list[Any]] | None:
    plan = masker.wire_plan
    scanned = wire.scan_rows(data, 0, len(data), masker.width, plan.fetch, plan.scan)
    if scanned is None:
        return None
    stop, count, fetched, joined, nulls, looked = scanned
    assert stop == len(data)
    try:
        masked = masker.mask_columns(fetched, joined, nulls, count, looked)
    except MaskingError:
        return b"", "withheld", []
    if masked is None:
        return None
    columns, changes, counts = masked
    out, sample = wire.write_rows(data, 0, stop, masker.width, columns, changes, want)
    sent = data if out is None else out
    if sample is None:
        sample = [list(row) for row in pg.parse_data_rows(sent, 0, len(sent))[0][:want]]
    else:  # decoded by write_rows: compare as the bytes they were
        sample = [[None if v is None else v.encode() for v in row] for row in sample]
    return sent, counts, sample


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.sampled_from(SPECS),
    types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=5),
    data=st.data(),
)
def test_the_fast_path_masks_as_the_general_path(
    built: ModuleType, spec: Any, types: list[int], data: Any
) -> None:
    policy = compile_policy(spec, hash_key=KEY)
    columns = [("public.t", f"c{i}") for i in range(len(types))]
    masker = policy.result_masker(columns, type_oids=types, formats=None)
    if masker.wire_plan is None:  # nothing to mask, or columns read by different scanners (exemptions)
        assert masker.passes_through or len(masker._scan_groups) > 1
        return
    rows = data.draw(
        st.lists(
            st.lists(
                st.one_of(st.none(), st.sampled_from(SECRETS)), min_size=len(types), max_size=len(types)
            ),
            max_size=40,
        )
    )
    run = pg.data_rows(rows)
    want = data.draw(st.integers(0, 25))
    # The hash placeholders a renderer keeps: empty on the fast path's first call when it
    # goes first (every lookup misses, the values go to Python), full when it goes after.
    first = _fast(built, masker, run, want) if data.draw(st.booleans()) else None
    expected = _general(masker, run, want)
    assert first is None or first == expected
    for wire in (built, pure):
        got = _fast(wire, masker, run, want)
        if got is None:  # declined: a NUL in a scanned value, or a result large enough to be dense
            assert any(
                v is not None and b"\x00" in v
                for row in rows
                for i, v in enumerate(row)
                if i in masker.wire_plan.scan
            ) or (len(rows) >= 32 and masker.wire_plan.scan)
            continue
        assert got == expected


def test_shapes_the_fast_path_leaves_to_the_general_path() -> None:
    policy = compile_policy({"columns": [{"match": "public.t.c0", "method": "redact", "entity": "email"}]})
    columns = [("public.t", "c0"), ("public.t", "c1")]
    assert policy.result_masker(columns, type_oids=[TEXT, TEXT], formats=None).wire_plan is not None
    assert policy.result_masker(columns, type_oids=[TEXT, JSONB], formats=None).wire_plan is None  # JSON
    assert (
        policy.result_masker(columns, type_oids=[TEXT, BYTEA], formats=None).wire_plan is None
    )  # read as bytea
    # Text in the binary format is the same bytes; another type's binary form is read otherwise.
    assert policy.result_masker(columns, type_oids=[TEXT, TEXT], formats=[1]).wire_plan is not None
    assert policy.result_masker(columns, type_oids=[TEXT, INT4], formats=[1]).wire_plan is None
    assert policy.result_masker(columns, type_oids=[INT4, TIMESTAMPTZ], formats=None).wire_plan is not None
    # Nothing to mask: the rows pass through unread.
    assert policy.result_masker([("public.t", "c1")], type_oids=[INT4], formats=None).wire_plan is None
