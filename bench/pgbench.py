"""pgbench direct to PostgreSQL, through the Airlock gateway and through pgbouncer.

``python -m bench pgbench`` (part of ``make bench``). Everything runs on this machine:
a private PostgreSQL instance (initdb, scale 10), the gateway as its own process
(``manage.py gateway``, recording on) on a throwaway Django database, and pgbouncer (session pooling) started from a generated configuration. Each run is
select-only (``-S``), simple and ``-M prepared``, with 1 and 8 clients. The gateway serves
two connections to the same database: "bench" with an allow-all policy (target "gateway")
and "bench-policy" with ``REALISTIC_POLICY`` (target "gw-policy"), what an admin would
deploy for an agent, whose rules pgbench's SELECT goes through before one allows it. TPS is pgbench's;
p50/p99 latencies come from pgbench's per-transaction log (``--log``), so they are
exact percentiles over every transaction of the run.

``python -m bench.pgbench micro``: the steadier in-process figure, the CPU time per
pgbench -S transaction of the relay (real policy engine, builtin masking, the real
recorder or one that drops events) fed canned messages, without sockets.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import perfsplit
from console.envconfig import database_url

DURATION = int(os.environ.get("AIRLOCK_BENCH_SECONDS", "4"))
# Runs are repeated and interleaved (direct, gateway, pgbouncer, direct, ...), the order
# turning each round, so that a burst of load from elsewhere on the machine hits every
# target alike; TPS is the median
# of the rounds, percentiles are over every transaction of every round.
ROUNDS = int(os.environ.get("AIRLOCK_BENCH_ROUNDS", "3"))
# Profiling: AIRLOCK_BENCH_PROFILE=out.txt runs the gateway (or the process of the target named by
# AIRLOCK_BENCH_PROFILE_TARGET: gw-norec, tcp-relay...) under py-spy (raw stack counts)
# and AIRLOCK_BENCH_ONLY=gateway,gw-policy limits the runs to those targets.
PROFILE = os.environ.get("AIRLOCK_BENCH_PROFILE", "")
# AIRLOCK_BENCH_PERF=1: the first run of each case of the target AIRLOCK_BENCH_PROFILE_TARGET
# (default gateway) is sampled with perf, and its CPU per transaction printed part by part
# (bench.perfsplit). Sampling slows that run: its TPS is one of the rounds' medians.
PERF = os.environ.get("AIRLOCK_BENCH_PERF") == "1"
PROFILE_TARGET = os.environ.get("AIRLOCK_BENCH_PROFILE_TARGET", "gateway")
# (in the order given: a target's run can leave work behind for the next one in the same
# process, such as recording writes or garbage collection, and the order shows it).
ONLY = [name for name in os.environ.get("AIRLOCK_BENCH_ONLY", "").split(",") if name]
MODES = os.environ.get("AIRLOCK_BENCH_MODES", "simple,prepared").split(",")
# Gateway processes on the gateway's port (``manage.py gateway --workers``); CPU figures
# add up the workers'.
GATEWAY_WORKERS = int(os.environ.get("AIRLOCK_BENCH_GATEWAY_WORKERS", "1"))
SCALE = 10
# Diagnostics, not ways to deploy: "gw-norec" is the same gateway code with a recorder
# that drops events (what recording costs; the command has no such switch) and "norec-pol"
# that gateway on the realistic policy's connection (the policy's cost without the noise of
# recording writes on a busy database), "tcp-relay" a plain uvloop byte relay that parses
# nothing (the floor for any asyncio relay here). "relay-rec", run only when
# AIRLOCK_BENCH_ONLY names it, is that relay recording each simple Query as the gateway
# records a statement (``serve_recorded_relay``): what a relay whose own parsing and
# decisions cost nothing would reach with today's recording.
TARGETS = ("direct", "gateway", "gw-policy", "gw-norec", "norec-pol", "tcp-relay", "pgbouncer", "relay-rec")
OPT_IN = ("relay-rec",)
# The targets whose sessions are recorded (into the Django database on the machine's
# PostgreSQL): the table's "rec db us" is that database's CPU per transaction for them.
RECORDED = ("gateway", "gw-policy", "relay-rec")
CLIENTS = [int(c) for c in os.environ.get("AIRLOCK_BENCH_CLIENTS", "1,8").split(",")]
RUNS = [(mode, clients) for mode in ("simple", "prepared") if mode in MODES for clients in CLIENTS]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _stat_cpu_seconds(stat: str) -> float:
    """User + system CPU time in seconds from a /proc ``stat`` file (a process's or a thread's)."""
    fields = Path(stat).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (Linux /proc), and of its child
    processes (the gateway's workers with ``AIRLOCK_BENCH_GATEWAY_WORKERS``)."""
    return _stat_cpu_seconds(f"/proc/{pid}/stat") + sum(_cpu_seconds(child) for child in _children(pid))


