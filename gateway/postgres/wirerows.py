"""Masking a result's DataRows where they lie in the buffer: the two passes of the fast path.

The general path (``Relay._mask_data_rows`` through ``ResultMasker.mask_rows``) turns every
value of a result into a Python object, transposes the rows into columns and back, and
encodes every changed row again: at a few rows per result, more work than the masking
itself. For a result whose shape allows it (``ResultMasker.wire_plan``: every column in
the text format and read as it comes, one scanner at most), the gateway instead

1. reads the run of DataRows once (``scan_rows``): only the values a column rule's
   renderer needs as objects (``fetch``) become bytes, and a ``hash`` column's values are
   first looked up in the renderer's placeholder cache (none become objects when all are
   there); the values the content detectors read are joined with NUL column by column,
   in one bytes object, as ``Scanner.dirty_indices`` joins them; NULLs are counted per
   column;
2. masks in Python what needs Python (``ResultMasker.mask_columns``: the rules' renderers
   on what was fetched, the trigger scan over the joined values, the detectors on the few
   values it flags);
3. writes the rows out (``write_rows``): each column's replacement values, a constant for
   every value of a redacted column, a ``partial`` column's placeholders made from its
   values, the single values the detectors masked; a row
   nothing changed goes on as it came, byte for byte, the others are encoded anew (as
   ``Relay._mask_data_rows`` does on the general path); and the first rows decoded as
   UTF-8 text for the recording's sample.

This module is the reference; ``gateway/postgres/_wirerows.c`` is the same two functions
in C, built by ``make venv`` as ``_airlock_wirerows`` and used through
``gateway.native.load`` when it was built from this exact source and that file. It must
return exactly what this module returns for any input, malformed included
(``gateway/tests/postgres/test_wirerows.py`` compares the two; the sanitized build runs
in ``gateway/tests/test_native_sanitized.py``).

The layout (PostgreSQL "Message Formats"): ``D``, Int32 length (itself included), Int16
number of values, then per value an Int32 length (-1: NULL) and that many bytes.
"""

from __future__ import annotations

import re
from typing import Any

# A date, a time or a timestamp as PostgreSQL writes one with DateStyle ISO (its default),
# with a four-digit year: ``2026-12-05``, ``17:52:33.512345+05:30``, ``2026-12-05
# 17:52:33+00 BC``, ``infinity``. No trigger shape of the masking engine matches such a
# text (``gateway/tests/postgres/test_wirerows.py`` proves it shape by shape), so when the
# policy has no entities of its own the detectors have nothing to find in it.
_ISO_DATETIME = re.compile(
    rb"-?infinity"
    rb"|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    rb"(?: [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[+-][0-9]{2}(?::[0-9]{2}){0,2})?)?(?: BC)?"
    rb"|[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[+-][0-9]{2}(?::[0-9]{2}){0,2})?"
)


def iso_datetime(value: bytes) -> bool:
    """Whether ``value`` is all one ISO date, time or timestamp (``_ISO_DATETIME``)."""
    return _ISO_DATETIME.fullmatch(value) is not None


def _u32(data: bytes, at: int) -> int:
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]


def _check_bounds(data: bytes, pos: int, end: int) -> None:
    if not 0 <= pos <= end <= len(data):
        raise ValueError("the run's bounds are outside the buffer")


def _check_width(width: int) -> None:
    if not 0 <= width <= 0xFFFF:
        raise ValueError("a row holds 0 to 65535 values")


def _spans(data: bytes, pos: int, end: int) -> tuple[int, list[tuple[int, int, list[int]]]] | None:
    """Where the run of whole DataRows at ``data[pos:end]`` stops, and each row's (start,
    stop, value offsets: start and length of each value, -1 for NULL); None when a value
    runs past its message or a message is shorter than its header."""
    rows: list[tuple[int, int, list[int]]] = []
    while end - pos >= 5 and data[pos] == 68:
        stop = pos + 1 + _u32(data, pos + 1)
        if stop > end:
            break
        if stop - pos < 7:
            return None
        count = (data[pos + 5] << 8) | data[pos + 6]
        at = pos + 7
        offsets: list[int] = []
        for _ in range(count):
            if at + 4 > stop:
                return None
            length = _u32(data, at)
            at += 4
            if length & 0x80000000:
                offsets.append(-1)
                offsets.append(0)
            else:
                if at + length > stop:
                    return None
                offsets.append(at)
                offsets.append(length)
                at += length
        rows.append((pos, stop, offsets))
        pos = stop
    return pos, rows


