"""DataRow messages read and written in one pass: the bulk of every result.

Written for mypyc as much as for the interpreter: lengths are read byte by byte (a
compiled build turns ``data[i]`` and the shifts into machine operations, where
``struct.unpack_from`` would stay a Python call), and only ints, bytes and lists are
used. ``make venv`` compiles this file (``scripts/build_native.py``) into the venv as the
module ``_airlock_datarows``; ``gateway.postgres.protocol`` uses the compiled module when
it was built from this exact source (``gateway.native``) and this file otherwise. Both
give the same results (``gateway/tests/postgres/test_datarows.py``); compiled, reading a
10-row result is about five times faster and writing one about three times.

The layout (PostgreSQL "Message Formats"): ``D``, Int32 length (itself included), Int16
number of values, then per value an Int32 length (-1: NULL) and that many bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

NULL_VALUE: Final = b"\xff\xff\xff\xff"
# A value's length as the Int32 before it, for the lengths short values have.
_PREFIXES: Final = [n.to_bytes(4, "big") for n in range(4096)]


def _prefix(length: int) -> bytes:
    return _PREFIXES[length] if length < 4096 else length.to_bytes(4, "big")


def _read_values(data: bytes, at: int, count: int, stop: int) -> list[bytes | None]:
    values: list[bytes | None] = []
    for _ in range(count):
        if at + 4 > stop:
            raise ValueError("a DataRow value runs past the end of its message")
        length = (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]
        at += 4
        if length & 0x80000000:  # negative: NULL (PostgreSQL sends -1)
            values.append(None)
        else:
            at += length
            if at > stop:
                raise ValueError("a DataRow value runs past the end of its message")
            values.append(data[at - length : at])
    return values


def parse_data_rows(data: bytes, pos: int, end: int) -> tuple[list[list[bytes | None]], list[int]]:
    """The values of the run of whole DataRow messages at ``data[pos:end]``, read in one
    pass over the buffer (no copy of each message), and the offsets of the messages:
    where each starts, then where the last one ends. Raises ValueError for a value that
    runs past the end of its message."""
    rows: list[list[bytes | None]] = []
    bounds: list[int] = [pos]
    while end - pos >= 5 and data[pos] == 68:
        length = (data[pos + 1] << 24) | (data[pos + 2] << 16) | (data[pos + 3] << 8) | data[pos + 4]
        stop = pos + 1 + length
        if stop > end:
            break
        if length < 6:
            raise ValueError("a DataRow is shorter than its header")
        rows.append(_read_values(data, pos + 7, (data[pos + 5] << 8) | data[pos + 6], stop))
        bounds.append(stop)
        pos = stop
    return rows, bounds


def parse_data_row(body: bytes) -> list[bytes | None]:
    """The values of one DataRow, given its body (after the type and length)."""
    if len(body) < 2:
        raise ValueError("a DataRow is shorter than its header")
    return _read_values(body, 2, (body[0] << 8) | body[1], len(body))


def data_rows(rows: Sequence[Sequence[bytes | None]]) -> bytes:
    """The DataRow messages of ``rows``, one after the other."""
    out: list[bytes] = []
    for values in rows:
        size = 6
        parts: list[bytes] = []
        for value in values:
            if value is None:
                parts.append(NULL_VALUE)
                size += 4
            else:
                parts.append(_prefix(len(value)))
                parts.append(value)
                size += 4 + len(value)
        out.append(b"D" + size.to_bytes(4, "big") + len(values).to_bytes(2, "big"))
        out.append(b"".join(parts))
    return b"".join(out)


def data_row(values: Sequence[bytes | None]) -> bytes:
    """One DataRow message."""
    return data_rows([values])


def decode_rows(rows: Sequence[Sequence[object]]) -> list[list[str | None]] | None:
    """Each row's values as UTF-8 text (NULL stays None), for a result all in the text
    format; None when a value is not UTF-8 (the caller records it otherwise). Raises
    TypeError for a value that is neither bytes nor None."""
    out: list[list[str | None]] = []
    for row in rows:
        texts: list[str | None] = []
        for value in row:
            if value is None:
                texts.append(None)
            elif isinstance(value, bytes):
                try:
                    texts.append(value.decode())
                except UnicodeDecodeError:
                    return None
            else:
                raise TypeError(f"a row value is bytes or None, not {type(value).__name__}")
        out.append(texts)
    return out
