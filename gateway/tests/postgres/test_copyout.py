"""Reading COPY statements and COPY rows (sans-I/O; the end-to-end tests are in
test_masking_copy.py, where PostgreSQL itself reads the gateway's output back)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.decision import DecisionPoint
from gateway.postgres import protocol as pg
from gateway.postgres.compiled import relay as _compiled
from gateway.postgres.copyout import CopyFormat, copy_out
from gateway.tests.postgres.events import Events
from masking import compile_policy

Relay = _compiled.Relay


def test_only_copy_to_stdout_is_read():
    assert copy_out("SELECT 'copy'") is None
    assert copy_out("COPY t FROM STDIN") is None
    assert copy_out("COPY t TO '/tmp/x'") is None
    assert copy_out("COPY t TO PROGRAM 'cat'") is None
    assert copy_out("COPY t TO STDOUT; SELECT 1") is None
    assert copy_out("not sql at all, copy") is None


def test_the_probe_names_the_same_columns():
    found = copy_out('COPY app."Users" (id, "E mail") TO STDOUT')
    assert found is not None and found.format is not None and not found.format.csv
    assert found.probe == 'SELECT "id", "E mail" FROM app."Users" LIMIT 0'
    found = copy_out("copy (select a, b from t where x = 'q') to stdout with csv header")
    assert found is not None and found.format is not None and found.format.csv and found.format.header
    assert found.probe == "SELECT * FROM (SELECT a, b FROM t WHERE x = 'q') AS airlock_copy LIMIT 0"


def test_options_set_the_format():
    found = copy_out("COPY t TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'nil', QUOTE '''', ESCAPE '\\')")
    assert found is not None
    assert found.format == CopyFormat(True, b";", b"nil", b"'", b"\\", False)
    found = copy_out("COPY t TO STDOUT")
    assert found is not None and found.format == CopyFormat(False, b"\t", b"\\N", b'"', b'"', False)


def test_what_cannot_be_masked_says_why():
    binary = copy_out("COPY t TO STDOUT (FORMAT binary)")
    assert binary is not None and binary.format is None and "binary" in binary.problem
    encoding = copy_out("COPY t TO STDOUT (ENCODING 'LATIN1')")
    assert encoding is not None and encoding.format is None and "encoding" in encoding.problem
    for dml in (
        "COPY (UPDATE t SET a = 1 RETURNING a) TO STDOUT",
        "COPY (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) TO STDOUT",
        "COPY (SELECT * FROM (SELECT 1) s WHERE EXISTS (SELECT 1)) TO STDOUT",
    ):
        found = copy_out(dml)
        assert found is not None
        assert (found.probe is None) == ("UPDATE" in dml or "DELETE" in dml), dml


TEXT = CopyFormat(False, b"\t", b"\\N", b'"', b'"', False)
TEXT_COMMA = CopyFormat(False, b",", b"nil", b'"', b'"', False)
CSV = CopyFormat(True, b",", b"", b'"', b'"', False)
CSV_ODD = CopyFormat(True, b";", b"NULL", b"'", b"\\", False)
values = st.lists(
    st.one_of(st.none(), st.text(alphabet="ab\t\n\r\\\",;'x é", min_size=1, max_size=12)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_row_written_in_each_format_reads_back_the_same(row):
    for fmt in (TEXT, TEXT_COMMA, CSV, CSV_ODD):
        encoded = [v if v is None else v.encode() for v in row]
        line = fmt.join([fmt.encode(v) for v in encoded])
        raws, back = fmt.split(line)
        assert back == encoded, fmt
        assert fmt.join(raws) == line


def test_postgres_text_escapes_are_read():
    raws, values = TEXT.split(b"a\\tb\\\\c\\nd\t\\N\t\\101\\x41\\q\n")
    assert values == [b"a\tb\\c\nd", None, b"AAq"]
    assert raws == [b"a\\tb\\\\c\\nd", b"\\N", b"\\101\\x41\\q"]


def _row_description(*fields: tuple[str, int, int, int, int]) -> bytes:
    body = struct.pack("!h", len(fields))
    for name, table, attnum, type_oid, fmt in fields:
        body += name.encode() + b"\x00" + struct.pack("!IhIhih", table, attnum, type_oid, -1, -1, fmt)
    return pg.message(b"T", body)


def _relay() -> Relay:
    point = DecisionPoint(protocol="postgres", connection="c", agent="a", groups=frozenset())
    policy = compile_policy(
        {"columns": [{"match": "public.users.email", "method": "redact", "entity": "email"}]}
    )
    return Relay(point, Events(), max_message=1 << 20, result_rows=5, masking=policy)


def test_a_simple_query_copy_gets_its_probe_and_the_client_never_sees_it():
    relay = _relay()
    sent = relay.from_client(pg.query("SET x = 1; COPY users (id, email) TO STDOUT"))
    assert sent == pg.query(
        'SET x = 1; SELECT "id", "email" FROM users LIMIT 0;\nCOPY users (id, email) TO STDOUT'
    )
    relay.catalog[42] = ("public.users", {1: "id", 2: "email"})
    server = (
        pg.message(b"C", b"SET\x00")
        + _row_description(("id", 42, 1, 23, 0), ("email", 42, 2, 25, 0))
        + pg.message(b"C", b"SELECT 0\x00")
        + pg.message(b"H", b"\x00\x00\x02\x00\x00\x00\x00")
        + pg.message(b"d", b"1\tbob\\t@example.com\n")
        + pg.message(b"d", b"2\t\\N\n")
        + pg.message(b"c")
        + pg.message(b"C", b"COPY 2\x00")
        + pg.ready_for_query()
    )
    out = relay.from_server(server)
    assert out == (
        pg.message(b"C", b"SET\x00")
        + pg.message(b"H", b"\x00\x00\x02\x00\x00\x00\x00")
        + pg.message(b"d", b"1\t[EMAIL]\n")
        + pg.message(b"d", b"2\t\\N\n")
        + pg.message(b"c")
        + pg.message(b"C", b"COPY 2\x00")
        + pg.ready_for_query()
    )


def test_an_extended_protocol_copy_under_column_rules_is_withheld():
    relay = _relay()
    relay.from_client(
        pg.parse_message(b"", b"COPY users TO STDOUT")
        + pg.message(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00")
        + pg.message(b"E", b"\x00\x00\x00\x00\x00")
        + pg.message(b"S")
    )
    server = (
        pg.message(b"1")
        + pg.message(b"2")
        + pg.message(b"H", b"\x00\x00\x01\x00\x00")
        + pg.message(b"d", b"bob@example.com\n")
        + pg.message(b"c")
        + pg.message(b"C", b"COPY 1\x00")
        + pg.ready_for_query()
    )
    out = relay.from_server(server)
    assert b"bob@example.com" not in out and b"[EMAIL]" not in out
    assert b"XX000" in out and b"simple Query" in out


def test_copy_rows_arriving_in_pieces_are_masked_in_batches_and_whole():
    relay = _relay()
    relay.from_client(pg.query("COPY users (id, email) TO STDOUT (FORMAT csv, HEADER)"))
    relay.catalog[42] = ("public.users", {1: "id", 2: "email"})
    rows = b"".join(pg.message(b"d", b'%d,"a%d,@example.com"\n' % (i, i)) for i in range(50))
    server = (
        _row_description(("id", 42, 1, 23, 0), ("email", 42, 2, 25, 0))
        + pg.message(b"C", b"SELECT 0\x00")
        + pg.message(b"H", b"\x00\x00\x02\x00\x00\x00\x00")
        + pg.message(b"d", b"id,email\n")
        + rows
        + pg.message(b"c")
        + pg.message(b"C", b"COPY 50\x00")
        + pg.ready_for_query()
    )
    out = b"".join(relay.from_server(server[i : i + 97]) for i in range(0, len(server), 97))
    expected = b"".join(pg.message(b"d", b'%d,"[EMAIL]"\n' % i) for i in range(50))
    assert out == (
        pg.message(b"H", b"\x00\x00\x02\x00\x00\x00\x00")
        + pg.message(b"d", b"id,email\n")
        + expected
        + pg.message(b"c")
        + pg.message(b"C", b"COPY 50\x00")
        + pg.ready_for_query()
    )
