"""DataRow reading and writing: the interpreted module, its compiled build, and a reference.

The reference below follows the message format ("DataRow", PostgreSQL protocol 3.0) with
``struct``, independently of gateway/postgres/datarows.py. The compiled build
(``_airlock_datarows``, made by ``make venv``) must give exactly what the interpreted
source gives; ``make test`` runs with ``AIRLOCK_NATIVE=require``, so that the suite fails
rather than skips when the build is missing or stale.
"""

from __future__ import annotations

import os
import struct
import sys
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import native
from gateway.postgres import datarows as pure
from gateway.postgres import protocol as pg


def _reference_row(values: list[bytes | None]) -> bytes:
    body = struct.pack("!h", len(values)) + b"".join(
        struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v for v in values
    )
    return b"D" + struct.pack("!I", len(body) + 4) + body


def _implementations() -> list[ModuleType]:
    compiled = native.built(pure)
    if compiled is None and os.environ.get("AIRLOCK_NATIVE") == "require":
        pytest.fail("AIRLOCK_NATIVE=require but the compiled _airlock_datarows is missing or stale")
    return [pure] if compiled is None else [pure, compiled]


values_st = st.lists(
    st.none() | st.binary(max_size=40) | st.binary(min_size=4090, max_size=4200), max_size=12
)
rows_st = st.lists(values_st, max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows_st, st.binary(max_size=8), st.binary(max_size=8))
def test_every_implementation_reads_and_writes_rows_as_the_format_says(
    rows: list[list[bytes | None]], before: bytes, after: bytes
) -> None:
    expected = b"".join(_reference_row(r) for r in rows)
    # What follows the run is not a DataRow (a CommandComplete, say): it stops there.
    tail = b"C" + after
    data = before + expected + tail
    for module in _implementations():
        assert module.data_rows(rows) == expected
        assert module.data_rows([tuple(r) for r in rows]) == expected
        parsed, bounds = module.parse_data_rows(data, len(before), len(data))
        assert parsed == rows
        assert bounds[0] == len(before) and bounds[-1] == len(before) + len(expected)
        for row, start, stop in zip(rows, bounds, bounds[1:], strict=False):
            assert data[start:stop] == _reference_row(row) == module.data_row(row)
            assert module.parse_data_row(data[start + 5 : stop]) == row


def test_a_run_stops_before_an_incomplete_row() -> None:
    whole = _reference_row([b"a", None])
    data = whole + _reference_row([b"bcdef"])[:-2]
    for module in _implementations():
        assert module.parse_data_rows(data, 0, len(data)) == ([[b"a", None]], [0, len(whole)])


@pytest.mark.parametrize(
    "body",
    [
        struct.pack("!hi", 1, 10) + b"short",  # a value runs past its message
        struct.pack("!hi", 2, 1) + b"x",  # fewer values than the count
        struct.pack("!hi", 1, 2),  # a length with no bytes after it
        b"\x00",  # no room for the count
        struct.pack("!hi", 1, 0x7FFFFFFF) + b"x",  # an absurd length
    ],
)
def test_a_malformed_row_is_refused_by_every_implementation(body: bytes) -> None:
    data = b"D" + struct.pack("!I", len(body) + 4) + body
    for module in _implementations():
        with pytest.raises(ValueError, match="DataRow"):
            module.parse_data_row(body)
        with pytest.raises(ValueError, match="DataRow"):
            module.parse_data_rows(data, 0, len(data))


def test_the_protocol_module_uses_the_compiled_build_when_the_suite_requires_it() -> None:
    if os.environ.get("AIRLOCK_NATIVE") != "require":
        pytest.skip("runs under make test (AIRLOCK_NATIVE=require)")
    assert pg.parse_data_rows is not pure.parse_data_rows
    assert type(pg.parse_data_rows).__name__ == "builtin_function_or_method"


def test_a_stale_or_missing_build_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stale:
        SOURCE_SHA256 = "0" * 64

    monkeypatch.setitem(sys.modules, "_airlock_datarows", Stale)  # type: ignore[arg-type]
    monkeypatch.setenv("AIRLOCK_NATIVE", "auto")
    assert native.load(pure) is pure
    monkeypatch.setenv("AIRLOCK_NATIVE", "require")
    with pytest.raises(ImportError, match="another version"):
        native.load(pure)
    monkeypatch.setitem(sys.modules, "_airlock_datarows", None)  # type: ignore[arg-type]
    monkeypatch.setenv("AIRLOCK_NATIVE", "auto")
    assert native.load(pure) is pure
    with monkeypatch.context() as m:
        m.setenv("AIRLOCK_NATIVE", "require")
        with pytest.raises(ImportError, match="not built"):
            native.load(pure)
    monkeypatch.setenv("AIRLOCK_NATIVE", "off")
    assert native.load(pure) is pure
    monkeypatch.setenv("AIRLOCK_NATIVE", "sometimes")
    with pytest.raises(ImportError, match="expected auto, off or require"):
        native.load(pure)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.none() | st.text(max_size=20).map(str.encode) | st.binary(max_size=8), max_size=6),
        max_size=5,
    )
)
def test_rows_are_decoded_as_utf8_or_not_at_all(rows: list[list[bytes | None]]) -> None:
    try:
        expected: list[list[str | None]] | None = [
            [None if v is None else v.decode() for v in row] for row in rows
        ]
    except UnicodeDecodeError:
        expected = None
    for module in _implementations():
        assert module.decode_rows(rows) == expected
        with pytest.raises(TypeError):
            module.decode_rows([["text, not bytes"]])
