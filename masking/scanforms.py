"""What the content detectors read of a value that is not text as it comes (pure).

A text-format value of a text-like type is read as it is. Others hide their text from a
scan of their bytes as they come (MSK-03), though the client reads it at once:

- a binary ``int8``, ``numeric``, ``float4`` or ``float8`` (a card number stored as a
  number) is read as its decimal text, a binary ``inet`` or ``cidr`` as its address;
- a binary array or record is read element by element, each by its own type (an email
  in a ``text[]``, a composite's fields), one element per line;
- a ``bytea`` is read as the bytes it holds: its text form is hex (``\\x4111...``) or
  escapes, its binary form the bytes themselves;
- any other binary value (``citext``, ``hstore``, a range, a type of an extension...) is
  read as its bytes, length and flag bytes turned into spaces so they do not glue to
  the text beside them.

A value read this way is never masked in place: when a detector finds something in it,
the value becomes NULL (``pgtypes.ValueKind.OPAQUE``). Reading a little more than the
text (a timestamp's bytes as characters) can only make a value NULL that did not need
to be, never let one through.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

from masking.pgtypes import BOOL, ENTITY_FREE_TYPE_OIDS, INT2, INT4, OID, TEXT_LIKE_TYPE_OIDS

BYTEA = 17
INT8 = 20
FLOAT4 = 700
FLOAT8 = 701
NUMERIC = 1700
RECORD = 2249
INET = 869
CIDR = 650

_MAX_DEPTH = 8  # arrays of records of arrays...: deeper values are read as bytes
_MAX_DIMENSIONS = 6  # PostgreSQL's MAXDIM
# Control bytes (lengths, flags, OIDs inside binary values) become spaces.
_CONTROLS = bytes(range(32)) + b"\x7f"
_SPACES = bytes.maketrans(_CONTROLS, b" " * len(_CONTROLS))
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


def binary_form(type_oid: int | None, raw: bytes) -> bytes:
    """The text the detectors read of a binary-format value of type ``type_oid``."""
    return _binary(type_oid, raw, 0)


def text_form(type_oid: int | None) -> Callable[[bytes], bytes] | None:
    """For a text-format value of ``type_oid``: the reader of its text the detectors
    need, or None when they read the value as it is."""
    return bytea_text if type_oid == BYTEA else None


def bytea_text(value: bytes) -> bytes:
    """The bytes a ``bytea`` in the text format holds (hex or escape output)."""
    if value.startswith(b"\\x"):
        try:
            return bytes.fromhex(value[2:].decode("ascii")).translate(_SPACES)
        except (UnicodeDecodeError, ValueError):
            return value
    if b"\\" not in value:
        return value.translate(_SPACES)
    out = bytearray()
    i = 0
    n = len(value)
    while i < n:
        byte = value[i]
        if byte == 0x5C and value[i + 1 : i + 2] == b"\\":
            out.append(0x5C)
            i += 2
        elif byte == 0x5C and i + 4 <= n and all(0x30 <= c <= 0x37 for c in value[i + 1 : i + 4]):
            out.append(int(value[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(byte)
            i += 1
    return bytes(out).translate(_SPACES)


def _binary(type_oid: int | None, raw: bytes, depth: int) -> bytes:
    if type_oid in TEXT_LIKE_TYPE_OIDS:
        return raw
    if type_oid in ENTITY_FREE_TYPE_OIDS:
        # Read only by custom entities (the built-in ones cannot match these types).
        return _entity_free_text(type_oid, raw)
    if type_oid == INT8 and len(raw) == 8:
        return str(int.from_bytes(raw, "big", signed=True)).encode()
    if type_oid == FLOAT8 and len(raw) == 8:
        return _float_text(struct.unpack("!d", raw)[0])
    if type_oid == FLOAT4 and len(raw) == 4:
        return _float_text(struct.unpack("!f", raw)[0])
    if type_oid == NUMERIC:
        text = _numeric_text(raw)
        if text is not None:
            return text
    if type_oid == BYTEA:
        return raw.translate(_SPACES)
    if type_oid in (INET, CIDR):
        text = _inet_text(raw)
        if text is not None:
            return text
    if depth < _MAX_DEPTH:
        parts = _array_elements(raw, depth) if type_oid != RECORD else None
        if parts is None:
            parts = _record_fields(raw, depth)
        if parts is not None:
            return b"\n".join(parts)
    return raw.translate(_SPACES)


def _entity_free_text(type_oid: int | None, raw: bytes) -> bytes:
    if type_oid == BOOL and len(raw) == 1:
        return b"t" if raw[0] else b"f"
    if type_oid in (INT2, INT4, OID) and len(raw) in (2, 4):
        return str(int.from_bytes(raw, "big", signed=type_oid != OID)).encode()
    return raw.translate(_SPACES)


def _inet_text(raw: bytes) -> bytes | None:
    """A binary inet or cidr as PostgreSQL prints it (an IP address is an entity)."""
    if len(raw) < 4 or raw[3] != len(raw) - 4 or raw[3] not in (4, 16):
        return None
    ip = ipaddress.ip_address(raw[4:])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    address = f"::ffff:{mapped}" if mapped is not None else str(ip)
    full = 8 * raw[3]
    return (address if raw[1] == full and not raw[2] else f"{address}/{raw[1]}").encode()


def _float_text(value: float) -> bytes:
    # The integral ones as PostgreSQL's extra_float_digits=0 never prints them: all digits.
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value)).encode()
    return repr(value).encode()


def _numeric_text(raw: bytes) -> bytes | None:
    """A binary numeric as decimal text (None when it is not one)."""
    if len(raw) < 8:
        return None
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", raw)
    if ndigits < 0 or len(raw) != 8 + 2 * ndigits or dscale < 0:
        return None
    if sign in (0xC000, 0xD000, 0xF000):  # NaN, +Infinity, -Infinity
        return b""
    if sign not in (0x0000, 0x4000):
        return None
    digits = struct.unpack_from(f"!{ndigits}H", raw, 8) if ndigits else ()
    if any(d > 9999 for d in digits):
        return None
    text = "".join(f"{d:04d}" for d in digits) or "0"
    # The digit groups are base 10,000, the first at 10,000 ** weight.
    point = 4 * (weight + 1)
    if point <= 0:
        integral, fraction = "0", "0" * -point + text
    elif point >= len(text):
        integral, fraction = text + "0" * (point - len(text)), ""
    else:
        integral, fraction = text[:point], text[point:]
    integral = integral.lstrip("0") or "0"
    fraction = (fraction + "0" * dscale)[:dscale]  # trailing zero groups are not sent
    out = integral + ("." + fraction if fraction else "")
    return (("-" if sign == 0x4000 else "") + out).encode()


def _array_elements(raw: bytes, depth: int) -> list[bytes] | None:
    """The elements of a binary array, each read by its element type; None when ``raw``
    is not exactly one array."""
    if len(raw) < 12:
        return None
    ndim, flags = _I32.unpack_from(raw, 0)[0], _I32.unpack_from(raw, 4)[0]
    element_type = _U32.unpack_from(raw, 8)[0]
    if not 0 <= ndim <= _MAX_DIMENSIONS or flags not in (0, 1):
        return None
    pos = 12
    count = 1 if ndim else 0
    for _ in range(ndim):
        if pos + 8 > len(raw):
            return None
        size = _I32.unpack_from(raw, pos)[0]
        if size < 0:
            return None
        count *= size
        pos += 8
    if count > len(raw):  # every element takes at least its four length bytes
        return None
    return _items(raw, pos, count, element_type, depth)


def _record_fields(raw: bytes, depth: int) -> list[bytes] | None:
    """The fields of a binary record (a composite type's value), each read by its type;
    None when ``raw`` is not exactly one record."""
    if len(raw) < 4:
        return None
    count = _I32.unpack_from(raw, 0)[0]
    if count < 0 or count * 8 > len(raw) - 4:
        return None
    return _items(raw, 4, count, None, depth)


def _items(raw: bytes, pos: int, count: int, element_type: int | None, depth: int) -> list[bytes] | None:
    """``count`` length-prefixed values from ``pos`` to the end of ``raw``, each read by
    ``element_type`` (an array's) or by the type OID before its length (a record's field);
    None when they do not fill ``raw`` exactly."""
    parts: list[bytes] = []
    for _ in range(count):
        item_type = element_type
        if item_type is None:
            if pos + 4 > len(raw):
                return None
            item_type = _U32.unpack_from(raw, pos)[0]
            pos += 4
        if pos + 4 > len(raw):
            return None
        length = _I32.unpack_from(raw, pos)[0]
        pos += 4
        if length == -1:
            continue
        if length < 0 or pos + length > len(raw):
            return None
        parts.append(_binary(item_type, raw[pos : pos + length], depth + 1))
        pos += length
    return parts if pos == len(raw) else None
