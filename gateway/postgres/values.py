"""Bound parameter values as text, for the policy and the recording (pure).

Parameters sent in text format are text already. Binary ones are decoded for the common
types whose type the client named in Parse (psycopg sends numbers this way); anything
else is shown as ``\\x`` and hex, like a bytea, so nothing is hidden or guessed.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

from masking.scanforms import binary_form


def _int(fmt: str) -> object:
    size = struct.calcsize(fmt)

    def decode(raw: bytes) -> str | None:
        return str(struct.unpack(fmt, raw)[0]) if len(raw) == size else None

    return decode


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _bool(raw: bytes) -> str | None:
    return {b"\x01": "true", b"\x00": "false"}.get(raw)


def _jsonb(raw: bytes) -> str | None:
    return _text(raw[1:]) if raw[:1] == b"\x01" else None


def _uuid(raw: bytes) -> str | None:
    return str(uuid.UUID(bytes=raw)) if len(raw) == 16 else None


_DECODERS = {
    16: _bool,
    20: _int("!q"),
    21: _int("!h"),
    23: _int("!i"),
    26: _int("!I"),
    700: _int("!f"),
    701: _int("!d"),
    25: _text,
    1043: _text,
    1042: _text,
    19: _text,
    114: _text,
    3802: _jsonb,
    2950: _uuid,
}


def text_param(raw: bytes | None) -> str | None:
    """A text-format parameter value as recorded and judged: its text, or ``\\x`` and its
    bytes in hex when they are not UTF-8."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "\\x" + raw.hex()


def param_text(raw: bytes | None, binary: bool, type_oid: int) -> str | None:
    if raw is None or not binary:
        return text_param(raw)
    decoder = _DECODERS.get(type_oid)
    value = decoder(raw) if decoder is not None else None  # type: ignore[operator]
    return value if value is not None else "\\x" + raw.hex()


def hex_bytes(value: str) -> bytes | None:
    """The bytes a value shown as ``\\x`` and hex stands for (a binary parameter of a type
    not decoded here, or a bytea in the text format), else None."""
    if not value.startswith("\\x"):
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None


def mask_param(value: str, mask: Callable[[str], str]) -> str:
    """A parameter's text as recorded or shown on an approval card, masked with ``mask``.

    A value in hex is masked in the bytes it stands for, read as UTF-8 (a binary text
    array, say, holds its elements' text as it is), and stays in hex: a secret does not
    pass as hex digits that no detector reads.
    """
    raw = hex_bytes(value)
    if raw is None:
        return mask(value)
    # Read as a result value of unknown type is (``masking.scanforms``): an array or a
    # record element by element, so that a length byte does not glue to the text after
    # it (a length of 52 is the digit "4"), anything else as its bytes. A masked value
    # is shown in that form.
    text = binary_form(None, raw).decode("utf-8", "surrogateescape")
    shown = mask(text)
    return value if shown == text else "\\x" + shown.encode("utf-8", "surrogateescape").hex()
