"""The relay's masking, sans-I/O: byte-level cases a real server does not produce on demand."""

from __future__ import annotations

import itertools
import struct

import pytest

from gateway.decision import DecisionPoint
from gateway.postgres import protocol as pg
from gateway.postgres.compiled import relay as _compiled
from gateway.tests.postgres.events import Events
from masking import ResultMasker, compile_policy
from policies.types import Action, Decision

Relay = _compiled.Relay


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


def test_a_result_no_detector_can_match_goes_on_unread_and_is_sampled(monkeypatch):  # type: ignore[no-untyped-def]
    # int4 and bool columns under content detection alone (masking.pgtypes.ENTITY_FREE_TYPE_OIDS).
    relay, events = _relay()
    relay.from_client(pg.query("SELECT n, ok"))
    server = (
        _row_description(("n", 0, 0, 23, 0), ("ok", 0, 0, 16, 0))
        + pg.data_row([b"4111111111", b"t"])
        + pg.data_row([None, b"f"])
        + pg.message(b"C", b"SELECT 2\x00")
        + pg.ready_for_query()
    )
    # The masker is never asked: a call would fail this test.
    monkeypatch.setattr(ResultMasker, "mask_rows", None)
    assert relay.from_server(server) == server
    result = events.results()[0]
    assert result["first_rows"] == [["4111111111", "t"], [None, "f"]] and "masked" not in result


def test_a_custom_entity_still_reads_int4_values():
    relay, events = _relay({"custom": [{"name": "badge", "pattern": r"\b7[0-9]{5}\b"}]})
    relay.from_client(pg.query("SELECT badge"))
    tail = pg.message(b"C", b"SELECT 1\x00") + pg.ready_for_query()
    out = relay.from_server(_row_description(("badge", 0, 0, 23, 0)) + pg.data_row([b"712345"]) + tail)
    assert b"712345" not in out and pg.data_row([None]) in out
    assert events.results()[0]["masked_entities"] == {"badge": 1}


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


def test_rows_masking_leaves_alone_go_on_as_they_came_between_masked_ones():
    relay, events = _relay()
    relay.from_client(pg.query("SELECT note, n"))
    rows = [
        [b"nothing here", b"1"],
        [b"mail dana@example.org", None],
        [b"plain", None],
        [None, b"2"],
        [b"call +1 555 201 3344", b"ip 10.1.2.3"],
        [b"", b"3"],
    ]
    head = _row_description(("note", 0, 0, 25, 0), ("n", 0, 0, 25, 0))
    tail = pg.message(b"C", b"SELECT 6\x00") + pg.ready_for_query()
    out = relay.from_server(head + b"".join(pg.data_row(row) for row in rows) + tail)
    expected = [
        [b"nothing here", b"1"],
        [b"mail [EMAIL]", None],
        [b"plain", None],
        [None, b"2"],
        [b"call [PHONE]", b"ip [IP]"],
        [b"", b"3"],
    ]
    assert out == head + b"".join(pg.data_row(row) for row in expected) + tail
    result = events.results()[0]
    assert result["masked_entities"] == {"email": 1, "phone": 1, "ip": 1}
    assert result["first_rows"][:2] == [["nothing here", "1"], ["mail [EMAIL]", None]]


def test_a_data_row_whose_values_overrun_it_is_a_protocol_error():
    relay, _ = _relay()
    relay.from_client(pg.query("SELECT note"))
    # One value claiming 50 bytes in a message holding 5 of them: its read would run into
    # the next message.
    bad = pg.message(b"D", struct.pack("!hi", 1, 50) + b"short")
    server = _row_description(("note", 0, 0, 25, 0)) + bad + pg.data_row([b"x" * 60])
    with pytest.raises(pg.ProtocolError, match="malformed 'D' message"):
        relay.from_server(server)


def test_parse_data_rows_reads_every_whole_row_and_where_each_starts():
    rows = [[b"a", None, b""], [None, None, None], [b"xyz" * 100, b"1", b"2"]]
    data = b"junk" + b"".join(pg.data_row(row) for row in rows) + pg.message(b"C", b"SELECT 3\x00")
    parsed, bounds = pg.parse_data_rows(data, 4, len(data))
    assert parsed == rows
    assert [data[a:b] for a, b in itertools.pairwise(bounds)] == [pg.data_row(row) for row in rows]
    assert pg.data_rows(rows) == b"".join(pg.data_row(row) for row in rows)
    # A row cut short stays for the next read.
    cut = pg.parse_data_rows(data, 4, len(data) - 20)
    assert cut[0] == rows[:2]


