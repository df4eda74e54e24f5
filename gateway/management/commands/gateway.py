"""``manage.py gateway``: the gateway process (one asyncio listener per protocol).

Only PostgreSQL exists so far; SSH and Kubernetes listeners are added to ``LISTENERS``
with their own ``--<protocol>-listen`` option.

``--workers N`` (``AIRLOCK_GATEWAY_WORKERS``) runs N gateway processes on the same ports
(``SO_REUSEPORT``: the kernel spreads new connections over them), because one event loop
uses one CPU. This process then only starts them, passes SIGTERM/SIGINT on and stops them
all when one of them dies; each has its own sessions, session limit and login throttle,
and cancel requests reach the session's process through a private Unix socket
(``gateway.postgres.server.Workers``).

Each process's event loop polls its sockets briefly after work before it sleeps
(``AIRLOCK_GATEWAY_BUSY_POLL_US``, ``gateway.busypoll``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import busypoll

log = logging.getLogger("airlock.gateway")


def _closing(fn: Any) -> Any:
    def call() -> Any:
        from django.db import connections

        try:
            return fn()
        finally:
            connections.close_all()

    return call


async def _close_abandoned_sessions(stop: asyncio.Event) -> None:
    """Now and then (every ``RECORDING_HEARTBEAT_SECONDS``), close and seal the live
    sessions of gateways that stopped without ending them (``recordings.writer.close_abandoned``);
    first at start-up, which is when a crashed gateway's own sessions are found."""
    from django.conf import settings

    from recordings.writer import close_abandoned

    interval = float(settings.RECORDING_HEARTBEAT_SECONDS)
    while not stop.is_set():
        try:
            await asyncio.to_thread(_closing(close_abandoned))
        except Exception as exc:  # the database away: the next round tries again
            log.warning("abandoned sessions not looked for: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CommandError(f"{option}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an empty host means every address


def _postgres_listener(workers: Any) -> Any:
    from gateway.postgres.server import PostgresGateway
    from gateway.tls import server_context

    return PostgresGateway(tls_context=server_context(), workers=workers)


async def _orphaned(parent: int, stop: asyncio.Event) -> None:
    """A worker ends once its supervisor is gone (killed without passing SIGTERM on):
    workers left on the port would keep serving after the gateway was "stopped"."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's death
        await asyncio.sleep(SUPERVISOR_CHECK_SECONDS)
    log.error("the supervising gateway process is gone: this worker stops")
    stop.set()


SUPERVISOR_CHECK_SECONDS = 1.0


def worker_sockets(directory: str, count: int) -> tuple[str, ...]:
    """The private Unix socket of each worker process, in ``directory``."""
    return tuple(str(Path(directory) / f"worker-{index}.sock") for index in range(count))


# protocol -> (option, settings default, factory of an object with start(host, port) and
# close(), given this process's ``Workers`` or None)
LISTENERS: dict[str, tuple[str, Callable[[], str], Callable[[Any], Any]]] = {
    "postgres": ("--postgres-listen", lambda: settings.GATEWAY_POSTGRES_LISTEN, _postgres_listener),
}


class Command(BaseCommand):
    help = "Run the Airlock gateway listeners (PostgreSQL)."

    def add_arguments(self, parser: CommandParser) -> None:
        for protocol, (option, _, _) in LISTENERS.items():
            parser.add_argument(
                option,
                dest=f"{protocol}_listen",
                help=f"HOST:PORT for the {protocol} listener (empty string: disabled)",
            )
        parser.add_argument(
            "--workers",
            type=int,
            help="gateway processes sharing the ports (default: AIRLOCK_GATEWAY_WORKERS, 1)",
        )
        # Set by the process that starts the workers: this one's index and where the
        # workers' private sockets are.
        parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
        parser.add_argument("--worker-sockets", help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        addresses: dict[str, tuple[str, int]] = {}
        for protocol, (option, default, _) in LISTENERS.items():
            value = options.get(f"{protocol}_listen")
            value = default() if value is None else value
            if value:
                addresses[protocol] = parse_address(value, option)
        if not addresses:
            raise CommandError("no listener enabled")
        count = options["workers"] if options.get("workers") is not None else settings.GATEWAY_WORKERS
        if count < 1:
            raise CommandError("--workers: expected at least 1")
        index = options.get("worker_index")
        workers = None
        if count > 1 and index is None:
            if any(port == 0 for _, port in addresses.values()):
                raise CommandError("--workers: every listener needs a fixed port to share")
            self._supervise(count, addresses)
            return
        if index is not None:
            from gateway.postgres.server import Workers

            directory = options.get("worker_sockets")
            if not directory:
                raise CommandError("--worker-index needs --worker-sockets")
            workers = Workers(index=index, count=count, sockets=worker_sockets(directory, count))
        from gateway import process
        from recordings.writer import use_writer_process

        # Recording writes in a child process, so that they do not share this one's GIL.
        use_writer_process(bool(settings.RECORDING_WRITER_PROCESS))
        # A short GIL switch interval, the start-up heap frozen, a higher young-generation
        # threshold for the garbage collector (gateway/process.py says why).
        process.prepare()
        try:
            import uvloop
        except ImportError:
            asyncio.run(self._serve(addresses, workers))
        else:
            uvloop.run(self._serve(addresses, workers))

    def _supervise(self, count: int, addresses: dict[str, tuple[str, int]]) -> None:
        """Start ``count`` worker processes and wait; SIGTERM/SIGINT stop them all, and so
        does any of them ending (the service manager then restarts the gateway whole)."""
        directory = tempfile.mkdtemp(prefix="airlock-gateway-")  # 0700: only this user
        base = [
            sys.executable,
            str(Path(settings.BASE_DIR) / "manage.py"),
            "gateway",
            "--workers",
            str(count),
        ]
        base += ["--worker-sockets", directory]
        for protocol, (option, _, _) in LISTENERS.items():
            host, port = addresses.get(protocol, ("", 0))
            base += [option, f"{host}:{port}" if protocol in addresses else ""]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "console.settings"),
        }
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for index in range(count):
                command = [*base, "--worker-index", str(index)]
                # This interpreter and manage.py, with addresses that parsed as such.
                procs.append(subprocess.Popen(command, env=env, cwd=settings.BASE_DIR))  # noqa: S603
            while not stopping and all(proc.poll() is None for proc in procs):
                time.sleep(0.2)
            failed = [proc.returncode for proc in procs if proc.poll() is not None]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(directory, ignore_errors=True)
        if failed and not stopping:
            raise CommandError(f"a gateway worker ended (exit status {failed[0]}): all were stopped")

    async def _serve(self, addresses: dict[str, tuple[str, int]], workers: Any = None) -> None:
        loop = asyncio.get_running_loop()
        busypoll.start_configured(loop)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listeners = []
        watch: asyncio.Task[None] | None = None
        sweeper: asyncio.Task[None] | None = None
        try:
            # Holds left by an earlier run of a gateway (a crash, a restart) are cancelled
            # once no heartbeat comes from them; overdue requests are expired.
            try:
                from approvals.gateway import sweep

                await asyncio.to_thread(_closing(sweep))
            except Exception as exc:
                self.stderr.write(f"approvals: the start-up sweep failed: {exc}")
            from recordings.writer import prestart_writer

            # The writer process boots Django meanwhile, not during the first agent's login.
            prestart_writer()
            sweeper = loop.create_task(_close_abandoned_sessions(stop), name="abandoned sessions")
            for protocol, (host, port) in addresses.items():
                listener = LISTENERS[protocol][2](workers)
                bound = await listener.start(host, port)
                listeners.append(listener)
                self.stdout.write(f"{protocol} gateway listening on {bound[0]}:{bound[1]}")
                self.stdout.flush()
            if workers is not None:
                watch = loop.create_task(_orphaned(os.getppid(), stop), name="supervisor watch")
                watch.add_done_callback(lambda task: task.cancelled() or task.exception())
            await stop.wait()
            self.stdout.write("shutting down: closing listeners and ending sessions")
        finally:
            busypoll.stop()
            if watch is not None:
                watch.cancel()
            if sweeper is not None:
                sweeper.cancel()
            for listener in listeners:
                with contextlib.suppress(Exception):
                    await listener.close()
            with contextlib.suppress(ImportError):
                from approvals.gateway import close_listener

                # After the sessions ended (their waits are over): its receive and its
                # Redis connections end with the loop's other work, not as the loop closes.
                await close_listener()
            with contextlib.suppress(ImportError):
                from recordings.writer import shutdown_writer

                await asyncio.to_thread(shutdown_writer)
            with contextlib.suppress(ImportError):
                from approvals.gateway import close_db_threads

                await asyncio.to_thread(close_db_threads)
