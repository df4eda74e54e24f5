"""What the detectors read of values that are not text as they come (``masking.scanforms``),
checked against PostgreSQL's own binary output (its ``*_send`` functions) and text output,
and the result masker's use of it: such a value holding a secret becomes NULL (MSK-03)."""

from __future__ import annotations

import struct

import pytest
from django.db import connection

import masking.policy
from gateway import native
from masking.pgtypes import BINARY_FORMAT, INT4, TEXT, TEXT_FORMAT
from masking.scanforms import BYTEA, CIDR, FLOAT8, INET, INT8, NUMERIC, RECORD, binary_form, bytea_text

ENGINES = [masking.policy, native.load(masking.policy)]  # interpreted and, when built, compiled

pytestmark = pytest.mark.django_db


def _sent(sql: str) -> list[tuple[bytes, str]]:
    """(binary form, text form) of each row of ``sql``, which selects a ``*_send`` call and
    the value as text."""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [(bytes(raw), text) for raw, text in cursor.fetchall()]


def _reads_as_postgresqls_text(send: str, type_oid: int, values: str, cast: str = "") -> None:
    """Each of ``values`` (SQL literals) in PostgreSQL's binary form (its ``send``
    function) reads as the text PostgreSQL prints for it."""
    array = f"ARRAY[{values}]" + (f"::{cast}[]" if cast else "")
    for raw, text in _sent(f"SELECT {send}(v), concat(v) FROM unnest({array}) v"):
        assert binary_form(type_oid, raw) == text.encode(), text


NUMERICS = [
    "0", "-0.5", "1.10", "10000", "99990000", "-1", "0.0001", "0.00000000000000000001",
    "123456789012345678901234567890.123456789", "4111111111111111", "-4111111111111111.00",
    "1e-7", "12.3456789", "100000000.000001",
]  # fmt: skip


def test_a_binary_numeric_reads_as_postgresqls_text() -> None:
    _reads_as_postgresqls_text("numeric_send", NUMERIC, ",".join(f"'{v}'::numeric" for v in NUMERICS))
    for special in ("NaN", "Infinity", "-Infinity"):
        ((raw, _),) = _sent(f"SELECT numeric_send('{special}'::numeric), ''")
        assert binary_form(NUMERIC, raw) == b""


def test_any_binary_numeric_reads_as_postgresqls_text() -> None:
    import random
    from decimal import Decimal

    rng = random.Random(20261205)
    values = [Decimal(rng.randint(-(10**30), 10**30)).scaleb(-rng.randint(0, 40)) for _ in range(300)] + [
        Decimal(rng.randint(0, 10**6)).scaleb(rng.randint(0, 30)) for _ in range(100)
    ]
    _reads_as_postgresqls_text("numeric_send", NUMERIC, ",".join(f"'{v}'::numeric" for v in values))


def test_binary_integers_and_floats_read_as_their_digits() -> None:
    _reads_as_postgresqls_text(
        "int8send", INT8, "0, -1, 4111111111111111, -9223372036854775808, 9223372036854775807", "int8"
    )
    ((raw, _),) = _sent("SELECT float8send(4111111111111111), ''")
    assert binary_form(FLOAT8, raw) == b"4111111111111111"
    ((raw, _),) = _sent("SELECT float8send(1.5), ''")
    assert binary_form(FLOAT8, raw) == b"1.5"


def test_a_binary_inet_reads_as_postgresqls_text() -> None:
    _reads_as_postgresqls_text(
        "inet_send",
        INET,
        "'10.1.2.3', '10.1.2.0/24', '2001:db8::1', '2001:db8::/32', '::ffff:10.0.0.1'",
        "inet",
    )
    _reads_as_postgresqls_text("cidr_send", CIDR, "'10.1.0.0/16', '2001:db8::/32'", "cidr")


