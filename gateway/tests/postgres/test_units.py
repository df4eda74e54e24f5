"""The sans-I/O parts, without sockets: framing, SCRAM, startup checks, splitting, the
relay's bookkeeping, the login throttle, parameter decoding."""

from __future__ import annotations

import struct

import pytest
import scramp
from hypothesis import given
from hypothesis import strategies as st

import masking.policy
from gateway.decision import DecisionPoint
from gateway.postgres import protocol as pg
from gateway.postgres.compiled import relay as _compiled
from gateway.postgres.scram import ScramError, ScramServer, fake_salt
from gateway.postgres.sqltext import prepared_names_touched, split_statements
from gateway.postgres.startup import Kind, StartupRefused, check_startup, parse_startup_packet
from gateway.postgres.values import hex_bytes, mask_param, param_text, text_param
from gateway.ratelimit import LoginThrottle
from gateway.tests.postgres.events import Events
from gateway.tests.postgres.rawclient import SYNC, bind, execute
from identity.tokens import generate_token, make_verifier, new_salt
from policies.types import Action, Decision

CONFIRM, Relay, ReviewNeeded = _compiled.CONFIRM, _compiled.Relay, _compiled.ReviewNeeded

# --- framing --------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 50), max_size=40))
def test_the_framer_returns_the_same_messages_whatever_the_chunking(bodies, cuts):
    stream = b"".join(pg.message(b"d", body) for body in bodies)
    framer = pg.Framer(max_message=1 << 20)
    got = []
    pos = 0
    for cut in cuts:
        got += framer.feed(stream[pos : pos + cut])
        pos += cut
    got += framer.feed(stream[pos:])
    assert got == [(ord("d"), body) for body in bodies]


def test_the_framer_refuses_impossible_and_oversized_lengths():
    with pytest.raises(pg.ProtocolError):
        pg.Framer(1024).feed(b"Q\x00\x00\x00\x03")
    with pytest.raises(pg.MessageTooLarge):
        pg.Framer(1024).feed(b"Q\x00\x10\x00\x00")


def test_bind_parsing_applies_one_format_code_to_every_parameter():
    body = b"p\x00s\x00" + struct.pack("!hh", 1, 1) + struct.pack("!h", 2)
    body += struct.pack("!i", 4) + b"\x00\x00\x00\x07" + struct.pack("!i", -1) + struct.pack("!h", 0)
    assert pg.parse_bind(body) == (b"p", b"s", (b"\x00\x00\x00\x07", None), (1, 1))


def test_bind_parsing_reads_the_result_formats_in_the_same_pass():
    head = b"p\x00s\x00" + struct.pack("!hh", 1, 1) + struct.pack("!h", 2)
    head += struct.pack("!i", 4) + b"\x00\x00\x00\x07" + struct.pack("!i", -1)
    body = head + struct.pack("!hhh", 2, 1, 0)
    assert pg.parse_bind_all(body) == (b"p", b"s", (b"\x00\x00\x00\x07", None), (1, 1), (1, 0))
    assert pg.parse_bind_all(head + struct.pack("!h", 0))[4] == ()
    for broken in (head, head + struct.pack("!hh", 2, 1), head + struct.pack("!h", -1)):
        with pytest.raises(pg.ProtocolError):
            pg.parse_bind_all(broken)


def test_a_text_format_parameter_is_its_text_or_its_bytes_in_hex():
    assert text_param(None) is None
    assert text_param("café 42".encode()) == "café 42"
    assert text_param(b"\xff\x00a") == "\\xff0061"
    assert param_text(b"\xff\x00a", False, 23) == text_param(b"\xff\x00a")


def test_a_parameter_description_gives_the_servers_types():
    assert pg.parse_parameter_description(struct.pack("!hII", 2, 25, 23)) == (25, 23)
    assert pg.parse_parameter_description(struct.pack("!h", 0)) == ()
    for broken in (b"", b"\x00", struct.pack("!hI", 2, 25)):
        with pytest.raises(pg.ProtocolError):
            pg.parse_parameter_description(broken)