def _loop_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process's main thread (and its child processes'): the
    gateway's event loop, which relays every byte. The rest of ``_cpu_seconds`` is other
    threads' (recording writers, the policy watcher, libuv's workers), which compete for the
    GIL but not for the socket."""
    own = _stat_cpu_seconds(f"/proc/{pid}/task/{pid}/stat")
    return own + sum(_loop_cpu_seconds(child) for child in _children(pid))


def _recording_db_cpu() -> dict[int, float]:
    """User + system CPU time of each PostgreSQL backend connected to the Django database
    (the recording writers' connections, on the machine's own server), this process's own
    connection left out: what persisting the events costs the database."""
    from django.db import connection

    if connection.settings_dict.get("HOST") not in ("", None, "localhost", "127.0.0.1", "::1"):
        return {}  # the recording database on a host of its own: its processes are not ours to read
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        pids = [row[0] for row in cursor.fetchall()]
    found = {}
    for pid in pids:
        try:
            found[pid] = _stat_cpu_seconds(f"/proc/{pid}/stat")
        except OSError:  # ended meanwhile, or the server is on another host
            continue
    return found


def _recording_db_cpu_since(before: dict[int, float]) -> float:
    """The database's CPU time since ``before`` (``_recording_db_cpu``): a backend that
    started meanwhile counts whole; one that ended (a gateway's login lookup) is lost."""
    total = 0.0
    for pid, seconds in _recording_db_cpu().items():
        earlier = before.get(pid, 0.0)
        total += seconds - earlier if seconds >= earlier else seconds  # a reused pid: new
    return total


def _wait_sealed(timeout: float = 30.0) -> None:
    """Until no recorded session is live (the gateway has written and sealed every one)."""
    from recordings.models import Session

    deadline = time.monotonic() + timeout
    while Session.objects.filter(status=Session.Status.LIVE).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway's sessions were not sealed within {timeout:g} s of the run")
        time.sleep(0.05)


def _ran(*targets: str) -> bool:
    """Whether every one of ``targets`` ran (``AIRLOCK_BENCH_ONLY`` may leave some out)."""
    return all(target in ONLY if ONLY else target not in OPT_IN for target in targets)


def _runs(target: str, mode: str) -> bool:
    """Whether ``target`` runs in ``mode``: "relay-rec" records simple Queries only, so
    under the extended protocol it would be a relay recording nothing."""
    return _ran(target) and (target != "relay-rec" or mode == "simple")


def pgbench(
    port: int, user: str, dbname: str, password: str, mode: str, clients: int, logdir: Path
) -> tuple[float, list[int]]:
    """(TPS, per-transaction latencies in microseconds) of one pgbench run."""
    for old in logdir.glob("pgbench_log.*"):
        old.unlink()
    cmd = [
        "pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-S", "-M", mode,
        "-c", str(clients), "-j", str(min(clients, 4)), "-T", str(DURATION), "-n", "--log",
        f"--log-prefix={logdir}/pgbench_log", dbname,
    ]  # fmt: skip
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=DURATION + 120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr[-2000:]}")
    tps = next(
        float(line.split("=")[1].split()[0]) for line in out.stdout.splitlines() if line.startswith("tps =")
    )
    latencies: list[int] = []
    for path in logdir.glob("pgbench_log.*"):
        with path.open() as handle:
            latencies.extend(int(line.split()[2]) for line in handle)
    return tps, latencies


