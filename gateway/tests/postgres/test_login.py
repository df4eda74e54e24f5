"""Startup and login: who may connect where, and how clear the refusals are."""

from __future__ import annotations

import struct

import psycopg
import pytest

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