def test_a_value_in_hex_is_masked_in_the_bytes_it_stands_for():
    def mask(text: str) -> str:
        return text.replace("dana@example.org", "[EMAIL]")

    assert hex_bytes("\\x6869") == b"hi"
    assert hex_bytes("\\xzz") is None and hex_bytes("6869") is None and hex_bytes("\\x686") is None
    assert mask_param("mail dana@example.org", mask) == "mail [EMAIL]"

    # A binary text[] holds its elements' text as it is: masked there, still in hex.
    def text_array(*elements: bytes) -> str:
        head = struct.pack("!iiIii", 1, 0, 25, len(elements), 1)
        return "\\x" + (head + b"".join(struct.pack("!i", len(e)) + e for e in elements)).hex()

    shown = mask_param(text_array(b"dana@example.org", b"x"), mask)
    assert shown == "\\x" + b"[EMAIL]\nx".hex()  # masked, shown element by element
    assert b"dana@example.org".hex() not in shown
    # The real detectors: a length byte that is a digit (52 is "4") does not glue to the
    # card number after it.
    builtin = masking.policy.compile_policy({})
    element = b"4111111111111111 is the card on file for this client"
    assert len(element) == 52
    assert (
        mask_param(text_array(element), lambda t: builtin.mask_text(t)[0])
        == "\\x" + (b"[CARD]" + element[16:]).hex()
    )
    # A bytea's hex is read as its bytes.
    assert mask_param("\\x" + b"card 4111111111111111".hex(), lambda t: builtin.mask_text(t)[0]) == (
        "\\x" + b"card [CARD]".hex()
    )
    # Bytes that are not UTF-8 survive the round trip; nothing to mask leaves the value as it is.
    plain = "\\x" + b"\xff\x00\x01abc".hex()
    assert mask_param(plain, mask) == plain
    assert mask_param("\\xnot hex dana@example.org", mask) == "\\xnot hex [EMAIL]"


def test_a_bind_parameter_running_past_the_message_is_refused():
    body = b"\x00\x00" + struct.pack("!hh", 0, 1) + struct.pack("!i", 100) + b"short"
    with pytest.raises(pg.ProtocolError):
        pg.parse_bind(body)


# --- SCRAM --------------------------------------------------------------------------------


def _exchange(server: ScramServer, token: str, username: str = "billing-bot") -> tuple[object, bytes]:
    client = scramp.ScramClient(["SCRAM-SHA-256"], username, token)
    first = server.first(client.get_client_first().encode())
    client.set_server_first(first.decode())
    matched, final = server.final(client.get_client_final().encode())
    if matched is not None:
        client.set_server_final(final.decode())  # the client checks our signature
    return matched, final


def test_scram_accepts_any_of_the_agents_tokens_and_proves_itself_to_the_client():
    salt = new_salt()
    old, new = generate_token(), generate_token()
    verifiers = [make_verifier(old, salt), make_verifier(new, salt)]
    assert _exchange(ScramServer(salt=salt, verifiers=verifiers), new)[0] == verifiers[1]
    assert _exchange(ScramServer(salt=salt, verifiers=verifiers), old)[0] == verifiers[0]


def test_scram_refuses_a_wrong_token():
    salt = new_salt()
    server = ScramServer(salt=salt, verifiers=[make_verifier(generate_token(), salt)])
    assert _exchange(server, generate_token()) == (None, b"")


def test_scram_ignores_the_user_name_in_the_scram_message():
    # libpq sends "n=" (empty); scramp sends a name; neither matters.
    salt = new_salt()
    token = generate_token()
    raw_first = b"n,,n=,r=abcdefghijklmnop"
    server = ScramServer(salt=salt, verifiers=[make_verifier(token, salt)])
    assert server.first(raw_first).startswith(b"r=abcdefghijklmnop")
    assert _exchange(ScramServer(salt=salt, verifiers=[make_verifier(token, salt)]), token, "x")[0]


def test_scram_refuses_channel_binding_it_did_not_offer():
    with pytest.raises(ScramError):
        ScramServer(salt=new_salt(), verifiers=[]).first(b"p=tls-server-end-point,,n=,r=abc")


