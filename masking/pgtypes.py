"""What a masked value may become, decided from its PostgreSQL type OID and format code.

The rule (MSK-03): a masked value of a text-like type is masked in place; any other type
becomes NULL, in the binary format (where a placeholder cannot be encoded as an int4 or a
timestamp) and in the text format alike (where a typed client could not parse
``[CARD]`` as a bigint). A column that should show placeholders for such a type can be
described to the client as ``text`` by the gateway, and passed here as text.
Never does a masked value pass through.

OIDs are PostgreSQL's fixed built-in ones (``pg_type.dat``); extension types such as
citext have per-database OIDs and are treated as not text-like unless the caller says so.
"""

from __future__ import annotations

from enum import Enum

NAME = 19
TEXT = 25
JSON = 114
XML = 142
UNKNOWN = 705
BPCHAR = 1042
VARCHAR = 1043
JSONB = 3802
TEXT_ARRAYS = frozenset({1003, 1009, 1014, 1015})  # _name, _text, _bpchar, _varchar

TEXT_LIKE_TYPE_OIDS = frozenset({TEXT, VARCHAR, BPCHAR, NAME, UNKNOWN, XML, JSON, JSONB})

BOOL = 16
INT2 = 21
INT4 = 23
OID = 26
# Types whose text form no built-in detector can match: a bool is "t" or "f"; an int2,
# int4 or oid is at most ten digits and a sign, where the shortest built-in entity made of
# digits alone (a payment card) has 13 and no other one is digits alone. The content
# detectors skip their values (``ResultMasker``); custom entities, which an admin writes
# and may make of digits, still read them. ``masking/tests/test_entity_free_types.py``
# runs every built-in detector over these types' values to keep this true.
ENTITY_FREE_TYPE_OIDS = frozenset({BOOL, INT2, INT4, OID})

DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
TIMETZ = 1266
# Dates and times: with DateStyle ISO (PostgreSQL's default) a value of these types is
# digits and separators no built-in detector's trigger shape matches, but another
# DateStyle writes month names and time zone abbreviations, which a session may set to any
# text. So the fast path skips a value of theirs only when it is, as a whole, an ISO date,
# time or timestamp (``gateway.postgres.wirerows.iso_datetime``) and the policy has no
# entities of its own; anything else is read as usual.
DATETIME_TYPE_OIDS = frozenset({DATE, TIME, TIMESTAMP, TIMESTAMPTZ, TIMETZ})

TEXT_FORMAT = 0
BINARY_FORMAT = 1


class ValueKind(Enum):
    TEXT = "text"  # mask in place
    JSON = "json"  # mask in place, keeping the JSON valid
    JSONB_BINARY = "jsonb-binary"  # a version byte, then JSON text
    OPAQUE = "opaque"  # text form scanned; if anything is masked the value becomes NULL
    OPAQUE_BINARY = "opaque-binary"  # binary form of another type: NULL under a rule, and
    # NULL when the detectors find something in the text it stands for (masking.scanforms)


def is_text_like_type(type_oid: int) -> bool:
    """Whether a binary-format value of this type is text that can be masked in place."""
    return type_oid in TEXT_LIKE_TYPE_OIDS


def value_kind(type_oid: int | None, format_code: int = TEXT_FORMAT) -> ValueKind:
    if type_oid is None:
        return ValueKind.TEXT
    if type_oid in (JSON, JSONB):
        if format_code == BINARY_FORMAT and type_oid == JSONB:
            return ValueKind.JSONB_BINARY
        return ValueKind.JSON
    if type_oid in TEXT_LIKE_TYPE_OIDS:
        return ValueKind.TEXT
    if format_code == BINARY_FORMAT:
        return ValueKind.OPAQUE_BINARY
    if type_oid in TEXT_ARRAYS:
        return ValueKind.TEXT
    return ValueKind.OPAQUE
