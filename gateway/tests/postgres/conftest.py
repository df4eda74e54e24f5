"""Fixtures for the PostgreSQL gateway tests.

The gateway runs in-process, on its own event loop in a thread (as in production it owns
its loop), on an ephemeral port; the tests drive it with the real psql binary and
psycopg, and it talks to a private PostgreSQL instance whose roles need real passwords.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from conftest import free_port
from gateway.decision import DecisionPoint
from gateway.tests.postgres.pgserver import ROLES, PrivatePostgres, start_private_postgres
from policies.types import Action, Decision

DENY_MARKER = "airlock_test_deny"


def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


REVIEW_MARKER = "airlock_test_review"


class MarkerDecisionPoint(DecisionPoint):
    """Stands in for the policy engine (issue 4): denies any statement containing
    ``airlock_test_deny`` (rule "no-test-marker") and sends any containing
    ``airlock_test_review`` to review; allows everything else."""

    def decide(self, request):  # type: ignore[no-untyped-def]
        if DENY_MARKER in request.statement or any(p and DENY_MARKER in p for p in request.params):
            return Decision(
                action=Action.DENY,
                rule="no-test-marker",
                message="statements with the test marker are denied",
            )
        if REVIEW_MARKER in request.statement:
            return Decision(action=Action.REVIEW, rule="review-test-marker", message="needs review")
        return super().decide(request)


def marker_decision_point(connection, agent, groups):  # type: ignore[no-untyped-def]
    return MarkerDecisionPoint(protocol="postgres", connection=connection.name, agent=agent, groups=groups)


@dataclass
class GatewayThread:
    """A PostgresGateway on its own event loop in a daemon thread."""

    gateway: Any
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    port: int = 0

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._serve, daemon=True, name="gateway-loop")
        self.thread.start()

    def _serve(self) -> None:
        self.loop.run_forever()
        # Closed on its own thread: channels_redis (the session.terminate listener) closes
        # its connections in loop.close(), which cannot run where another loop is running.
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.port = self.call(self.gateway.start("127.0.0.1", 0))[1]

    def stop(self) -> None:
        try:
            self.call(self.gateway.close(grace_seconds=20), timeout=40)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            # Closed from a thread of its own: the channel layer flushes on close by running
            # the loop, which cannot happen on a thread that runs another loop (Playwright's).
            closer = threading.Thread(target=self.loop.close)
            closer.start()
            closer.join(10)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    server = start_private_postgres(free_port())
    with server.admin() as conn:
        conn.execute("CREATE DATABASE shop OWNER scram_user")
    with server.admin("shop") as conn:
        conn.execute("SET ROLE scram_user")
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 10) g")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO md5_user, clear_user, trust_user")
        conn.execute("GRANT ALL ON SCHEMA public TO md5_user, clear_user, trust_user")
    yield server
    server.stop()


@dataclass
class GatewayEnv:
    """Everything a test needs to connect through the gateway."""

    port: int
    token: str
    pg: PrivatePostgres
    thread: GatewayThread
    recorded: list[Any]

    def dsn(self, **overrides: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "dbname": "shop",
            "user": "billing-bot",
            "password": self.token,
            "sslmode": "disable",
            "connect_timeout": 10,
        }
        params.update(overrides)
        return params

    def connect(self, **overrides: Any) -> psycopg.Connection:
        return psycopg.connect(**self.dsn(**overrides))

    def conninfo(self, **overrides: Any) -> str:
        return psycopg.conninfo.make_conninfo(**self.dsn(**overrides))

    def session(self, index: int = -1, *, ended: bool = True) -> Any:
        """The recorded Session of the index-th session, once it has ended (if asked)."""
        from recordings.models import Session

        wait_until(lambda: len(self.recorded) > (index if index >= 0 else -index - 1), what="a session")
        session_id = self.recorded[index].session_id
        if ended:
            wait_until(
                lambda: Session.objects.filter(id=session_id).exclude(status="live").exists(),
                what="the session to end",
            )
        return Session.objects.get(id=session_id)

    def events(self, index: int = -1) -> list[tuple[str, dict[str, Any]]]:
        session = self.session(index)
        return [(e.kind, e.payload) for e in session.events.order_by("seq")]


def _make_connection(name: str, pg: PrivatePostgres, *, role: str = "scram_user", groups=("agents",), **kw):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    from gateway.models import Connection
    from gateway.secrets import set_secrets

    connection = Connection(
        name=name,
        kind="postgres",
        host=kw.pop("host", pg.host),
        port=kw.pop("port", pg.port),
        database=kw.pop("database", "shop"),
        username=role,
        options=kw.pop("options", {"sslmode": "disable"}),
    )
    secrets = {"password": ROLES.get(role, ("",))[0]}
    secrets.update(kw.pop("secrets", {}))
    set_secrets(connection, secrets)
    connection.save()
    connection.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
    return connection


@pytest.fixture
def make_connection(private_pg):  # type: ignore[no-untyped-def]
    def make(name, **kw):  # type: ignore[no-untyped-def]
        return _make_connection(name, private_pg, **kw)

    return make


@pytest.fixture
def billing_bot(transactional_db):  # type: ignore[no-untyped-def]
    """The agent billing-bot (group "agents") and its raw token."""
    from identity.actions import do_create_agent, do_issue_token

    agent = do_create_agent("test", "billing-bot", groups=["agents"])
    return agent, do_issue_token("test", agent).raw


def start_gateway(loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> GatewayThread:
    """A gateway in a thread, on ``loop`` (default: a new asyncio loop; the gateway command uses uvloop)."""
    from gateway.postgres.server import PostgresGateway

    gateway = PostgresGateway(**kwargs)
    thread = GatewayThread(gateway) if loop is None else GatewayThread(gateway, loop)
    thread.start()
    return thread


@pytest.fixture
def gateway_factory(private_pg, billing_bot, make_connection):  # type: ignore[no-untyped-def]
    """Start a gateway with the given options (the fixture stops it)."""
    from gateway.postgres.server import Limits, default_recorder

    make_connection("shop")
    started: list[GatewayThread] = []

    def start(**kwargs: Any) -> GatewayEnv:
        recorded: list[Any] = []
        limits = Limits.from_settings()
        overrides = kwargs.pop("limits", {})
        kwargs.setdefault("limits", Limits(**{**limits.__dict__, **overrides}))
        kwargs.setdefault("decision_point_factory", marker_decision_point)

        async def recorder_factory(**start: Any) -> Any:
            recorder = await default_recorder(**start)
            recorded.append(recorder)
            return recorder

        kwargs.setdefault("recorder_factory", recorder_factory)
        thread = start_gateway(**kwargs)
        started.append(thread)
        return GatewayEnv(thread.port, billing_bot[1], private_pg, thread, recorded)

    yield start
    from recordings.writer import shutdown_writer

    for thread in started:
        thread.stop()
    # The writer's threads hold database connections: end them before the test database goes.
    shutdown_writer()
    from approvals.gateway import close_db_threads

    close_db_threads()


@pytest.fixture
def gw(gateway_factory) -> GatewayEnv:  # type: ignore[no-untyped-def]
    """A gateway with default limits, no TLS, the marker decision point."""
    return gateway_factory()