def test_an_unknown_agent_gets_a_stable_salt_that_reveals_nothing():
    assert fake_salt(b"secret", "ghost") == fake_salt(b"secret", "ghost")
    assert fake_salt(b"secret", "ghost") != fake_salt(b"secret", "ghost2")
    assert fake_salt(b"secret", "ghost") != fake_salt(b"other", "ghost")
    server = ScramServer(salt=fake_salt(b"secret", "ghost"), verifiers=[])
    assert _exchange(server, generate_token())[0] is None


# --- startup ------------------------------------------------------------------------------


def _startup(**params: str):  # type: ignore[no-untyped-def]
    return parse_startup_packet(pg.startup_packet(params)[4:])


def test_startup_parameters_are_filtered_to_the_safe_list():
    checked = check_startup(
        _startup(user="bot", database="shop", application_name="a", work_mem="1GB", datestyle="ISO")
    )
    assert checked.upstream_params == {"application_name": "a", "DateStyle": "ISO"}
    assert (checked.agent, checked.connection, checked.negotiate) == ("bot", "shop", None)


@pytest.mark.parametrize("name", ["options", "replication", "OPTIONS"])
def test_options_and_replication_are_refused(name):
    with pytest.raises(StartupRefused) as caught:
        check_startup(_startup(user="bot", **{name: "x"}))
    assert caught.value.code == "42501"


def test_an_encoding_that_can_hide_quotes_is_refused():
    with pytest.raises(StartupRefused):
        check_startup(_startup(user="bot", client_encoding="SJIS"))


def test_pq_options_and_newer_minors_are_negotiated_down():
    packet = parse_startup_packet(pg.startup_packet({"user": "bot", "_pq_.x": "1"}, (3 << 16) | 1)[4:])
    assert check_startup(packet).negotiate == (0, ["_pq_.x"])


def test_special_startup_codes_are_recognised():
    assert parse_startup_packet(pg.ssl_request()[4:]).kind is Kind.SSL
    cancel = parse_startup_packet(pg.cancel_request(7, -9)[4:])
    assert (cancel.kind, cancel.cancel_pid, cancel.cancel_key) == (Kind.CANCEL, 7, -9)


# --- statement splitting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", ["SELECT 1"]),
        ("SELECT 1;", ["SELECT 1"]),
        ("SELECT 1; DROP TABLE t", ["SELECT 1", "DROP TABLE t"]),
        ("SELECT ';'; SELECT $$;$$", ["SELECT ';'", "SELECT $$;$$"]),
        ("SELECT 1; garbage that does not parse ((", ["SELECT 1", "garbage that does not parse (("]),
        ("a b c; d e f", ["a b c", "d e f"]),
        (";;", []),
        ("/* only ; a comment */", []),
    ],
)
def test_every_statement_of_a_query_string_is_found(text, expected):
    assert [text[a:b].strip() for a, b in split_statements(text)] == expected


@pytest.mark.parametrize(
    ("statement", "names"),
    [
        ("SELECT prepared_at FROM t", frozenset()),
        ("PREPARE Foo(int) AS SELECT $1", frozenset({"foo"})),
        ('DEALLOCATE PREPARE "Foo"', frozenset({"Foo"})),
        ("/* c */ deallocate bar", frozenset({"bar"})),
        ("DEALLOCATE ALL", None),
        ("DISCARD ALL", None),
        ("DISCARD PLANS", frozenset()),
        ("PREPARE TRANSACTION 'x'", frozenset()),
        ("DO $$ BEGIN EXECUTE 'DEALLOCATE x'; END $$", None),
    ],
)
def test_statements_that_touch_prepared_statement_names_are_recognised(statement, names):
    assert prepared_names_touched(statement) == names


# --- the relay ----------------------------------------------------------------------------


class Denier(DecisionPoint):
    def decide(self, request):  # type: ignore[no-untyped-def]
        if "forbidden" in request.statement:
            return Decision(action=Action.DENY, rule="r", message="no")
        if "ask" in request.statement:
            return Decision(action=Action.REVIEW, rule="q")
        return super().decide(request)


