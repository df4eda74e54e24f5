"""Startup and login: who may connect where, and how clear the refusals are."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

import psycopg
import pytest
import uvloop

from conftest import free_port
from gateway.postgres import protocol as pg
from gateway.tests.postgres.rawclient import RawSession, fields


def refusal(gw, **overrides) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.OperationalError) as caught:
        gw.connect(**overrides).close()
    return str(caught.value)


def sqlstate_of_login(gw, agent: str, token: str, dbname: str = "shop", **params: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    raw = RawSession(gw.port)
    try:
        last = raw.login(agent, token, dbname, **params)[-1]
        return fields(last[1]) if last[0] == "E" else {"C": "ok"}
    finally:
        raw.close()


def test_a_wrong_token_gets_28p01(gw):
    assert sqlstate_of_login(gw, "billing-bot", "alk_" + "x" * 43)["C"] == "28P01"


def test_an_unknown_agent_gets_the_same_28p01(gw):
    answer = sqlstate_of_login(gw, "nobody-bot", "alk_" + "x" * 43)
    assert answer["C"] == "28P01"
    assert answer["M"] == 'password authentication failed for user "nobody-bot"'


def test_an_unknown_connection_gets_3d000(gw):
    assert sqlstate_of_login(gw, "billing-bot", gw.token, dbname="nowhere")["C"] == "3D000"


def test_an_agent_outside_the_connections_groups_gets_42501(gw, make_connection):
    make_connection("finance", groups=["finance-agents"])
    answer = sqlstate_of_login(gw, "billing-bot", gw.token, dbname="finance")
    assert answer["C"] == "42501"
    assert "finance" in answer["M"]


def test_a_disabled_connection_is_unknown(gw, make_connection):
    connection = make_connection("retired")
    connection.enabled = False
    connection.save()
    assert sqlstate_of_login(gw, "billing-bot", gw.token, dbname="retired")["C"] == "3D000"


def test_an_unreachable_upstream_gets_08006_naming_the_connection_and_is_recorded(gw, make_connection):
    make_connection("down", port=free_port())
    message = refusal(gw, dbname="down")
    assert "08006" in message or 'cannot connect to connection "down"' in message
    assert 'connection "down"' in message
    session = gw.session()
    assert session.connection_name == "down" and session.end_reason == "upstream unreachable"
    assert any(k == "error" and p["code"] == "08006" for k, p in gw.events())


@pytest.mark.parametrize("role", ["md5_user", "clear_user", "trust_user", "scram_user"])
def test_every_upstream_authentication_method_works(gw, make_connection, role):
    make_connection(f"shop-{role.replace('_', '-')}", role=role)
    with gw.connect(dbname=f"shop-{role.replace('_', '-')}") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def test_a_wrong_stored_password_is_an_upstream_failure(gw, make_connection):
    make_connection("shop-badpw", secrets={"password": "not-it"})
    message = refusal(gw, dbname="shop-badpw")
    assert "password authentication failed" in message and 'connection "shop-badpw"' in message
    assert "not-it" not in message


@pytest.mark.parametrize(
    "params", [{"options": "-c session_replication_role=replica"}, {"replication": "database"}]
)
def test_options_and_replication_startup_parameters_are_refused(gw, params):
    answer = sqlstate_of_login(gw, "billing-bot", gw.token, **params)
    assert answer["C"] == "42501"
    assert next(iter(params)) in answer["M"]


def test_psycopg_options_are_refused_with_a_clear_message(gw):
    message = refusal(gw, options="-c statement_timeout=0")
    assert "not allowed through Airlock" in message


def test_unknown_startup_parameters_are_dropped_not_forwarded(gw):
    raw = RawSession(gw.port)
    try:
        messages = raw.login("billing-bot", gw.token, work_mem="1GB", application_name="raw-check")
        assert messages[-1][0] == "Z"
        body = b"SHOW work_mem\x00"
        raw.send(b"Q" + struct.pack("!I", len(body) + 4) + body)
        rows = [b for t, b in raw.until("Z") if t == "D"]
        assert b"1GB" not in rows[0]
    finally:
        raw.close()


def test_a_newer_minor_version_and_pq_options_get_negotiate_protocol_version(gw):
    raw = RawSession(gw.port)
    try:
        messages = raw.login("billing-bot", gw.token, version=(3 << 16) | 2, **{"_pq_.future_option": "on"})
        negotiation = next(b for t, b in messages if t == "v")
        minor, count = struct.unpack_from("!ii", negotiation)
        assert (minor, count) == (0, 1)
        assert negotiation[8:] == b"_pq_.future_option\x00"
        assert messages[-1][0] == "Z"
    finally:
        raw.close()


def test_ssl_and_gssenc_requests_are_declined_without_tls(gw):
    raw = RawSession(gw.port)
    try:
        raw.send(struct.pack("!ii", 8, pg.GSSENC_REQUEST_CODE))
        assert raw.sock.recv(1) == b"N"
        raw.send(pg.ssl_request())
        assert raw.sock.recv(1) == b"N"
        assert raw.login("billing-bot", gw.token)[-1][0] == "Z"
    finally:
        raw.close()
    assert gw.session().client_tls == ""  # shown as "not encrypted"


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """An event loop for the gateway under test: asyncio's, or uvloop's as the command uses."""
    return uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()


def _unverified_tls(alpn: list[str] | None) -> ssl.SSLContext:
    """A client context that names ``alpn`` (None: no ALPN) and takes any certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def _direct_tls(gw, alpn: list[str] | None) -> RawSession:  # type: ignore[no-untyped-def]
    """A session whose first bytes are a TLS handshake (libpq 17's sslnegotiation=direct)."""
    raw = RawSession(gw.port)
    raw.sock = _unverified_tls(alpn).wrap_socket(raw.sock)
    return raw


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_direct_tls_with_the_postgresql_alpn_is_served_and_other_tls_clients_are_turned_away(
    gateway_factory, loop
):
    """PostgreSQL 17's direct TLS: a ClientHello where the startup packet belongs. As
    PostgreSQL does, only a client naming the ``postgresql`` protocol in ALPN is served, so a
    TLS client of another protocol sent to this port (a browser, say) gets nothing. Run on
    both event loops: the gateway command serves on uvloop."""
    from audit.models import AuditRecord
    from gateway.tls import server_context

    gw = gateway_factory(tls_context=server_context(), loop=_new_loop(loop))
    raw = _direct_tls(gw, ["postgresql"])
    try:
        assert raw.sock.selected_alpn_protocol() == "postgresql"
        assert raw.login("billing-bot", gw.token)[-1][0] == "Z"
        body = b"SELECT 'over direct tls'\x00"
        raw.send(b"Q" + struct.pack("!I", len(body) + 4) + body)
        rows = [b for t, b in raw.until("Z") if t == "D"]
        assert rows == [struct.pack("!hi", 1, 15) + b"over direct tls"]
    finally:
        raw.close()
    for alpn in (None, ["http/1.1"]):
        raw = _direct_tls(gw, alpn)
        try:
            assert raw.sock.selected_alpn_protocol() is None
            raw.send(pg.startup_packet({"user": "billing-bot", "database": "shop"}))
            assert raw.closed()
        finally:
            raw.close()
    # A handshake that is not TLS closes that session only.
    raw = RawSession(gw.port)
    try:
        raw.send(b"\x16\x03\x01\x00\x05hello")
        assert raw.closed()
    finally:
        raw.close()
    with gw.connect(sslmode="require") as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)
    # Each session records how its agent's connection was encrypted (the refused ones were
    # never sessions); the replay page shows it.
    assert [gw.session(i).client_tls for i in range(2)] == ["TLSv1.3, direct", "TLSv1.3, SSLRequest"]
    assert len(gw.recorded) == 2  # one session per connection served, none for the handshake's end
    logins = AuditRecord.objects.filter(action="agent.login").order_by("id")
    assert [r.detail["client_tls"] for r in logins] == ["TLSv1.3, direct", "TLSv1.3, SSLRequest"]
    assert all(gw.session(i).verify().ok for i in range(2))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_direct_tls_client_hello_in_pieces_is_served(gateway_factory, loop):
    """A ClientHello need not arrive in one read (one with post-quantum key shares is larger
    than a TCP segment): sent a few bytes at a time, the handshake still completes."""
    import time

    from gateway.tls import server_context

    gw = gateway_factory(tls_context=server_context(), loop=_new_loop(loop))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _unverified_tls(["postgresql"]).wrap_bio(incoming, outgoing)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:

        def handshake_step() -> bool:
            try:
                tls.do_handshake()
                return True
            except ssl.SSLWantReadError:
                return False

        assert not handshake_step()
        hello = outgoing.read()
        for start in range(0, len(hello), 7):
            sock.sendall(hello[start : start + 7])
            time.sleep(0.001)
        done = False
        while not done:
            incoming.write(sock.recv(65536))
            done = handshake_step()
            sock.sendall(outgoing.read())
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.write(pg.startup_packet({"user": "billing-bot", "database": "shop"}))
        sock.sendall(outgoing.read())
        answer = b""
        while len(answer) < 9:
            incoming.write(sock.recv(65536))
            try:
                answer += tls.read(65536)
            except ssl.SSLWantReadError:
                pass
        # The gateway asks for SCRAM: the startup packet arrived through TLS.
        assert answer[:1] == b"R" and struct.unpack_from("!i", answer, 5)[0] == 10


