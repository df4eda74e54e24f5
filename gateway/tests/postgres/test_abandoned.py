"""A gateway killed mid-session (SIGKILL: no chance to end anything) leaves its session live
and unsealed; another gateway finds it, closes it as interrupted and seals it, and the
recording verifies up to the last event the dead gateway wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg

from conftest import database_url, free_port
from gateway.tests.postgres.conftest import wait_until


def _gateway(port: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{port}"],
        env={**os.environ, "DATABASE_URL": database_url(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _connect(gw, port: int, proc: subprocess.Popen[str]) -> psycopg.Connection:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while True:
        try:
            return psycopg.connect(**gw.dsn(port=port, connect_timeout=2), autocommit=True)
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_killed_gateways_session_is_closed_as_interrupted_by_the_next_gateway(gw):
    from audit.models import AuditRecord
    from gateway.models import Connection
    from policies.actions import do_save_policy
    from recordings.models import Event, Session

    # The command uses the real decision point: a connection without a policy denies everything.
    allow_all = do_save_policy(None, "allow-all", {"default": "allow", "rules": []})
    Connection.objects.filter(name="shop").update(policy=allow_all)
    # The shortest bound the settings accept with a one-second heartbeat (2 x 1 + 10).
    timing = {"AIRLOCK_RECORDING_HEARTBEAT_SECONDS": "1", "AIRLOCK_RECORDING_ABANDONED_SECONDS": "12"}
    port = free_port()
    first = _gateway(port, **timing)
    second = None
    try:
        conn = _connect(gw, port, first)
        assert conn.execute("SELECT 6 * 7").fetchone() == (42,)
        assert conn.execute("SELECT 'it was here'").fetchone() == ("it was here",)
        session = Session.objects.get(status="live", agent_name="billing-bot")
        # Both statements written (the flush interval is 200 ms), then the gateway dies.
        wait_until(lambda: Session.objects.get(pk=session.pk).statement_count == 2, what="the statements")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        conn.close()
        written = Session.objects.get(pk=session.pk)
        assert written.status == "live" and not written.seal

        # Another gateway (on the same port: the first one's restart) closes it once it has
        # not been heard of for the bound, and not before: the heartbeat it sent a moment ago
        # still stands.
        second = _gateway(port, **timing)
        _connect(gw, port, second).close()
        assert Session.objects.get(pk=session.pk).status == "live"
        wait_until(
            lambda: Session.objects.get(pk=session.pk).status != "live", timeout=30, what="the session closed"
        )
        closed = Session.objects.get(pk=session.pk)
        seen = closed.gateway_seen_at
        assert closed.status == "interrupted"
        assert closed.ended_at is not None and seen is not None
        assert (closed.ended_at - seen).total_seconds() >= 12
        assert closed.end_reason.startswith(
            "the gateway serving it stopped without ending it: not heard of since"
        )
        events = list(Event.objects.filter(session=closed).order_by("seq").values_list("kind", "payload"))
        assert [kind for kind, _ in events] == ["session_start", "statement", "statement", "session_end"]
        assert events[-1][1] == {"reason": closed.end_reason, "status": "interrupted"}
        result = closed.verify()
        assert result.ok, result.reason
        assert result.event_count == 4 and closed.statement_count == 2
        audit = AuditRecord.objects.get(action="session.interrupted", target_id=str(closed.pk))
        assert audit.actor == "gateway" and audit.detail["events"] == 4

        # The offline check agrees: the command verifies it as any sealed session.
        check = subprocess.run(
            [sys.executable, "manage.py", "recordings", "verify", str(closed.pk)],
            env={**os.environ, "DATABASE_URL": database_url()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"ok     {closed.pk}  4 events, sealed" in check.stdout
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
                proc.wait(10)
