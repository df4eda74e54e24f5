"""The relay's masking, sans-I/O: byte-level cases a real server does not produce on demand."""

from __future__ import annotations

import struct

from gateway.decision import DecisionPoint
from gateway.postgres import protocol as pg
from gateway.postgres.relay import Relay
from masking import compile_policy


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def append(self, kind, payload):  # type: ignore[no-untyped-def]
        self.events.append((kind, payload))


def _relay(spec=None):  # type: ignore[no-untyped-def]
    events = Events()
    point = DecisionPoint(protocol="postgres", connection="c", agent="a", groups=frozenset())
    relay = Relay(point, events, max_message=1 << 20, result_rows=5, masking=compile_policy(spec or {}))
    return relay, events


def _row_description(*fields: tuple[str, int, int, int, int]) -> bytes:
    body = struct.pack("!h", len(fields))
    for name, table, attnum, type_oid, fmt in fields:
        body += name.encode() + b"\x00" + struct.pack("!IhIhih", table, attnum, type_oid, -1, -1, fmt)
    return pg.message(b"T", body)


def _extended(relay: Relay, result_format: int) -> None:
    bind = b"\x00\x00" + b"\x00\x00" + b"\x00\x00" + struct.pack("!hh", 1, result_format)
    data = (
        pg.parse_message(b"", b"SELECT profile FROM t")
        + pg.message(b"B", bind)
        + pg.message(b"D", b"P\x00")
        + pg.message(b"E", b"\x00\x00\x00\x00\x00")
        + pg.message(b"S")
    )
    relay.from_client(data)


def test_an_unknown_binary_jsonb_version_ends_the_statement_with_an_error_not_the_data():
    relay, events = _relay()
    _extended(relay, 1)
    secret = b'{"card": "4111111111111111"}'
    server = (
        pg.message(b"1")
        + pg.message(b"2")
        + _row_description(("profile", 0, 0, 3802, 1))
        + pg.data_row([b"\x02" + secret])
        + pg.message(b"C", b"SELECT 1\x00")
        + pg.ready_for_query(b"I")
    )
    out = relay.from_server(server)
    assert b"4111111111111111" not in out
    assert b"XX000" in out and b"withheld" in out
    assert not any("4111111111111111" in repr(p) for _, p in events.events)


def test_a_row_split_across_chunks_is_masked_whole():
    relay, _ = _relay()
    relay.from_client(pg.query("SELECT note"))
    row = pg.data_row([b"mail dana@example.org now"])
    server = (
        _row_description(("note", 0, 0, 25, 0))
        + row
        + pg.message(b"C", b"SELECT 1\x00")
        + pg.ready_for_query()
    )
    cut = len(server) - 30
    out = relay.from_server(server[:cut]) + relay.from_server(server[cut:])
    assert b"dana@example.org" not in out
    assert pg.data_row([b"mail [EMAIL] now"]) in out


def test_a_clean_result_passes_byte_for_byte():
    relay, _ = _relay()
    relay.from_client(pg.query("SELECT note"))
    server = (
        _row_description(("note", 0, 0, 25, 0))
        + pg.data_row([b"nothing here"]) * 3
        + pg.message(b"C", b"SELECT 3\x00")
        + pg.ready_for_query()
    )
    assert relay.from_server(server) == server


def test_rows_wait_for_the_catalog_when_a_column_rule_could_apply():
    relay, _ = _relay({"columns": [{"match": "public.t.secret", "method": "redact"}]})
    relay.from_client(pg.query("SELECT secret AS s FROM t"))
    server = (
        _row_description(("s", 4242, 2, 25, 0))
        + pg.data_row([b"opaque-value"])
        + pg.message(b"C", b"SELECT 1\x00")
        + pg.ready_for_query()
    )
    assert relay.from_server(server) == b""
    assert relay.needs_catalog == frozenset({4242})
    relay.supply_catalog({4242: ("public.t", {1: "id", 2: "secret"})})
    out = relay.from_server(b"")
    assert b"opaque-value" not in out and pg.data_row([b"[MASKED]"]) in out