def _looked_up(column: list[bytes | None], cache: dict[int, bytes]) -> list[bytes | None] | None:
    """Each value's entry in ``cache`` (keyed by Python's hash of the value), None for NULL;
    None when a value is not ASCII or has no entry (or one that is not bytes)."""
    out: list[bytes | None] = []
    for value in column:
        if value is None:
            out.append(None)
            continue
        if not value.isascii():
            return None
        found = cache.get(hash(value))
        if not isinstance(found, bytes):
            return None
        out.append(found)
    return out


def scan_rows(
    data: bytes,
    pos: int,
    end: int,
    width: int,
    fetch: tuple[Any, ...],
    scan: tuple[int, ...],
    quiet: tuple[int, ...] = (),
) -> tuple[int, int, list[list[bytes | None]], bytes, list[int], list[bool]] | None:
    """Read the run of whole DataRows at ``data[pos:end]`` (up to the first message that is
    not a DataRow or not whole): where the run stops, how many rows it holds, the values of
    the columns ``fetch`` names (a list per column, None for NULL), the values of the
    columns ``scan`` names joined with NUL, column after column (NULL as empty), how many
    NULLs each of the ``width`` columns holds, and for each column of ``fetch`` whether its
    list holds looked-up entries rather than values.

    An entry of ``fetch`` is a column index, or ``(index, cache)``: the column's values
    looked up in ``cache`` (a dict keyed by Python's hash of a value: ``Renderer``'s hash
    placeholders), the entries given instead of the values when every value that is not
    NULL is ASCII and has one.

    A value of a column ``quiet`` names that is all one ISO date, time or timestamp
    (``iso_datetime``) is joined as an empty value, as a NULL is: the detectors have
    nothing to read in it (the caller names only columns of those types, and only when
    the policy has no entities of its own).

    None, for the general path to take (and report), when a row is malformed or has another
    number of values than ``width``, when a column index is out of range, or when a scanned
    value holds NUL itself (the join could not tell values apart). Raises ValueError unless
    ``0 <= pos <= end <= len(data)`` and ``0 <= width <= 65535``, TypeError unless ``scan``
    is a tuple of ints and ``fetch`` a tuple of ints and (int, dict) pairs."""
    _check_bounds(data, pos, end)
    _check_width(width)
    if not isinstance(fetch, tuple) or not all(
        isinstance(f, int)
        or (isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], int) and type(f[1]) is dict)
        for f in fetch
    ):
        raise TypeError("fetch is a tuple of column indices and (index, cache) pairs")
    if not isinstance(scan, tuple) or not all(isinstance(i, int) for i in scan):
        raise TypeError("scan is a tuple of column indices")
    if not isinstance(quiet, tuple) or not all(isinstance(i, int) for i in quiet):
        raise TypeError("quiet is a tuple of column indices")
    fetch_at = [f if isinstance(f, int) else f[0] for f in fetch]
    if any(not 0 <= i < width for i in (*fetch_at, *scan, *quiet)):
        return None
    found = _spans(data, pos, end)
    if found is None:
        return None
    stop, rows = found
    if any(len(offsets) != 2 * width for _, _, offsets in rows):
        return None
    fetched: list[list[bytes | None]] = []
    looked: list[bool] = []
    for entry, index in zip(fetch, fetch_at, strict=True):
        column: list[bytes | None] = []
        for _, _, offsets in rows:
            at = offsets[2 * index]
            column.append(None if at < 0 else data[at : at + offsets[2 * index + 1]])
        entries = None if isinstance(entry, int) else _looked_up(column, entry[1])
        fetched.append(column if entries is None else entries)
        looked.append(entries is not None)
    parts: list[bytes] = []
    for index in scan:
        dates = index in quiet
        for _, _, offsets in rows:
            at = offsets[2 * index]
            value = b"" if at < 0 else data[at : at + offsets[2 * index + 1]]
            if b"\x00" in value:
                return None
            parts.append(b"" if dates and iso_datetime(value) else value)
    nulls = [sum(1 for _, _, offsets in rows if offsets[2 * index] < 0) for index in range(width)]
    return stop, len(rows), fetched, b"\x00".join(parts), nulls, looked


def _partial(value: bytes, prefix: bytes, redacted: bytes, minimum: int, keep: int) -> bytes:
    """``Renderer.partial_bytes``: the value's ASCII letters and digits, the last ``keep`` of
    them shown behind ``prefix`` when there are at least ``minimum``, else ``redacted``."""
    kept = bytes(b for b in value if b < 128 and chr(b).isalnum())
    return redacted if len(kept) < minimum or keep <= 0 else prefix + kept[-keep:] + b"]"