def _relay() -> tuple[Relay, Events]:
    events = Events()
    point = Denier(protocol="postgres", connection="c", agent="a", groups=frozenset())
    return Relay(point, events, max_message=1 << 20, result_rows=5), events


READY = pg.ready_for_query(b"I")


def test_allowed_traffic_passes_byte_for_byte():
    relay, _ = _relay()
    data = pg.query("SELECT 1") + pg.parse_message(b"", b"SELECT 2") + bind(b"", b"") + execute() + SYNC
    assert relay.from_client(data) == data


def test_a_denied_statement_is_replaced_and_its_error_rewritten():
    relay, events = _relay()
    out = relay.from_client(pg.query("SELECT 1; SELECT forbidden; SELECT 3"))
    assert relay.nonce.encode() in out and b"forbidden" not in out and b"SELECT 3" not in out
    server_error = pg.error_response(
        "22P02", f'invalid input syntax for type integer: "airlock_denied_{relay.nonce}"'
    )
    answer = pg.message(b"C", b"SELECT 1\x00") + server_error + READY
    rewritten = relay.from_server(answer)
    fields = pg.parse_fields(pg.Framer(1 << 20).feed(rewritten)[1][1])
    assert (fields["C"], fields["M"]) == ("42501", "no")
    assert (
        "decision",
        {
            "action": "deny",
            "rule": "r",
            "policy": None,
            "policy_version": None,
            "message": "no",
            "statement": "SELECT forbidden",
        },
    ) in events.events


def test_an_error_that_merely_mentions_a_marker_is_not_rewritten_without_a_denial():
    relay, _ = _relay()
    relay.from_client(pg.query("SELECT 1"))
    error = pg.error_response("42601", f"airlock_denied_{relay.nonce}")
    assert relay.from_server(error + READY) == error + READY


def test_a_failed_named_parse_in_an_earlier_batch_holds_the_next_decision():
    # Batch 1 defines "s" as something harmless that fails on the server; batch 2
    # redefines it; batch 3 executes it. Deciding batch 3 before the server has answered
    # batch 1 could judge the wrong text, so the relay waits.
    relay, _ = _relay()
    out = relay.from_client(pg.parse_message(b"s", b"SELECT 1 FROM missing") + SYNC)
    out += relay.from_client(pg.parse_message(b"s", b"SELECT forbidden") + SYNC)
    out += relay.from_client(bind(b"", b"s") + execute() + SYNC)
    assert relay.blocked == CONFIRM
    assert execute() not in out
    relay.from_server(pg.error_response("42P01", "relation missing does not exist") + READY)
    assert not relay.can_resume()  # batch 2's Parse is still unconfirmed
    relay.from_server(pg.message(b"1") + READY)
    assert relay.can_resume()
    resumed = relay.resume()
    assert relay.nonce.encode() in resumed  # judged on "SELECT forbidden": denied


def test_messages_sent_after_a_batch_error_and_before_its_sync_expect_no_answer():
    # A pipelining client may still be sending its batch when the server's error for an
    # earlier message of it arrives. The server skips what follows until Sync (docs
    # 55.2.3) and answers that Sync alone: the relay must not wait for answers to the rest.
    relay, events = _relay()
    relay.from_client(pg.parse_message(b"", b"SELECT forbidden") + bind(b"", b"") + execute())
    error = pg.error_response(
        "22P02", f'invalid input syntax for type integer: "airlock_denied_{relay.nonce}"'
    )
    answered = pg.Framer(1 << 20).feed(relay.from_server(pg.message(b"1") + pg.message(b"2") + error))
    assert pg.parse_fields(answered[2][1])["C"] == "42501"
    late = pg.parse_message(b"", b"SELECT 2") + bind(b"", b"") + execute()
    sent = relay.from_client(late)
    # Skipped by the server; an Execute is still never sent undecided, it becomes the marker.
    assert sent.startswith(pg.parse_message(b"", b"SELECT 2") + bind(b"", b""))
    assert relay.nonce.encode() in sent and not sent.endswith(execute())
    assert relay.from_client(SYNC) == SYNC
    assert relay.from_server(READY) == READY
    assert not relay.busy()
    # The session goes on normally after the Sync.
    data = pg.parse_message(b"", b"SELECT 3") + bind(b"", b"") + execute() + SYNC
    assert relay.from_client(data) == data
    answer = pg.message(b"1") + pg.message(b"2") + pg.message(b"C", b"SELECT 1\x00") + READY
    assert relay.from_server(answer) == answer
    assert not relay.busy()
    statements = [p["text"] for k, p in events.events if k == "statement"]
    assert statements == ["SELECT forbidden", "SELECT 3"]