@pytest.mark.parametrize(
    "rows",
    [
        [[b"plain", b"1"], [b"caf\xc3\xa9", b"2"]],  # every value UTF-8: decoded as one join
        [[b"plain", None], [None, b"2"]],  # NULLs
        [[b"\xff\xfe not UTF-8", b"1"], [b"ok", b"2"]],  # recorded as base64
        [[b"cut \xc3", b"\xa9 off"]],  # a character split across two values is no character
    ],
)
def test_the_recorded_sample_of_masked_rows_is_each_value_decoded_alone(rows):  # type: ignore[no-untyped-def]
    relay, events = _relay()
    relay.from_client(pg.query("SELECT note, n"))
    head = _row_description(("note", 0, 0, 25, 0), ("n", 0, 0, 25, 0))
    tail = pg.message(b"C", b"SELECT 2\x00") + pg.ready_for_query()
    relay.from_server(head + b"".join(pg.data_row(row) for row in rows) + tail)
    result = events.results()[0]
    expected = [relay._sample_values(row, _columns_record()) for row in rows]
    assert result["first_rows"] == expected


def _columns_record():  # type: ignore[no-untyped-def]
    """A statement record for ``_sample_values``: its columns, all text format."""
    record = _compiled._Statement("SELECT note, n", Decision(action=Action.ALLOW), 0.0)
    record.columns = [("note", 0), ("n", 0)]
    return record


def test_a_table_renamed_by_ddl_is_masked_by_its_new_identity_on_the_same_description():
    # The masker of a description is kept per session; DDL must drop it with the catalog.
    relay, _ = _relay({"columns": [{"match": "public.t.secret", "method": "redact"}]})
    description = _row_description(("s", 4242, 2, 25, 0))

    def select() -> bytes:
        relay.from_client(pg.query("SELECT s FROM t"))
        out = relay.from_server(
            description + pg.data_row([b"value"]) + pg.message(b"C", b"SELECT 1\x00") + pg.ready_for_query()
        )
        if relay.needs_catalog is not None:
            relay.supply_catalog({4242: catalog[0]})
            out += relay.from_server(b"")
        return out

    catalog = [("public.t", {2: "secret"})]
    assert pg.data_row([b"[MASKED]"]) in select()
    assert pg.data_row([b"[MASKED]"]) in select()  # the kept masker
    relay.from_client(pg.query("ALTER TABLE t RENAME TO u"))
    relay.from_server(pg.message(b"C", b"ALTER TABLE\x00") + pg.ready_for_query())
    catalog[0] = ("public.u", {2: "secret"})
    assert pg.data_row([b"value"]) in select()


def test_deferred_recording_keeps_the_order_and_never_records_a_statement_unmasked():
    # As the session runs it: events are queued and handed over after each write.
    relay, events = _relay()
    relay.defer_records = True
    sent = pg.query("SELECT 'ann@example.com' AS e")
    assert relay.from_client(sent) == sent  # what goes upstream is the agent's own text
    assert events.events == []  # nothing recorded before the statement went out
    relay.flush_records()
    assert events.events == [("statement", events.events[0][1])]
    assert events.events[0][1]["text"] == "SELECT '[EMAIL]' AS e"
    # A second statement not flushed by the caller: the server's answer flushes it first.
    relay.from_server(pg.message(b"C", b"SELECT 0\x00") + pg.ready_for_query())
    relay.from_client(pg.query("SELECT 'bob@example.com'"))
    relay.from_server(pg.message(b"C", b"SELECT 0\x00") + pg.ready_for_query())
    relay.flush_records()
    # Each result joined its statement's event (nothing was recorded in between).
    kinds = [(k, p["text"], p["result"]["command_tag"]) for k, p in events.events]
    assert kinds == [
        ("statement", "SELECT '[EMAIL]' AS e", "SELECT 0"),
        ("statement", "SELECT '[EMAIL]'", "SELECT 0"),
    ]
    assert "example.com" not in repr(events.events)


def _count_masked_texts(relay: Relay, method: str = "mask_text") -> list[str]:
    """Wraps the relay's masking so that each text its ``method`` is asked about (the
    texts it masks, by default) is listed in the list returned."""
    masking = relay.masking
    calls: list[str] = []

    class Counting:
        """The session's masking, counting the texts one of its methods is given."""

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            found = getattr(masking, name)
            if name != method:
                return found

            def counted(text):  # type: ignore[no-untyped-def]
                calls.append(text)
                return found(text)

            return counted

    relay.masking = Counting()
    return calls


def test_each_execute_of_a_prepared_statement_records_its_text_masked_and_its_parameters_afresh():
    relay, events = _relay()
    calls = _count_masked_texts(relay)
    text = b"SELECT * FROM t WHERE owner = 'ann@example.com' AND note = $1"
    relay.from_client(pg.parse_message(b"s1", text) + pg.message(b"S"))
    relay.from_server(pg.message(b"1") + pg.ready_for_query())
    for param in (b"call +44 20 7946 0000", b"plain"):
        bind = b"\x00s1\x00" + b"\x00\x00" + struct.pack("!hI", 1, len(param)) + param + b"\x00\x00"
        relay.from_client(
            pg.message(b"B", bind) + pg.message(b"E", b"\x00\x00\x00\x00\x00") + pg.message(b"S")
        )
        relay.from_server(pg.message(b"2") + pg.message(b"C", b"SELECT 0\x00") + pg.ready_for_query())
    statements = [p for kind, p in events.events if kind == "statement"]
    assert [s["text"] for s in statements] == ["SELECT * FROM t WHERE owner = '[EMAIL]' AND note = $1"] * 2
    assert [s["params"] for s in statements] == [["call [PHONE]"], ["plain"]]
    assert calls.count(text.decode()) == 1  # the text once, each parameter each time
    assert calls.count("plain") == 1


