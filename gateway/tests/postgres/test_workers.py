"""Several gateway processes on one port (``manage.py gateway --workers N``): cancel
requests reach the process that holds the session, whichever process they arrive at."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import database_url, free_port
from gateway.postgres import protocol as pg
from gateway.postgres.server import PostgresGateway, Workers
from gateway.tests.postgres.conftest import wait_until
from gateway.tests.postgres.rawclient import RawSession, fields

ROOT = Path(__file__).resolve().parents[3]


def _sockets(tmp_path: Path, count: int) -> tuple[str, ...]:
    return tuple(str(tmp_path / f"w{index}.sock") for index in range(count))


@pytest.mark.django_db
def test_a_workers_cancel_keys_name_it(tmp_path):
    gateway = PostgresGateway(workers=Workers(index=1, count=3, sockets=_sockets(tmp_path, 3)))
    pids = {gateway.new_cancel_key(object())[0] for _ in range(300)}  # type: ignore[arg-type]
    assert len(pids) > 250  # still random
    assert all(pid % 3 == 1 and 0 < pid < 1 << 31 for pid in pids)


def test_workers_reject_an_index_outside_the_set(tmp_path):
    with pytest.raises(ValueError):
        Workers(index=2, count=2, sockets=_sockets(tmp_path, 2))


def _running(env, text: str) -> bool:  # type: ignore[no-untyped-def]
    with env.pg.admin() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'"
        return bool(conn.execute(query, (text,)).fetchone()[0])


@pytest.mark.timeout(60)
def test_a_cancel_request_reaching_another_worker_is_passed_to_the_sessions_worker(gateway_factory, tmp_path):
    sockets = _sockets(tmp_path, 2)
    first = gateway_factory(workers=Workers(index=0, count=2, sockets=sockets))
    second = gateway_factory(workers=Workers(index=1, count=2, sockets=sockets))
    raw = RawSession(first.port, timeout=15)
    try:
        seen = raw.login("billing-bot", first.token)
        pid, key = struct.unpack("!ii", next(body for typ, body in seen if typ == "K"))
        assert pid % 2 == 0 and seen[-1][0] == "Z"
        raw.send(pg.query("SELECT pg_sleep(30)"))
        wait_until(lambda: _running(first, "SELECT pg_sleep(30)"), what="pg_sleep to start")
        # The CancelRequest arrives at the other process (as SO_REUSEPORT may send it).
        with socket.create_connection(("127.0.0.1", second.port), timeout=10) as cancel:
            cancel.sendall(pg.cancel_request(pid, key))
            assert cancel.recv(1) == b""  # answered by closing, as PostgreSQL does
        errors = [fields(body) for typ, body in raw.until("Z") if typ == "E"]
        assert [e.get("C") for e in errors] == ["57014"]
        assert "canceling statement due to user request" in errors[0].get("M", "")
    finally:
        raw.close()


class Supervisor:
    """``manage.py gateway --workers 2`` on a free port, in a real process."""

    def __init__(self) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "AIRLOCK_GATEWAY_WORKERS": "2",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{self.port}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.children: list[int] = []

    def wait_listening(self) -> None:
        assert self.proc.stdout is not None
        listening = [self.proc.stdout.readline() for _ in range(2)]
        assert listening == [f"postgres gateway listening on 127.0.0.1:{self.port}\n"] * 2
        self.children = [
            int(pid)
            for pid in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        ]
        assert len(self.children) == 2

    def workers_gone(self) -> bool:
        return not any(_alive(child) for child in self.children)

    def stop(self) -> None:
        """Whatever happened in the test, nothing is left running."""
        for pid in [*self.children, self.proc.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be read


@pytest.mark.timeout(120)
def test_the_gateway_command_runs_its_workers_on_one_port_and_stops_them(transactional_db):
    supervisor = Supervisor()
    try:
        supervisor.wait_listening()
        for _ in range(4):  # whichever worker takes it, the port answers
            with socket.create_connection(("127.0.0.1", supervisor.port), timeout=10) as client:
                client.sendall(struct.pack("!ii", 8, pg.SSL_REQUEST_CODE))
                assert client.recv(1) in (b"S", b"N")  # TLS offered or not: the port answers
        supervisor.proc.send_signal(signal.SIGTERM)
        assert supervisor.proc.wait(60) == 0
        assert supervisor.workers_gone()
    finally:
        supervisor.stop()


@pytest.mark.timeout(120)
def test_workers_stop_when_their_supervisor_is_killed(transactional_db):
    supervisor = Supervisor()
    try:
        supervisor.wait_listening()
        supervisor.proc.kill()  # no SIGTERM passed on
        supervisor.proc.wait(10)
        wait_until(supervisor.workers_gone, timeout=60, what="the orphaned workers to stop")
    finally:
        supervisor.stop()


def test_workers_need_a_fixed_port():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="fixed port"):
        call_command("gateway", postgres_listen="127.0.0.1:0", workers=2)