def test_a_review_holds_the_message_until_decided():
    relay, _ = _relay()
    assert relay.from_client(pg.query("SELECT ask")) == b""
    assert isinstance(relay.blocked, ReviewNeeded)
    assert relay.from_client(pg.query("SELECT 2")) == b""
    out = relay.resume_review(Decision(action=Action.ALLOW))
    assert out == pg.query("SELECT ask") + pg.query("SELECT 2")


def test_results_are_summarised_with_their_first_rows():
    relay, events = _relay()
    relay.from_client(pg.query("SELECT x"))
    columns = b"\x00\x01x\x00" + b"\x00" * 6 + struct.pack("!ihih", 25, -1, -1, 0)
    rows = b"".join(pg.message(b"D", b"\x00\x01" + struct.pack("!i", 1) + bytes([48 + i])) for i in range(9))
    relay.from_server(pg.message(b"T", columns) + rows + pg.message(b"C", b"SELECT 9\x00") + READY)
    result = events.results()[0]
    assert result["rows"] == 9 and result["columns"] == ["x"]
    assert result["first_rows"] == [[str(i)] for i in range(5)]


def test_a_data_row_split_across_chunks_is_relayed_intact():
    relay, _ = _relay()
    relay.from_client(pg.query("SELECT big"))
    big = pg.message(b"D", b"\x00\x01" + struct.pack("!i", 3_000_000) + b"x" * 3_000_000)
    stream = big + pg.message(b"C", b"SELECT 1\x00") + READY
    out = b"".join(relay.from_server(stream[i : i + 65536]) for i in range(0, len(stream), 65536))
    assert out == stream


def test_the_upstream_backend_key_never_reaches_the_client():
    relay, _ = _relay()
    assert relay.from_server(pg.backend_key_data(1, 2)) == b""


# --- throttle and values -------------------------------------------------------------------


def test_the_throttle_forgets_failures_after_a_minute():
    now = [0.0]
    throttle = LoginThrottle(per_minute=2, clock=lambda: now[0])
    throttle.failed("10.0.0.1", "bot")
    throttle.failed("10.0.0.9", "bot")
    assert throttle.blocked("10.0.0.5", "bot") and not throttle.blocked("10.0.0.5", "other")
    now[0] = 61.0
    assert not throttle.blocked("10.0.0.5", "bot")


@pytest.mark.parametrize(
    ("raw", "binary", "oid", "text"),
    [
        (b"42", False, 0, "42"),
        (b"\x00\x00\x00\x2a", True, 23, "42"),
        (b"\x00\x2a", True, 21, "42"),
        (b"\x01", True, 16, "true"),
        (b"caf\xc3\xa9", True, 25, "café"),
        (b"\x01{}", True, 3802, "{}"),
        (b"\xde\xad", True, 17, "\\xdead"),
        (b"\x00\x00\x00\x2a", True, 0, "\\x0000002a"),
        (None, True, 23, None),
    ],
)
def test_parameters_are_shown_as_text(raw, binary, oid, text):
    assert param_text(raw, binary, oid) == text


def test_the_gateway_runs_the_compiled_relay_when_the_suite_requires_it() -> None:
    import os

    from gateway.postgres import relay as source
    from gateway.postgres import server

    if os.environ.get("AIRLOCK_NATIVE") != "require":
        pytest.skip("runs under make test (AIRLOCK_NATIVE=require)")
    assert server.Relay is Relay and server.ReviewNeeded is ReviewNeeded
    assert Relay.__module__ == "_airlock_relay" and Relay is not source.Relay