def _bind_and_execute(relay: Relay, statement: bytes, *params: bytes) -> None:
    bind = b"\x00" + statement + b"\x00" + b"\x00\x00" + struct.pack("!h", len(params))
    for param in params:
        bind += struct.pack("!I", len(param)) + param
    relay.from_client(
        pg.message(b"B", bind + b"\x00\x00") + pg.message(b"E", b"\x00\x00\x00\x00\x00") + pg.message(b"S")
    )
    relay.from_server(pg.message(b"2") + pg.message(b"C", b"SELECT 0\x00") + pg.ready_for_query())


@pytest.mark.parametrize("custom", [False, True])
def test_small_integer_parameters_are_recorded_unread_unless_the_policy_has_entities_of_its_own(custom):  # type: ignore[no-untyped-def]
    spec = {"custom": [{"name": "badge", "pattern": r"\b7[0-9]{5}\b"}]} if custom else {}
    relay, events = _relay(spec)
    calls = _count_masked_texts(relay)
    relay.from_client(pg.parse_message(b"s1", b"SELECT $1, $2, $3, $4, $5") + pg.message(b"S"))
    relay.from_server(pg.message(b"1") + pg.ready_for_query())
    params = (b"712345", b"0", b"0712345", b"-712345", b"4111111111111111")
    _bind_and_execute(relay, b"s1", *params)
    [statement] = [p for kind, p in events.events if kind == "statement"]
    recorded = statement["params"]
    assert recorded[1:4] == ["0", "0712345", "-[BADGE]" if custom else "-712345"]
    assert "4111111111111111" not in recorded[4]  # a card: masked either way
    # A leading zero, a sign or a card's length take the scanner's path; the small
    # integers do only when the policy's own entities may match them.
    read = {"712345", "0"} if custom else set()
    assert set(calls) == {"SELECT $1, $2, $3, $4, $5", "0712345", "-712345", "4111111111111111"} | read
    assert recorded[0] == ("[BADGE]" if custom else "712345")


def test_small_integer_is_inside_what_the_scanner_knows_to_be_entity_free():
    from gateway.postgres.relay import _small_integer
    from masking.scanner import entity_free_integer

    texts = [
        "0",
        "1",
        "9",
        "00",
        "01",
        "-1",
        "+1",
        " 1",
        "1 ",
        "１",
        "٣",
        "1e3",
        "",
        "999999999",
        "1000000000",
    ]
    texts += [str(n) for n in (10**k - 1 for k in range(1, 12))] + [str(7**k) for k in range(15)]
    for text in texts:
        if _small_integer(text):
            assert entity_free_integer(text), text
    assert _small_integer("999999999") and not _small_integer("1000000000")
    assert not any(_small_integer(t) for t in ("", "01", "-1", "+1", "１", "٣", " 1"))


def test_the_write_back_guard_reads_only_statements_that_write():
    from policies.engine import compile_policy as compile_rules

    events = Events()
    rules = compile_rules("open", 1, {"default": "allow", "on_parse_error": "deny", "rules": []})
    point = DecisionPoint(protocol="postgres", connection="c", agent="a", groups=frozenset(), policy=rules)
    relay = Relay(point, events, max_message=1 << 20, result_rows=5, masking=compile_policy({}))
    asked = _count_masked_texts(relay, "contains_placeholder")
    relay.from_client(
        pg.parse_message(b"r", b"SELECT * FROM t WHERE note = '[CARD]' OR note = $1") + pg.message(b"S")
    )
    relay.from_server(pg.message(b"1") + pg.ready_for_query())
    _bind_and_execute(relay, b"r", b"see [CARD]")
    assert asked == []  # a read: nothing it holds can be written back
    relay.from_client(pg.parse_message(b"w", b"UPDATE t SET note = $1") + pg.message(b"S"))
    relay.from_server(pg.message(b"1") + pg.ready_for_query())
    bind = b"\x00w\x00\x00\x00" + struct.pack("!hI", 1, 10) + b"see [CARD]" + b"\x00\x00"
    out = relay.from_client(
        pg.message(b"B", bind) + pg.message(b"E", b"\x00\x00\x00\x00\x00") + pg.message(b"S")
    )
    assert asked == ["UPDATE t SET note = $1", "see [CARD]"]
    decisions = [p for kind, p in events.events if kind == "statement"]
    assert decisions[-1]["action"] == "deny" and decisions[-1]["rule"] == "masking-write-back"
    assert b"airlock_denied_" in out  # the Execute became the failing marker statement
