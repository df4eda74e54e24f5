"""What the ``agent.login`` audit record costs a login through the PostgreSQL gateway.

``python -m bench login_bench`` (part of ``make bench``). A private PostgreSQL instance is
the target, the Django database a throwaway one; two gateway processes run the same code,
one as shipped and one with the login's audit record switched off (a diagnostic: the
gateway has no such setting). Each round logs in ``LOGINS`` times, one after the other,
with psycopg (SCRAM with the agent's token, ``SELECT 1``, close) against each gateway in
turn, so load from elsewhere on the machine hits both alike. Reported: the median and
95th percentile of a whole login over every round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from console.envconfig import database_url

LOGINS = int(os.environ.get("AIRLOCK_BENCH_LOGINS", "100"))
ROUNDS = int(os.environ.get("AIRLOCK_BENCH_ROUNDS", "3"))
ROOT = Path(__file__).resolve().parent.parent


def serve(port: int, record_logins: bool) -> None:
    """A PostgreSQL gateway on ``port`` until SIGTERM; ``record_logins`` False drops the
    login's audit record (diagnostic)."""
    import asyncio
    import signal

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    from gateway.postgres import server

    if not record_logins:
        server._record_login = lambda *args: None  # type: ignore[assignment]

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        gateway = server.PostgresGateway()
        await gateway.start("127.0.0.1", port)
        await stop.wait()
        await gateway.close()

    asyncio.run(run())


def _logins(port: int, token: str, count: int) -> list[float]:
    import psycopg

    times = []
    for _ in range(count):
        started = time.perf_counter()
        with psycopg.connect(
            host="127.0.0.1", port=port, user="bench-bot", password=token, dbname="bench", sslmode="disable"
        ) as conn:
            conn.execute("SELECT 1")
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.db import connection

    from bench.pgbench import _free_port, _prepare_airlock, _wait_port
    from gateway.tests.postgres.pgserver import start_private_postgres

    if connection.vendor != "postgresql":
        print("login benchmark: set DATABASE_URL to a PostgreSQL database", file=sys.stderr)
        return 2
    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_login"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    server = start_private_postgres(_free_port())
    procs: list[subprocess.Popen[str]] = []
    try:
        with server.admin() as admin:
            admin.execute("CREATE DATABASE bench OWNER scram_user")
        token = _prepare_airlock(server.port)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "AIRLOCK_LOG_LEVEL": "WARNING",
        }
        ports = {}
        for name, record in (("with login record", True), ("without (diagnostic)", False)):
            port = _free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", f"from bench.login_bench import serve; serve({port}, {record})"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            procs.append(proc)
            _wait_port(port, proc)
            ports[name] = port
        times: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(ROUNDS):
            for name, port in ports.items():
                times[name] += _logins(port, token, LOGINS)
        load = os.getloadavg()[0]
        print(f"{LOGINS} logins x {ROUNDS} rounds per gateway, load average {load:.1f}")
        for name, values in times.items():
            values.sort()
            p95 = values[int(len(values) * 0.95) - 1]
            print(f"  {name:24} median {statistics.median(values):6.2f} ms   p95 {p95:6.2f} ms")
        from audit.models import AuditRecord

        print(f"  agent.login records written: {AuditRecord.objects.filter(action='agent.login').count()}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0