def test_a_binary_array_reads_element_by_element_by_the_elements_type() -> None:
    ((raw, _),) = _sent("SELECT array_send(ARRAY['dana@example.org', NULL, 'plain']::text[]), ''")
    assert binary_form(1009, raw) == b"dana@example.org\nplain"
    ((raw, _),) = _sent("SELECT array_send(ARRAY[[4111111111111111, 2], [3, 4]]::int8[]), ''")
    assert binary_form(1016, raw) == b"4111111111111111\n2\n3\n4"
    ((raw, _),) = _sent("SELECT array_send('{}'::text[]), ''")
    assert binary_form(1009, raw) == b""


def test_a_binary_record_reads_field_by_field_nested_ones_too() -> None:
    ((raw, _),) = _sent(
        "SELECT record_send(ROW('dana@example.org', 4111111111111111::int8, ARRAY['a', 'b'], ROW(1.25::numeric))), ''"
    )
    assert binary_form(RECORD, raw) == b"dana@example.org\n4111111111111111\na\nb\n1.25"
    # A composite type has an OID of its own: the record layout is recognised anyway.
    assert binary_form(987654, raw) == b"dana@example.org\n4111111111111111\na\nb\n1.25"


def test_bytea_reads_as_the_bytes_it_holds() -> None:
    ((raw, text),) = _sent("SELECT byteasend('4111111111111111'::bytea), '4111111111111111'::bytea::text")
    assert binary_form(BYTEA, raw) == b"4111111111111111"
    assert bytea_text(text.encode()) == b"4111111111111111"
    with connection.cursor() as cursor:
        cursor.execute("SET bytea_output = escape")
        cursor.execute("SELECT E'card\\\\0004111111111111111\\\\\\\\'::bytea::text")
        (escaped,) = cursor.fetchone()
        cursor.execute("RESET bytea_output")
    assert escaped == "card\\0004111111111111111\\\\"
    assert bytea_text(escaped.encode()) == b"card 4111111111111111\\"


def test_other_binary_values_read_as_their_bytes_with_control_bytes_as_spaces() -> None:
    assert binary_form(99999, b"dana@example.org") == b"dana@example.org"  # citext, say
    assert binary_form(99999, b"\x00\x00\x00\x10dana@example.org") == b"    dana@example.org"
    # Not what its type says (a truncated numeric, a broken array): read as bytes.
    assert binary_form(NUMERIC, b"\x00\x01") == b"  "
    assert binary_form(1009, b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x19\x00\x00\x00\x09x") == (
        b"                x"
    )


@pytest.mark.parametrize("engine", ENGINES, ids=["interpreted", "compiled"])
def test_a_binary_value_holding_a_secret_becomes_null_and_others_pass(engine) -> None:  # type: ignore[no-untyped-def]
    ((array_raw, _), (clean_raw, _)) = _sent(
        "SELECT array_send(v), '' FROM (VALUES (ARRAY['dana@example.org']), (ARRAY['plain'])) AS t (v)"
    )
    card = struct.pack("!q", 4111111111111111)
    order = struct.pack("!q", 4111111111111112)  # fails Luhn: an order number stays
    masker = engine.compile_policy({}).result_masker(
        [None, None, None, None],
        type_oids=[1009, INT8, INT4, TEXT],
        formats=[BINARY_FORMAT, BINARY_FORMAT, BINARY_FORMAT, TEXT_FORMAT],
        encoding="utf-8",
    )
    rows, counts = masker.mask_rows(
        [
            [array_raw, card, struct.pack("!i", 7), b"note"],
            [clean_raw, order, struct.pack("!i", 8), None],
        ]
    )
    assert rows == [
        (None, None, struct.pack("!i", 7), b"note"),
        (clean_raw, order, struct.pack("!i", 8), None),
    ]
    assert counts == {"email": 1, "card": 1}
    # Text-format bytea: read as the bytes it holds.
    masker = engine.compile_policy({}).result_masker(
        [None], type_oids=[BYTEA], formats=[TEXT_FORMAT], encoding="utf-8"
    )
    hexed = b"\\x" + b"4111111111111111".hex().encode()
    plain = b"\\x" + b"hello".hex().encode()
    assert masker.mask_rows([[hexed], [plain]])[0] == [(None,), (plain,)]