def summarise(
    runs: list[tuple[float, list[int]]],
    cpu_seconds: float = 0.0,
    loop_seconds: float = 0.0,
    db_seconds: float = 0.0,
) -> dict[str, float]:
    latencies = sorted(lat for _, run in runs for lat in run)
    return {
        "tps": statistics.median(tps for tps, _ in runs),
        "p50_ms": latencies[len(latencies) // 2] / 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
        # At one client TPS is one over the mean latency: how far the mean lies above the
        # p50 is what the slow transactions cost (docs/performance-log.md, "The one-client
        # tail is the recording database's CPU").
        "mean_ms": statistics.fmean(latencies) / 1000,
        "cpu_us": cpu_seconds / len(latencies) * 1e6 if cpu_seconds else 0.0,
        "loop_us": loop_seconds / len(latencies) * 1e6 if loop_seconds else 0.0,
        "db_us": db_seconds / len(latencies) * 1e6 if db_seconds else 0.0,
    }


def _start_pgbouncer(root: Path, pg_port: int, password: str) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    conf = root / "pgbouncer"
    conf.mkdir()
    (conf / "users.txt").write_text(f'"scram_user" "{password}"\n')
    (conf / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"bench = host=127.0.0.1 port={pg_port} dbname=bench user=scram_user password={password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = plain\nauth_file = {conf}/users.txt\npool_mode = session\n"
        "max_client_conn = 100\ndefault_pool_size = 20\n"
        f"logfile = {conf}/pgbouncer.log\n"
    )
    cmd = ["pgbouncer", str(conf / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root: it runs as postgres, which must read its files.
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(conf, "postgres", "postgres")
        for path in conf.iterdir():
            shutil.chown(path, "postgres", "postgres")
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    _wait_port(port, proc)
    return proc, port


def _child_pid(pid: int) -> int:
    """pgbouncer's own pid when it was started through runuser."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = children.read_text().split() if children.exists() else []
    return int(found[0]) if found else pid


def realistic_policy() -> dict[str, object]:
    """What an admin deploys for a reporting agent: the read-only-agent pack's guards, then
    rules of the admin's own (tables by glob, function sets, a review of writes to a
    sensitive table, a regular expression, observe rules), then the pack's allows.

    pgbench -S's ``SELECT abalance FROM pgbench_accounts WHERE aid = ...`` goes through
    every deny, review and observe rule (two observe rules match it) before "reads"
    allows it.
    """
    from policies.packs import pack

    base = pack("read-only-agent")
    guards = [rule for rule in base["rules"] if rule["action"] == "deny"]
    allows = [rule for rule in base["rules"] if rule["action"] == "allow"]
    own = [
        {
            "name": "no-vault",
            "match": {"tables": ["vault.*", "*.secret_*", "public.*_tokens"]},
            "action": "deny",
            "message": "secrets tables are off limits",
        },
        {
            "name": "no-large-objects-or-locks",
            "match": {"functions": ["@large_objects", "@advisory_locks", "@dynamic_sql", "dblink*"]},
            "action": "deny",
        },
        {
            "name": "payout-changes",
            "match": {"operations": ["write"], "tables": ["public.pgbench_branches", "billing.*"]},
            "action": "review",
            "reviewers": ["dba"],
            "approvals": 1,
            "timeout": "15m",
        },
        {
            "name": "no-user-export",
            "match": {"regex": r"^COPY\s+(public\.)?(users|customers)\b"},
            "action": "deny",
        },
        {"name": "watch-accounts", "match": {"tables": ["public.pgbench_*"]}, "action": "observe"},
        {
            "name": "watch-bench-agents",
            "match": {"groups": ["agents"], "regex": r"\bpgbench_accounts\b"},
            "action": "observe",
            "would": "review",
        },
        {
            "name": "no-deletes-without-where",
            "match": {"no_where": True, "operations": ["write"]},
            "action": "deny",
        },
    ]
    return {"default": "deny", "on_parse_error": "deny", "rules": [*guards, *own, *allows]}


def _realistic_path() -> str:
    """How the realistic policy decides pgbench -S's statement (rules tried, observe rules)."""
    from policies.engine import compile_policy
    from policies.types import Request

    policy = compile_policy("realistic", 1, realistic_policy(), known_groups={"dba"})
    decision = policy.evaluate(
        Request(
            protocol="postgres", connection="bench-policy", agent="bench-bot", groups=frozenset({"agents"}),
            statement="SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
        )
    )  # fmt: skip
    names = [rule.name for rule in policy.rules]
    tried = names.index(decision.rule) + 1 if decision.rule in names else len(names)
    return (
        f"realistic policy: {len(names)} rules; pgbench -S's SELECT is {decision.action} by rule"
        f" {decision.rule!r}, rule {tried} tried in order; observe rules noted: {', '.join(decision.observed)}"
    )


def _prepare_airlock(pg_port: int) -> str:
    """The agent, its token and the connection "bench" in the throwaway database."""
    from gateway.models import Connection
    from gateway.secrets import set_secrets
    from gateway.tests.postgres.pgserver import ROLES
    from identity.actions import do_create_agent, do_issue_token
    from policies.actions import do_save_policy

    agent = do_create_agent("bench", "bench-bot", groups=["agents"])
    token = do_issue_token("bench", agent).raw
    # A connection without a policy denies everything: the baseline is an explicit allow-all.
    allow_all = do_save_policy("bench", "allow-all", {"default": "allow", "rules": []})
    connection = Connection(
        name="bench", kind="postgres", host="127.0.0.1", port=pg_port, database="bench",
        username="scram_user", options={"sslmode": "disable"}, policy=allow_all,
    )  # fmt: skip
    set_secrets(connection, {"password": ROLES["scram_user"][0]})
    connection.save()
    from django.contrib.auth.models import Group

    connection.groups.set([Group.objects.get(name="agents")])
    # The realistic policy's review rule names "dba": it needs a person in it to compile.
    from identity.models import User

    reviewer = User.objects.create_user(username="bench-reviewer", password=token)
    reviewer.groups.add(Group.objects.get_or_create(name="dba")[0])
    realistic = do_save_policy("bench", "realistic", realistic_policy())
    guarded = Connection(
        name="bench-policy", kind="postgres", host="127.0.0.1", port=pg_port, database="bench",
        username="scram_user", options={"sslmode": "disable"}, policy=realistic,
    )  # fmt: skip
    set_secrets(guarded, {"password": ROLES["scram_user"][0]})
    guarded.save()
    guarded.groups.set([Group.objects.get(name="agents")])
    return str(token)


class Dropped:
    """A recorder that keeps nothing: the "gw-norec" target and the micro bench's
    "dropped" rows (what the relay costs without recording)."""

    session_id = None

    def append(self, kind: str, payload: dict[str, object]) -> None:
        pass

    def open_statement(self, payload: dict[str, object]) -> int:
        return 0

    def complete(self, handle: int, result: dict[str, object]) -> bool:
        return False

    async def close(self, **kwargs: object) -> None:
        pass


def serve_without_recording(port: int) -> None:
    """The gateway with events dropped (diagnostic target "gw-norec"), until SIGTERM."""
    import asyncio
    import signal

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    import uvloop

    from gateway import busypoll, process
    from gateway.postgres.server import PostgresGateway

    async def recorder(**kwargs: object) -> Dropped:
        return Dropped()

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        # Polling as the gateway command does, so that only the recording differs.
        busypoll.start_configured(asyncio.get_running_loop())
        gateway = PostgresGateway(recorder_factory=recorder)
        await gateway.start("127.0.0.1", port)
        await stop.wait()
        await gateway.close()

    process.prepare()
    uvloop.run(serve())


def serve_tcp_relay(port: int, upstream: int, busy_poll_us: int = 0) -> None:
    """A plain uvloop TCP relay that reads nothing (diagnostic target "tcp-relay"), its
    loop polling after work as the gateway's does (``gateway.busypoll``)."""
    import asyncio

    import uvloop

    from gateway import busypoll

    class Side(asyncio.Protocol):
        def __init__(self, peer: Side | None = None) -> None:
            self.peer = peer
            self.transport: asyncio.Transport | None = None
            self.early = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            busypoll.poke()
            if self.peer is None or self.peer.transport is None:
                self.early += data  # uvloop delivers data even before the upstream is up
                return
            self.peer.transport.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.close()

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        class Client(Side):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                self.task = loop.create_task(self.link())

            async def link(self) -> None:
                _, side = await loop.create_connection(lambda: Side(self), "127.0.0.1", upstream)
                self.peer = side
                if self.early and side.transport is not None:
                    side.transport.write(self.early)

        busypoll.start(loop, busy_poll_us)
        await loop.create_server(Client, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(serve())


def serve_recorded_relay(port: int, upstream: int) -> None:
    """The plain relay of "tcp-relay" recording what the gateway records of each simple
    Query (diagnostic target "relay-rec", until SIGTERM): a statement event with its
    result joined (command tag, rows, duration, the result's first rows), through the
    gateway's own recorder (``SessionRecorder``, strict mode, the writer process).

    It splits the messages of both directions but decides nothing, masks nothing and
    keeps no protocol state: what a relay whose own work cost nothing would reach with
    recording as it is. Only simple Queries are recorded (pgbench's default protocol).
    """
    import signal

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    import uvloop
    from django.conf import settings

    from gateway import busypoll, process
    from recordings.writer import SessionRecorder, close_all, prestart_writer, use_writer_process

    length = struct.Struct("!I").unpack_from

    def messages(buffer: bytearray) -> list[tuple[int, bytes]]:
        out = []
        pos = 0
        while len(buffer) - pos >= 5:
            end = pos + 1 + length(buffer, pos + 1)[0]
            if end > len(buffer):
                break
            out.append((buffer[pos], bytes(buffer[pos + 5 : end])))
            pos = end
        del buffer[:pos]
        return out

    class Side(asyncio.Protocol):
        def __init__(self, peer: Side | None = None, client: Client | None = None) -> None:
            self.peer = peer
            self.client = client
            self.transport: asyncio.Transport | None = None
            self.early = b""
            self.buffer = bytearray()
            self.startup = False  # the client's first message, the startup packet, has no type

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            busypoll.poke()
            if self.peer is None or self.peer.transport is None:
                self.early += data
            else:
                self.peer.transport.write(data)
            self.buffer += data
            if self.startup:
                if len(self.buffer) < 4 or len(self.buffer) < length(self.buffer, 0)[0]:
                    return
                del self.buffer[: length(self.buffer, 0)[0]]
                self.startup = False
            self.seen(messages(self.buffer))

        def seen(self, found: list[tuple[int, bytes]]) -> None:
            client = self.client
            if client is None or client.recorder is None:
                return
            for typ, body in found:
                if typ == 0x54 and client.open:  # RowDescription: the columns' names
                    count = body[0] << 8 | body[1]
                    names, pos = [], 2
                    for _ in range(count):
                        end = body.index(0, pos)
                        names.append(body[pos:end].decode())
                        pos = end + 19
                    client.columns = names
                elif typ == 0x44 and client.open and len(client.sample) < 10:  # DataRow
                    values, pos = [], 2
                    for _ in range(body[0] << 8 | body[1]):
                        size = length(body, pos)[0]
                        pos += 4
                        if size == 0xFFFFFFFF:
                            values.append(None)
                        else:
                            values.append(body[pos : pos + size].decode())
                            pos += size
                    client.sample.append(values)
                    client.rows += 1
                elif typ == 0x44:
                    client.rows += 1
                elif typ == 0x43 and client.open:  # CommandComplete
                    tag = body[:-1].decode()
                    result: dict[str, object] = {
                        "command_tag": tag,
                        "rows": client.rows,
                        "duration_ms": int((time.monotonic() - client.started) * 1_000_000) / 1000,
                    }
                    if client.sample:
                        result["columns"] = client.columns
                        result["first_rows"] = client.sample
                    client.recorder.complete(client.open, result)
                    client.open, client.rows, client.sample = 0, 0, []

    class Client(Side):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.recorder: SessionRecorder | None = None
            self.lost = False
            self.open = 0  # the handle of the statement whose result is awaited
            self.rows = 0
            self.started = 0.0
            self.columns: list[str] = []
            self.sample: list[list[str | None]] = []
            self.startup = True
            self.task = asyncio.get_running_loop().create_task(self.link())

        async def link(self) -> None:
            loop = asyncio.get_running_loop()
            self.recorder = await SessionRecorder.start(
                protocol="postgres", agent_name="relay-rec", connection_name="bench"
            )
            if self.lost:  # gone while the recording started (a port probe)
                await self.recorder.close(reason="client disconnected")
                return
            _, side = await loop.create_connection(lambda: Side(self, self), "127.0.0.1", upstream)
            self.peer = side
            if self.early and side.transport is not None:
                side.transport.write(self.early)

        def seen(self, found: list[tuple[int, bytes]]) -> None:
            if self.recorder is None:
                return
            for typ, body in found:
                if typ == 0x51:  # Query
                    self.started = time.monotonic()
                    self.open = self.recorder.open_statement(
                        {
                            "text": body[:-1].decode(),
                            "params": [],
                            "protocol": "simple",
                            "action": "allow",
                            "rule": "",
                            "policy": "allow-all",
                            "policy_version": 1,
                        }
                    )
                    self.rows, self.sample = 0, []

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            self.lost = True
            if self.recorder is not None:
                asyncio.get_running_loop().create_task(self.recorder.close(reason="client disconnected"))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        busypoll.start_configured(loop)
        prestart_writer()
        server = await loop.create_server(Client, "127.0.0.1", port)
        await stop.wait()
        server.close()
        await close_all()

    # As the gateway command does: the writer in a process of its own, this one's GIL,
    # switch interval and collector set up alike.
    use_writer_process(bool(settings.RECORDING_WRITER_PROCESS))
    process.prepare()
    uvloop.run(serve())


def main() -> int:
    unknown = [target for target in ONLY if target not in TARGETS]
    if unknown:
        print(
            f"pgbench benchmark: unknown target(s) {unknown} (known: {', '.join(TARGETS)})", file=sys.stderr
        )
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from gateway.tests.postgres.pgserver import ROLES, start_private_postgres

    busy_poll = int(settings.GATEWAY_BUSY_POLL_US)

    if connection.vendor != "postgresql":
        print("pgbench benchmark: set DATABASE_URL to a PostgreSQL database", file=sys.stderr)
        return 2
    if not shutil.which("pgbench") or not shutil.which("pgbouncer"):
        print("pgbench benchmark: needs pgbench and pgbouncer (make system)", file=sys.stderr)
        return 2
    password = ROLES["scram_user"][0]
    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_pgbench"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    server = start_private_postgres(_free_port())
    root = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    procs: list[subprocess.Popen[str]] = []
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    paired: dict[tuple[str, int], list[float]] = {}
    try:
        with server.admin() as admin:
            admin.execute("CREATE DATABASE bench OWNER scram_user")
        init = subprocess.run(
            ["pgbench", "-i", "-q", "-s", str(SCALE), "-h", "127.0.0.1", "-p", str(server.port), "-U", "scram_user", "bench"],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": password}, timeout=600, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(init.stderr)
        token = _prepare_airlock(server.port)
        gw_port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url(connection.settings_dict),
            "AIRLOCK_LOG_LEVEL": "WARNING",
        }
        gateway = subprocess.Popen(
            [sys.executable, "manage.py", "gateway", "--postgres-listen", f"127.0.0.1:{gw_port}",
             "--workers", str(GATEWAY_WORKERS)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        procs.append(gateway)
        _wait_port(gw_port, gateway)
        norec_port = _free_port()
        norec = subprocess.Popen(
            [sys.executable, "-c", f"from bench.pgbench import serve_without_recording; serve_without_recording({norec_port})"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        procs.append(norec)
        _wait_port(norec_port, norec)
        relay_port = _free_port()
        relay = subprocess.Popen(
            [sys.executable, "-c", f"from bench.pgbench import serve_tcp_relay; serve_tcp_relay({relay_port}, {server.port}, {busy_poll})"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        procs.append(relay)
        _wait_port(relay_port, relay)
        recorded_relay_port = _free_port()
        if _ran("relay-rec"):
            recorded_relay = subprocess.Popen(
                [sys.executable, "-c", f"from bench.pgbench import serve_recorded_relay; serve_recorded_relay({recorded_relay_port}, {server.port})"],
                env=env, stdout=subprocess.DEVNULL, stderr=(root / "relay-rec.log").open("w"), text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip
            procs.append(recorded_relay)
            _wait_port(recorded_relay_port, recorded_relay)
        bouncer, bouncer_port = _start_pgbouncer(root, server.port, password)
        procs.append(bouncer)
        endpoints = {
            "direct": (server.port, "scram_user", "bench", password),
            "gateway": (gw_port, "bench-bot", "bench", token),
            "gw-policy": (gw_port, "bench-bot", "bench-policy", token),
            "gw-norec": (norec_port, "bench-bot", "bench", token),
            "norec-pol": (norec_port, "bench-bot", "bench-policy", token),
            "tcp-relay": (relay_port, "scram_user", "bench", password),
            "pgbouncer": (bouncer_port, "scram_user", "bench", password),
            "relay-rec": (recorded_relay_port, "scram_user", "bench", password),
        }
        pids = {
            "gateway": gateway.pid,
            "gw-policy": gateway.pid,
            "gw-norec": norec.pid,
            "norec-pol": norec.pid,
            "tcp-relay": relay.pid,
            "pgbouncer": _child_pid(bouncer.pid),
            **({"relay-rec": recorded_relay.pid} if _ran("relay-rec") else {}),
        }
        if PROFILE:
            spy = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--format",
                "raw",
                "-r",
                os.environ.get("AIRLOCK_BENCH_PROFILE_RATE", "250"),
                *(["--gil"] if os.environ.get("AIRLOCK_BENCH_PROFILE_GIL") else []),
                *(["--native"] if os.environ.get("AIRLOCK_BENCH_PROFILE_NATIVE") else ["--nonblocking"]),
                "-o",
                PROFILE,
                "--pid",
                str(pids[PROFILE_TARGET]),
            ]
            procs.append(
                subprocess.Popen([*spy, "-d", str(DURATION * 4)], stdout=subprocess.DEVNULL, text=True)
            )
        for mode, clients in RUNS:
            runs: dict[str, list[tuple[float, list[int]]]] = {t: [] for t in TARGETS}
            cpu = dict.fromkeys(TARGETS, 0.0)
            loop_cpu = dict.fromkeys(TARGETS, 0.0)
            db_cpu = dict.fromkeys(TARGETS, 0.0)
            order = [target for target in TARGETS if _runs(target, mode)]
            for round_ in range(ROUNDS):
                for target in TARGETS:
                    if not _runs(target, mode):
                        runs[target].append((1.0, [0]))  # not run: a placeholder
                # The order turns each round: a run leaves work behind in its process
                # (sessions closing, garbage) that slows the next one there, and the
                # targets sharing a process (gateway and gw-policy, gw-norec and
                # norec-pol) must take that turn alike.
                shift = round_ % len(order)
                for target in order[shift:] + order[:shift]:
                    before = _cpu_seconds(pids[target]) if target in pids else 0.0
                    loop_before = _loop_cpu_seconds(pids[target]) if target in pids else 0.0
                    db_before = _recording_db_cpu() if target in RECORDED else {}
                    sampled = PERF and round_ == 0 and target == PROFILE_TARGET and target in pids
                    runs[target].append(
                        perfsplit.measured(
                            functools.partial(pgbench, *endpoints[target], mode, clients, root),
                            pids[target] if sampled else None,
                            root / "perf.data",
                            f"{target} {mode} {clients} client(s), first round",
                        )
                    )
                    if target in RECORDED:
                        # The sessions' last batches and seals are written after pgbench
                        # leaves: counted here, not in the next target's run.
                        _wait_sealed()
                        db_cpu[target] += _recording_db_cpu_since(db_before)
                    if target in pids:
                        cpu[target] += _cpu_seconds(pids[target]) - before
                        loop_cpu[target] += _loop_cpu_seconds(pids[target]) - loop_before
            for target in TARGETS:
                results[(target, mode, clients)] = summarise(
                    runs[target], cpu[target], loop_cpu[target], db_cpu[target]
                )
            if _ran("direct", "gateway"):
                # Each round runs every target once, close together: the ratio within a round
                # is spared most of the drift of the machine's speed between rounds.
                paired[(mode, clients)] = [
                    gw[0] / direct[0] for direct, gw in zip(runs["direct"], runs["gateway"], strict=True)
                ]
        from recordings.models import Event, Session

        recorded = Event.objects.filter(kind="statement").count()
        sessions = Session.objects.count()
        # Every chain and seal the runs recorded, checked as ``manage.py recordings verify``
        # checks them: the figures count only if what was recorded holds.
        broken = [str(s.pk) for s in Session.objects.all() if not s.verify().ok]
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        if (root / "relay-rec.log").exists():
            sys.stderr.write((root / "relay-rec.log").read_text()[-4000:])
        shutil.rmtree(root, ignore_errors=True)
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(
        f"pgbench -S, {ROUNDS} x {DURATION}s per target and case, scale {SCALE}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f}; the gateway, gw-norec and tcp-relay poll {busy_poll} us"
        " after work (AIRLOCK_GATEWAY_BUSY_POLL_US)"
    )
    print(
        f"{'target':<10} {'mode':<9} {'clients':>7} {'tps':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"
        f" {'vs direct':>9}"
        f" {'cpu us/txn':>10} {'loop us':>7} {'rec db us':>9}"
    )
    for mode, clients in RUNS:
        direct = results[("direct", mode, clients)]
        for target in TARGETS:
            if not _runs(target, mode):
                continue
            r = results[(target, mode, clients)]
            versus = f"{r['tps'] / direct['tps']:>9.2f}" if _ran("direct") else f"{'-':>9}"
            print(
                f"{target:<10} {mode:<9} {clients:>7} {r['tps']:>9.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
                f" {r['mean_ms']:>8.3f} {versus} {r['cpu_us']:>10.1f} {r['loop_us']:>7.1f}"
                + (f" {r['db_us']:>9.1f}" if target in RECORDED else f" {'-':>9}")
            )
    for (mode, clients), ratios in paired.items():
        print(
            f"gateway vs direct, {mode}, {clients} client(s), round by round: {' '.join(f'{r:.2f}' for r in ratios)}"
        )
    for mode in ("simple", "prepared"):
        if mode not in MODES or 1 not in CLIENTS or not _ran("direct", "gateway"):
            continue
        added = results[("gateway", mode, 1)]["p50_ms"] - results[("direct", mode, 1)]["p50_ms"]
        print(f"gateway p50 added latency, 1 client, {mode}: {added:.3f} ms")
        tails = ", ".join(
            f"{target} {1000 * (r['mean_ms'] - r['p50_ms']):.1f} us"
            for target in ("direct", "gateway", "gw-norec")
            if _ran(target) and (r := results[(target, mode, 1)])
        )
        print(f"mean latency above the p50 (the slow transactions' share), 1 client, {mode}: {tails}")
    print(f"recorded through the gateway: {sessions} sessions, {recorded} statements")
    print(
        f"recordings verified (chain and seal): {sessions - len(broken)} of {sessions} sessions"
        + (f"; BROKEN: {', '.join(broken[:5])}" if broken else "")
    )
    if broken:
        raise SystemExit("recordings made by the bench do not verify: the figures do not count")
    print(_realistic_path())
    ratios = []
    for mode, clients in RUNS:
        if _ran("gw-policy", "gateway"):
            ratio = results[("gw-policy", mode, clients)]["tps"] / results[("gateway", mode, clients)]["tps"]
            ratios.append(ratio)
            print(f"gw-policy vs gateway (allow-all), {mode}, {clients} client(s): {ratio:.3f} x TPS")
        if _ran("norec-pol", "gw-norec"):
            bare = results[("norec-pol", mode, clients)]["tps"] / results[("gw-norec", mode, clients)]["tps"]
            print(
                f"  without recording (norec-pol vs gw-norec), {mode}, {clients} client(s): {bare:.3f} x TPS"
            )
    # A run limited to some targets or cases (AIRLOCK_BENCH_ONLY, _CLIENTS, _MODES) judges nothing.
    partial = "not judged: only some targets or cases ran"
    targets = "targets (>=0.6 x direct at 1 client, >=0.35 at 8, p50 added < 0.15 ms):"
    print(
        "guardrails target (realistic policy within 10% of allow-all in every case):",
        partial if ONLY else "met" if min(ratios) >= 0.9 else "NOT met",
    )
    if ONLY or "simple" not in MODES or not {1, 8} <= set(CLIENTS):
        print(targets, partial)
        return 0
    targets_met = (
        results[("gateway", "simple", 1)]["tps"] / results[("direct", "simple", 1)]["tps"] >= 0.6
        and results[("gateway", "simple", 8)]["tps"] / results[("direct", "simple", 8)]["tps"] >= 0.35
        and results[("gateway", "simple", 1)]["p50_ms"] - results[("direct", "simple", 1)]["p50_ms"] < 0.15
    )
    print(targets, "met" if targets_met else "NOT met")
    return 0


# --- in-process micro-benchmark ------------------------------------------------------------


def _micro_messages(mode: str, n: int, seed: int) -> tuple[bytes, list[bytes], bytes]:
    """pgbench -S as the relay sees it: (setup from the client, per-transaction client
    messages, the server's answer to one transaction)."""
    from gateway.postgres import protocol as pg

    text = "SELECT abalance FROM pgbench_accounts WHERE aid = "
    row_desc = pg.message(
        b"T", b"\x00\x01" + b"abalance\x00" + struct.pack("!IhIhih", 16397, 3, 23, 4, -1, 0)
    )
    row = pg.data_row([b"0"])
    tail = pg.message(b"C", b"SELECT 1\x00") + pg.ready_for_query(b"I")
    if mode == "simple":
        # A new literal every time (as pgbench -S sends), and none seen in an earlier case.
        return b"", [pg.query(f"{text}{seed + i};") for i in range(n)], row_desc + row + tail
    parse = pg.message(b"P", b"P0_1\x00" + text.encode() + b"$1\x00\x00\x00")
    setup = parse + pg.message(b"S")
    msgs = []
    for i in range(n):
        value = str(seed + i).encode()
        bind = pg.message(
            b"B", b"\x00P0_1\x00\x00\x00\x00\x01" + struct.pack("!I", len(value)) + value + b"\x00\x00"
        )
        msgs.append(
            bind + pg.message(b"D", b"P\x00") + pg.message(b"E", b"\x00\x00\x00\x00\x00") + pg.message(b"S")
        )
    answer = pg.message(b"2") + row_desc + row + tail
    return setup, msgs, answer


async def _micro_case(mode: str, recorder_kind: str, n: int, policy: Any) -> dict[str, float]:
    from django.conf import settings

    from gateway.decision import DecisionPoint
    from gateway.masking_runtime import engine  # the masking engine the gateway runs (compiled)
    from gateway.postgres import protocol as pg
    from gateway.postgres.compiled import relay as compiled

    point = DecisionPoint(
        protocol="postgres",
        connection="bench",
        agent="bench-bot",
        groups=frozenset({"agents"}),
        policy=policy,
    )
    masking = engine.compile_policy({}).for_groups(frozenset({"agents"}))

    if recorder_kind == "recorder":
        from recordings.writer import SessionRecorder

        recorder: Any = await SessionRecorder.start(
            protocol="postgres", agent_name="bench-bot", connection_name="bench"
        )
    else:
        recorder = Dropped()
    relay = compiled.Relay(
        point, recorder, max_message=settings.GATEWAY_MAX_MESSAGE_BYTES,
        result_rows=settings.RECORDING_RESULT_ROWS, masking=masking,
    )  # fmt: skip
    relay.seed_search_path(("public",))
    _micro_case.seed += n  # type: ignore[attr-defined]
    setup, msgs, answer = _micro_messages(mode, n, _micro_case.seed)  # type: ignore[attr-defined]
    if setup:
        relay.from_client(setup)
        relay.from_server(pg.message(b"1") + pg.ready_for_query(b"I"))
    cpu0, wall0, own0 = time.process_time(), time.perf_counter(), time.thread_time()
    for i, msg in enumerate(msgs):
        relay.from_client(msg)
        relay.from_server(answer)
        if i % 20 == 0:
            await asyncio.sleep(0)  # let the recorder's flusher run, as the loop would
    await recorder.close(reason="bench")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    loop_cpu = time.thread_time() - own0  # the event loop's thread alone
    if recorder_kind == "recorder" and (recorder.failed or recorder.dropped_events):
        raise RuntimeError(f"recording lost events: {recorder.failure_reason}")
    return {"cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6, "loop_us": loop_cpu / n * 1e6}


_micro_case.seed = 10_000_000  # type: ignore[attr-defined]


def micro() -> int:
    """``python -m bench.pgbench micro``: CPU per statement of the relay with the real
    policy engine, builtin masking and (or without) the real recorder, fed canned pgbench
    -S messages in one process (no sockets): steadier than TPS on a shared machine."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from policies.actions import do_save_policy
    from recordings.writer import shutdown_writer, use_writer_process

    # The recorder's jobs where the gateway runs them (a writer process, by default).
    use_writer_process(bool(settings.RECORDING_WRITER_PROCESS))
    n = int(os.environ.get("AIRLOCK_BENCH_MICRO_N", "20000"))
    profile = os.environ.get("AIRLOCK_BENCH_PROFILE", "")
    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_micro"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        from policies.stored import compile_stored

        policy = compile_stored(do_save_policy("bench", "allow-all", {"default": "allow", "rules": []}))
        connection.close()
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        print(
            f"relay micro-benchmark, {n} pgbench -S transactions per case, load average {os.getloadavg()[0]:.1f}"
        )
        print(f"{'mode':<9} {'recorder':<9} {'cpu us/txn':>10} {'loop us/txn':>11} {'wall us/txn':>11}")
        runner(_micro_case("simple", "dropped", 500, policy))  # warm-up: imports, first parses
        for mode in ("simple", "prepared"):
            for kind in ("dropped", "recorder"):
                best: dict[str, float] | None = None
                for _ in range(int(os.environ.get("AIRLOCK_BENCH_ROUNDS", "3"))):
                    if profile:
                        import cProfile

                        with cProfile.Profile() as prof:
                            r = runner(_micro_case(mode, kind, n, policy))
                        prof.dump_stats(f"{profile}.{mode}.{kind}")
                    else:
                        r = runner(_micro_case(mode, kind, n, policy))
                    if best is None or r["cpu_us"] < best["cpu_us"]:
                        best = r
                assert best is not None
                print(
                    f"{mode:<9} {kind:<9} {best['cpu_us']:>10.1f} {best['loop_us']:>11.1f} {best['wall_us']:>11.1f}"
                )
    finally:
        shutdown_writer()
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0


if __name__ == "__main__":
    sys.exit(micro() if sys.argv[1:] == ["micro"] else main())
