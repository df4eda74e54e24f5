"""``manage.py gateway``: the gateway process (one asyncio listener per protocol).

Only PostgreSQL exists so far; SSH and Kubernetes listeners are added to ``LISTENERS``
with their own ``--<protocol>-listen`` option.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

log = logging.getLogger("airlock.gateway")


def _closing(fn: Any) -> Any:
    def call() -> Any:
        from django.db import connections

        try:
            return fn()
        finally:
            connections.close_all()

    return call


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CommandError(f"{option}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an empty host means every address


def _postgres_listener() -> Any:
    from gateway.postgres.server import PostgresGateway
    from gateway.tls import server_context

    return PostgresGateway(tls_context=server_context())


# protocol -> (option, settings default, factory of an object with start(host, port) and close())
LISTENERS: dict[str, tuple[str, Callable[[], str], Callable[[], Any]]] = {
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

    def handle(self, *args: Any, **options: Any) -> None:
        addresses: dict[str, tuple[str, int]] = {}
        for protocol, (option, default, _) in LISTENERS.items():
            value = options.get(f"{protocol}_listen")
            value = default() if value is None else value
            if value:
                addresses[protocol] = parse_address(value, option)
        if not addresses:
            raise CommandError("no listener enabled")
        from gateway import process

        # A short GIL switch interval, the start-up heap frozen, a higher young-generation
        # threshold for the garbage collector (gateway/process.py says why).
        process.prepare()
        try:
            import uvloop
        except ImportError:
            asyncio.run(self._serve(addresses))
        else:
            uvloop.run(self._serve(addresses))

    async def _serve(self, addresses: dict[str, tuple[str, int]]) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listeners = []
        try:
            # Holds left by an earlier run of a gateway (a crash, a restart) are cancelled
            # once no heartbeat comes from them; overdue requests are expired.
            try:
                from approvals.gateway import sweep

                await asyncio.to_thread(_closing(sweep))
            except Exception as exc:
                self.stderr.write(f"approvals: the start-up sweep failed: {exc}")
            for protocol, (host, port) in addresses.items():
                listener = LISTENERS[protocol][2]()
                bound = await listener.start(host, port)
                listeners.append(listener)
                self.stdout.write(f"{protocol} gateway listening on {bound[0]}:{bound[1]}")
                self.stdout.flush()
            await stop.wait()
            self.stdout.write("shutting down: closing listeners and ending sessions")
        finally:
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