def test_direct_tls_is_refused_by_a_gateway_without_a_certificate(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            _unverified_tls(["postgresql"]).wrap_socket(sock)
    assert sqlstate_of_login(gw, "billing-bot", gw.token)["C"] == "ok"


def test_failed_logins_are_rate_limited_per_address(gateway_factory):
    gw = gateway_factory(limits={"login_failures_per_minute": 3})
    for _ in range(3):
        assert sqlstate_of_login(gw, "billing-bot", "alk_" + "y" * 43)["C"] == "28P01"
    answer = sqlstate_of_login(gw, "billing-bot", gw.token)
    assert answer["C"] == "28000" and "too many failed logins" in answer["M"]


def test_a_revoked_token_is_refused(gw, billing_bot):
    from identity.actions import do_revoke_token
    from identity.models import AgentToken

    do_revoke_token("test", AgentToken.objects.get(agent=billing_bot[0]))
    assert sqlstate_of_login(gw, "billing-bot", gw.token)["C"] == "28P01"


def test_a_successful_login_marks_the_token_used(gw, billing_bot):
    from identity.models import AgentToken

    with gw.connect() as conn:
        conn.execute("SELECT 1")
    assert AgentToken.objects.get(agent=billing_bot[0]).last_used_at is not None


def test_cleartext_is_offered_only_inside_tls_and_a_bad_jwt_gets_28p01(gateway_factory, settings):
    from gateway.tls import server_context

    settings.AIRLOCK_JWT_ISSUERS = [
        {"issuer": "https://idp.invalid", "jwks_url": "https://idp.invalid/jwks", "audience": "airlock"}
    ]
    gw = gateway_factory(tls_context=server_context())
    message = refusal(gw, user="jwt-only-bot", password="eyJhbGciOiJub25lIn0.e30.", sslmode="require")
    assert "28P01" in message or "JWT" in message
    # Without TLS the same agent is asked for SCRAM, never for a cleartext password.
    raw = RawSession(gw.port)
    try:
        raw.send(pg.startup_packet({"user": "jwt-only-bot", "database": "shop"}))
        typ, body = raw.read_message()
        assert typ == "R" and struct.unpack_from("!i", body)[0] == 10
    finally:
        raw.close()


# --- logins in the audit log -------------------------------------------------------------


def test_a_login_is_one_audit_record_naming_token_agent_connection_address_and_session(gw, billing_bot):
    from audit.models import AuditRecord
    from identity.models import AgentToken

    with gw.connect(application_name="nightly-billing") as conn:
        for _ in range(5):
            conn.execute("SELECT 1")
        # Written before the agent was let in: already there.
        records = list(AuditRecord.objects.filter(action="agent.login"))
    token = AgentToken.objects.get(agent=billing_bot[0])
    session = gw.session(0)
    assert len(records) == 1  # one per login, none per statement
    record = records[0]
    assert (record.actor_kind, record.actor) == ("agent", "billing-bot")
    assert (record.target_type, record.target_id) == ("identity.agenttoken", str(token.pk))
    assert record.source_address == "127.0.0.1" == session.client_address
    assert record.detail == {
        "via": "token",
        "token_id": token.pk,
        "token": token.prefix,
        "token_label": "",
        "subject": "",
        "protocol": "postgres",
        "connection": "shop",
        "session": str(session.pk),
        "application_name": "nightly-billing",
        "client_tls": "",
    }
    assert gw.token not in str(record.detail) and token.token_hash not in str(record.detail)


def test_failed_logins_are_audited_at_a_bounded_rate(gateway_factory, billing_bot):
    from audit.models import AuditRecord
    from gateway.tests.postgres.conftest import wait_until

    gw = gateway_factory(limits={"login_failures_per_minute": 1000})
    wrong = "alk_" + "z" * 43
    for _ in range(25):
        assert sqlstate_of_login(gw, "billing-bot", wrong)["C"] == "28P01"
    for n in range(3):
        assert sqlstate_of_login(gw, f"guess-{n}", wrong)["C"] == "28P01"
    failed = AuditRecord.objects.filter(action="agent.login_failed")
    # The first failure of each (address, agent) pair is written at once (by the next flush).
    wait_until(lambda: failed.count() == 4, what="the first failures' records")
    first = failed.get(target_id=str(billing_bot[0].pk))
    assert (first.actor, first.target_type, first.source_address) == (
        "gateway",
        "identity.agent",
        "127.0.0.1",
    )
    assert first.detail["count"] == 1 and first.detail["agent"] == "billing-bot"
    assert first.detail["reasons"] == {'28P01 password authentication failed for user "billing-bot"': 1}
    assert sorted(r.detail["agent"] for r in failed.filter(target_id="")) == ["guess-0", "guess-1", "guess-2"]
    assert wrong not in str(list(failed.values_list("detail", flat=True)))

    # The repeats are one record when the window closes (here: when the gateway stops).
    gw.thread.call(gw.thread.gateway.close(grace_seconds=20), timeout=40)
    repeats = failed.filter(detail__aggregated=True)
    assert [(r.detail["agent"], r.detail["count"]) for r in repeats] == [("billing-bot", 24)]
    assert failed.count() == 5


def test_the_failed_login_log_groups_repeats_per_window_and_caps_pairs():
    from gateway import login_audit
    from gateway.login_audit import PAIRS_PER_WINDOW, LoginFailureLog

    now = [0.0]
    log = LoginFailureLog(clock=lambda: now[0], wall=lambda: f"t{now[0]}")
    for _ in range(10):
        log.failed("10.0.0.1", "billing-bot", "28P01", "bad token")
    assert [(r["agent"], r["count"]) for r in log.take()] == [("billing-bot", 1)]
    assert log.take() == []  # the repeats wait for the window's end
    for n in range(PAIRS_PER_WINDOW + 30):
        log.failed(f"10.0.1.{n}", "x-bot", "28P01", "bad token")
    assert len(log.take()) == PAIRS_PER_WINDOW - 1  # one pair already has its record
    now[0] = login_audit.WINDOW_SECONDS
    log.failed("10.0.0.1", "billing-bot", "28P01", "bad token")  # a new window
    records = log.take()
    aggregated = [r for r in records if r.get("aggregated")]
    overflow = [r for r in records if r.get("overflow")]
    assert [(r["agent"], r["count"], r["first_at"], r["last_at"]) for r in aggregated] == [
        ("billing-bot", 9, "t0.0", "t0.0")
    ]
    # 80 new pairs, 49 of them with a slot left in the window: 31 summed into one record.
    assert [(r["count"], r["pairs"], len(r["addresses"])) for r in overflow] == [(31, 31, login_audit.SAMPLE)]
    # And the first failure of the new window is written at once again.
    assert [
        (r["agent"], r["count"]) for r in records if not r.get("aggregated") and not r.get("overflow")
    ] == [("billing-bot", 1)]