def _is_partial(column: object) -> bool:
    return (
        isinstance(column, tuple)
        and len(column) == 4
        and isinstance(column[0], bytes)
        and isinstance(column[1], bytes)
        and isinstance(column[2], int)
        and isinstance(column[3], int)
    )


def _encoded(values: list[bytes | None]) -> bytes:
    size = 6 + sum(4 + (0 if v is None else len(v)) for v in values)
    if size > 0x7FFFFFFF:
        raise ValueError("write_rows: a row would outgrow a message")
    out = [b"D", size.to_bytes(4, "big")]
    out.append(len(values).to_bytes(2, "big"))
    for value in values:
        out.append(b"\xff\xff\xff\xff" if value is None else len(value).to_bytes(4, "big") + value)
    return b"".join(out)


def write_rows(
    data: bytes,
    pos: int,
    end: int,
    width: int,
    columns: list[Any],
    changes: list[Any],
    sample: int,
) -> tuple[bytes | None, list[list[str | None]] | None]:
    """The run of DataRows at ``data[pos:end]`` (as ``scan_rows`` read it, every row of
    ``width`` values) with its values replaced: ``columns[i]`` says what becomes of column
    ``i`` (None: the wire's values; bytes: that constant for each value that is not NULL;
    a list: one value per row, bytes or None for NULL; ``(prefix, redacted, minimum,
    keep)``: each value that is not NULL masked as ``Renderer.partial_bytes`` masks it, the
    last ``keep`` of its ASCII letters and digits behind ``prefix`` when it has at least
    ``minimum`` of them, else ``redacted``), then each ``(column, row, value)`` of
    ``changes`` sets one value. A row whose values all come out equal to the wire's is
    copied as it came; the others are encoded anew.

    Returns the bytes of the run (None when no row changed) and the first ``sample`` rows'
    values decoded as UTF-8 (None for NULL), or None for the sample when one of them is not
    UTF-8 (the caller records those otherwise). Raises ValueError as ``scan_rows`` does for
    the bounds and the width, when the run is not what
    ``scan_rows`` accepts (and ends at ``end``), ``columns`` is not a list of ``width``
    instructions, a column list has another length than the rows, a change is not a
    ``(column, row, value)`` tuple in range, a value is neither bytes nor None, or a row
    would outgrow a message."""
    _check_bounds(data, pos, end)
    _check_width(width)
    found = _spans(data, pos, end)
    if found is None or found[0] != end or not isinstance(columns, list) or len(columns) != width:
        raise ValueError("write_rows: not a run of whole DataRows of this width")
    rows = found[1]
    if any(len(offsets) != 2 * width for _, _, offsets in rows):
        raise ValueError("write_rows: not a run of whole DataRows of this width")
    for column in columns:
        if isinstance(column, list):
            if len(column) != len(rows):
                raise ValueError("write_rows: a column's values do not match the rows")
            if any(v is not None and not isinstance(v, bytes) for v in column):
                raise ValueError("write_rows: a value is neither bytes nor None")
        elif column is not None and not isinstance(column, bytes) and not _is_partial(column):
            raise ValueError("write_rows: a column is neither None, bytes, a list nor a partial")
    if not isinstance(changes, list):
        raise ValueError("write_rows: the changes are a list")
    single: dict[tuple[int, int], bytes | None] = {}
    for change in changes:
        if not isinstance(change, tuple) or len(change) != 3:
            raise ValueError("write_rows: a change is (column, row, value)")
        index, row, value = change
        if not (isinstance(index, int) and isinstance(row, int)) or not (
            0 <= index < width and 0 <= row < len(rows)
        ):
            raise ValueError("write_rows: a change is out of range")
        if value is not None and not isinstance(value, bytes):
            raise ValueError("write_rows: a value is neither bytes nor None")
        single[index, row] = value
    out: list[bytes] = []
    changed = False
    texts: list[list[str | None]] | None = []
    for r, (start, stop, offsets) in enumerate(rows):
        values: list[bytes | None] = []
        same = True
        for i in range(width):
            at = offsets[2 * i]
            old = None if at < 0 else data[at : at + offsets[2 * i + 1]]
            column = columns[i]
            if isinstance(column, list):
                new = column[r]
            elif column is None or old is None:
                new = old
            elif isinstance(column, tuple):
                new = _partial(old, *column)
            else:
                new = column
            if (i, r) in single:
                new = single[i, r]
            if new != old:
                same = False
            values.append(new)
        if same:
            out.append(data[start:stop])
        else:
            changed = True
            out.append(_encoded(values))
        if texts is not None and r < sample:
            try:
                texts.append([None if v is None else v.decode() for v in values])
            except UnicodeDecodeError:
                texts = None
    return (b"".join(out) if changed else None), texts
