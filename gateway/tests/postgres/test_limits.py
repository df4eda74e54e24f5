"""Limits: a malformed or oversized message ends only its own session; timeouts; caps."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import free_port
from gateway.tests.postgres.conftest import wait_until
from gateway.tests.postgres.rawclient import RawSession, fields


def _fatal(raw: RawSession) -> dict[str, str]:
    typ, body = raw.read_message()
    assert typ == "E"
    return fields(body)


def test_a_malformed_message_closes_only_that_session(gw):
    with gw.connect(autocommit=True) as bystander:
        raw = RawSession(gw.port)
        assert raw.login("billing-bot", gw.token)[-1][0] == "Z"
        raw.send(b"Q\x00\x00\x00\x02")  # a length below the minimum of 4
        error = _fatal(raw)
        assert error["C"] == "08P01" and error["V"] == "FATAL"
        assert raw.closed()
        raw.close()
        assert bystander.execute("SELECT 41 + 1").fetchone() == (42,)
    session = gw.session(1)
    assert session.status == "terminated" and "protocol error" in session.end_reason


def test_an_unknown_message_type_closes_only_that_session(gw):
    with gw.connect(autocommit=True) as bystander:
        raw = RawSession(gw.port)
        raw.login("billing-bot", gw.token)
        raw.send(b"z\x00\x00\x00\x04")
        assert _fatal(raw)["C"] == "08P01"
        raw.close()
        assert bystander.execute("SELECT 1").fetchone() == (1,)


def test_an_oversized_message_closes_only_that_session(gateway_factory):
    gw = gateway_factory(limits={"max_message": 64 * 1024})
    with gw.connect(autocommit=True) as bystander:
        raw = RawSession(gw.port)
        raw.login("billing-bot", gw.token)
        raw.send(b"Q" + struct.pack("!I", 10 * 1024 * 1024))  # announces 10 MiB
        error = _fatal(raw)
        assert error["C"] == "54000" and "exceeds" in error["M"]
        raw.close()
        assert bystander.execute("SELECT repeat('x', 1000)").fetchone() == ("x" * 1000,)
        with pytest.raises(psycopg.OperationalError):
            bystander.execute("SELECT %s::text", ("y" * 100_000,))


def test_a_garbage_startup_packet_is_refused(gw):
    raw = RawSession(gw.port)
    try:
        raw.send(struct.pack("!i", 3) + b"xx")
        assert _fatal(raw)["C"] == "08P01"
    finally:
        raw.close()


def test_an_unsupported_protocol_version_is_refused(gw):
    raw = RawSession(gw.port)
    try:
        raw.send(struct.pack("!ii", 8, 2 << 16))
        assert _fatal(raw)["C"] == "0A000"
    finally:
        raw.close()


def test_an_idle_session_is_closed(gateway_factory):
    gw = gateway_factory(limits={"idle_timeout": 0.5})
    conn = gw.connect(autocommit=True)
    try:
        conn.execute("SELECT 1")
        wait_until(lambda: gw.session(ended=False).status != "live" or _refreshed(gw), what="idle close")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    assert gw.session().end_reason == "idle timeout"


def _refreshed(gw) -> bool:  # type: ignore[no-untyped-def]
    from recordings.models import Session

    return Session.objects.get(id=gw.recorded[-1].session_id).status != "live"


def test_a_running_statement_is_not_idle(gateway_factory):
    gw = gateway_factory(limits={"idle_timeout": 0.3})
    with gw.connect(autocommit=True) as conn:
        assert conn.execute("SELECT pg_sleep(1.2), 5").fetchone() == ("", 5)


def test_the_session_time_limit_ends_a_busy_session(gateway_factory):
    gw = gateway_factory(limits={"session_timeout": 1.0})
    with gw.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError, match="time limit"):
            conn.execute("SELECT pg_sleep(10)")
    assert gw.session().end_reason == "session time limit reached"


def test_sessions_beyond_the_maximum_are_refused(gateway_factory):
    gw = gateway_factory(limits={"max_sessions": 2})
    with gw.connect() as first, gw.connect() as second:
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            gw.connect().close()
        assert first.execute("SELECT 1").fetchone() == (1,)
        assert second.execute("SELECT 1").fetchone() == (1,)


def test_the_gateway_command_serves_and_stops_cleanly_on_sigterm(gw, make_connection):
    from django.db import connection as db

    from gateway.models import Connection
    from policies.actions import do_save_policy

    # The command uses the real decision point: a connection without a policy denies everything.
    allow_all = do_save_policy(None, "allow-all", {"default": "allow", "rules": []})
    Connection.objects.filter(name="shop").update(policy=allow_all)

    port = free_port()
    env = dict(os.environ)
    settings_db = db.settings_dict
    env["DATABASE_URL"] = (
        f"postgres://{settings_db['USER']}@{settings_db['HOST'] or '127.0.0.1'}:{settings_db['PORT'] or 5432}/{settings_db['NAME']}"
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        conn = None
        while conn is None:
            try:
                conn = psycopg.connect(**gw.dsn(port=port, connect_timeout=2))
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert conn.execute("SELECT 7").fetchone() == (7,)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "shutting down" in output
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()
    finally:
        proc.kill()


def test_a_server_side_termination_ends_the_session_with_a_clear_error(gw):
    with gw.connect(autocommit=True, application_name="to-be-killed") as conn:
        with gw.pg.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'to-be-killed'"
            )
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    session = gw.session()
    assert session.status == "terminated"


def test_a_session_whose_recording_cannot_be_persisted_is_ended(gw, settings):
    """REC-01: in strict mode a session does not go on unrecorded."""
    from django.db import connection as db

    settings.RECORDING_PERSIST_TIMEOUT = 1
    settings.RECORDING_STRICT = True
    conn = gw.connect(autocommit=True)
    params = db.settings_dict
    blocker = psycopg.connect(
        host=params["HOST"] or "127.0.0.1",
        port=params["PORT"] or 5432,
        user=params["USER"],
        dbname=params["NAME"],
    )
    try:
        # Hold the events table so that the writer's inserts wait past the timeout.
        blocker.execute("LOCK TABLE recordings_event IN ACCESS EXCLUSIVE MODE")
        conn.execute("SELECT 1")
        deadline = time.monotonic() + 20
        with pytest.raises(psycopg.OperationalError, match="can no longer be recorded"):
            while time.monotonic() < deadline:
                conn.execute("SELECT 1")
                time.sleep(0.05)
    finally:
        blocker.rollback()
        blocker.close()
        conn.close()
    assert gw.session().end_reason.startswith("recording failed")


def test_shutdown_ends_a_session_that_is_still_logging_in(gateway_factory):
    gw = gateway_factory()
    raw = RawSession(gw.port)
    try:
        raw.send(b"\x00\x00")  # half a startup packet, then nothing
        wait_until(lambda: len(gw.thread.gateway.sessions) == 1, what="the session to be accepted")
        started = time.monotonic()
        gw.thread.call(gw.thread.gateway.close(grace_seconds=20), timeout=30)
        assert time.monotonic() - started < 5
        assert _fatal(raw)["C"] == "57P01"
    finally:
        raw.close()
