"""The PostgreSQL listener and its sessions (the asyncio edge around ``relay.Relay``).

A session: startup (TLS, protocol negotiation, parameter filter), agent authentication
(SCRAM against the agent's token verifiers, or a JWT sent as a password over TLS), the
connection and group checks, the upstream connection, then the relay. The database is
touched only at login, from worker threads; nothing on the statement path awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings

from gateway.decision import DecisionPoint
from gateway.login_audit import LoginFailureLog
from gateway.postgres import protocol as pg
from gateway.postgres.compiled import relay as _relay
from gateway.postgres.link import Link
from gateway.postgres.protocol import ProtocolError
from gateway.postgres.scram import MECHANISM, ScramError, ScramServer, fake_salt
from gateway.postgres.startup import (
    ClientStartup,
    Kind,
    StartupRefused,
    UnsupportedProtocol,
    check_startup,
    parse_startup_packet,
)
from gateway.postgres.upstream import (
    Upstream,
    UpstreamError,
    UpstreamTarget,
    connect_upstream,
    current_search_path,
    send_cancel,
)
from gateway.ratelimit import LoginThrottle
from masking import MaskingError
from policies.types import Action, Decision

# The compiled relay when built (gateway/postgres/compiled.py).
if TYPE_CHECKING:
    from gateway.postgres.relay import CONFIRM, Relay, ReviewNeeded
else:
    CONFIRM, Relay, ReviewNeeded = _relay.CONFIRM, _relay.Relay, _relay.ReviewNeeded

log = logging.getLogger("airlock.gateway.postgres")

_I32 = struct.Struct("!i")


@dataclass(frozen=True)
class Limits:
    max_message: int
    idle_timeout: float
    session_timeout: float
    max_sessions: int
    login_failures_per_minute: int
    result_rows: int
    connect_timeout: float = 10.0
    handshake_timeout: float = 60.0

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_message=settings.GATEWAY_MAX_MESSAGE_BYTES,
            idle_timeout=settings.GATEWAY_IDLE_TIMEOUT,
            session_timeout=settings.GATEWAY_SESSION_TIMEOUT,
            max_sessions=settings.GATEWAY_MAX_SESSIONS,
            login_failures_per_minute=settings.GATEWAY_LOGIN_FAILURES_PER_MINUTE,
            result_rows=settings.RECORDING_RESULT_ROWS,
        )


@dataclass(frozen=True)
class Workers:
    """This process's place among gateway processes sharing one port (``SO_REUSEPORT``).

    The kernel spreads new connections over the processes, so a CancelRequest, which
    PostgreSQL clients send on a connection of its own, may reach a process other than the
    session's. The owner is written into the key's process id (``pid % count == index``)
    and every process listens on a private Unix socket (``sockets[index]``) where the
    others pass such requests on, unchanged.

    >>> workers = Workers(index=0, count=2, sockets=("/run/airlock/gw-0", "/run/airlock/gw-1"))
    >>> workers.owner(4242), workers.owner(4243)
    (0, 1)
    """

    index: int
    count: int
    sockets: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count or len(self.sockets) != self.count:
            raise ValueError(f"worker {self.index} of {self.count} with {len(self.sockets)} sockets")

    def owner(self, pid: int) -> int:
        return pid % self.count


class LoginFailed(Exception):
    def __init__(self, code: str, message: str, *, counts_as_failure: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.counts_as_failure = counts_as_failure


@dataclass
class AgentCredentials:
    """What SCRAM needs before the client proves anything."""

    agent_id: int | None
    salt: bytes
    verifiers: list[Any]  # ScramVerifier
    tokens: dict[int, Any] = field(default_factory=dict)  # id(verifier) -> AgentToken


@dataclass
class Authorized:
    """The result of login: who, where, with what policy."""

    agent_id: int | None
    agent_name: str
    groups: frozenset[str]
    on_behalf_of: str
    connection_id: int
    connection_name: str
    target: UpstreamTarget
    decision_point: DecisionPoint
    masking: Any = None  # masking.MaskingPolicy (the agent's view), None when off
    # The connection's ``approval_mode`` option: "wait" holds a reviewed statement,
    # "return" refuses it at once naming the approval request (docs/approvals.md). A review
    # rule's own ``approval_mode`` takes precedence (``ReviewGate.waits_for``).
    approval_mode: str = "wait"
    # For the login's audit record: the agent, the token it used (None for a JWT) and,
    # for a JWT, "issuer|subject".
    agent: Any = None
    token: Any = None
    subject: str = ""


DecisionPointFactory = Callable[[Any, str, frozenset[str]], DecisionPoint]
RecorderFactory = Callable[..., Awaitable[Any]]


def default_decision_point(connection: Any, agent: str, groups: frozenset[str]) -> DecisionPoint:
    return DecisionPoint.for_connection(connection, agent=agent, groups=groups)


def make_review_gate(authorized: Authorized, session_id: Any) -> Any:
    """The approvals gate of a session (``approvals.gateway.ReviewGate``)."""
    from approvals.gateway import ReviewGate

    return ReviewGate(
        agent_id=authorized.agent_id,
        connection_id=authorized.connection_id,
        session_id=session_id,
        agent_waits=authorized.approval_mode != "return",
        # Requests store the statement and parameters as the agent's masking shows them.
        mask_text=(lambda text: authorized.masking.mask_text(text)[0]) if authorized.masking else None,
    )


async def default_recorder(**kwargs: Any) -> Any:
    from recordings.writer import SessionRecorder

    return await SessionRecorder.start(**kwargs)


# --- database work at login (runs in worker threads) -------------------------------------------


def _in_db_thread(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run ``fn`` in a worker thread, closing its database connection afterwards.

    Logins are rare next to statements; a connection per login keeps worker threads from
    holding database connections open between logins.
    """

    def call(*args: Any) -> Any:
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()

    return sync_to_async(call, thread_sensitive=False)


def _agent_credentials(agent_name: str, server_secret: bytes) -> AgentCredentials:
    from identity.actions import scram_verifiers_for

    agent, pairs = scram_verifiers_for(agent_name)
    if agent is None:
        return AgentCredentials(None, fake_salt(server_secret, agent_name), [])
    salt = bytes(agent.scram_salt) or fake_salt(server_secret, agent_name)
    verifiers = [verifier for _, verifier in pairs]
    return AgentCredentials(agent.pk, salt, verifiers, {id(v): t for t, v in pairs})


def _jwt_identity(raw: str) -> tuple[int, str, frozenset[str], str]:
    """SEAM for agent JWTs: ``identity.jwt.verify_agent_jwt`` when that module exists.

    Until it does, a cleartext password (a JWT) is refused like a bad credential.
    """
    try:
        from identity.jwt import verify_agent_jwt
    except ImportError:
        raise LoginFailed("28P01", "JWT login is not available", counts_as_failure=True) from None
    try:
        identity = verify_agent_jwt(raw)
    except Exception:
        raise LoginFailed("28P01", "the JWT was refused", counts_as_failure=True) from None
    return identity.agent.pk, identity.name, identity.groups, identity.subject


def _authorize(
    agent_id: int,
    token: Any,
    connection_name: str,
    make_decision_point: DecisionPointFactory,
    jwt_groups: frozenset[str] | None = None,
    subject: str = "",
) -> Authorized:
    from gateway.models import Connection
    from gateway.secrets import SecretDecryptionError, get_secrets
    from identity.actions import note_token_used
    from identity.models import Agent

    agent = Agent.objects.enabled().select_related("on_behalf_of").filter(pk=agent_id).first()
    if agent is None:
        raise LoginFailed("28P01", "agent disabled", counts_as_failure=True)
    if token is not None:
        note_token_used(token)
    connection = (
        Connection.objects.filter(name=connection_name, kind=Connection.Kind.POSTGRES, enabled=True)
        .select_related("policy")
        .first()
    )
    if connection is None:
        raise LoginFailed("3D000", f'no PostgreSQL connection named "{connection_name}"')
    # A JWT's groups are the agent's own plus those its claim maps to.
    groups = jwt_groups if jwt_groups is not None else frozenset(agent.group_names())
    if not connection.groups.filter(name__in=groups).exists():
        raise LoginFailed("42501", f'agent "{agent.name}" may not use connection "{connection.name}"')
    try:
        secret = get_secrets(connection)
    except SecretDecryptionError:
        raise LoginFailed(
            "08006", f'the secret of connection "{connection.name}" cannot be decrypted; ask an administrator'
        ) from None
    target = UpstreamTarget(
        connection=connection.name,
        host=connection.host,
        port=connection.effective_port(),
        database=connection.database or connection.name,
        user=connection.username,
        password=secret.get("password", ""),
        sslmode=str((connection.options or {}).get("sslmode", "prefer")),
        ca_cert=secret.get("ca_cert", ""),
    )
    try:
        decision_point = make_decision_point(connection, agent.name, groups)
    except Exception as exc:
        log.error("policy of connection %s cannot be loaded: %s", connection.name, exc)
        raise LoginFailed("XX000", f'the policy of connection "{connection.name}" cannot be loaded') from None
    from gateway.masking_runtime import MaskingUnavailable, masking_for

    try:
        masking = masking_for(connection, groups)
    except MaskingUnavailable as exc:
        log.error("masking on connection %s for %s: %s", connection.name, agent.name, exc)
        raise LoginFailed(
            "XX000", f'masking on connection "{connection.name}" is not available: {exc}'
        ) from None
    # Approval cards and notifications mask what they show with it.
    decision_point.masking = masking
    return Authorized(
        agent_id=agent.pk,
        agent_name=agent.name,
        groups=groups,
        on_behalf_of=agent.on_behalf_of.get_username() if agent.on_behalf_of else "",
        connection_id=connection.pk,
        connection_name=connection.name,
        target=target,
        decision_point=decision_point,
        masking=masking,
        approval_mode=str((connection.options or {}).get("approval_mode", "wait")),
        agent=agent,
        token=token,
        subject=subject,
    )


def _record_login(
    authorized: Authorized, client_address: str, session_id: str, application_name: str, client_tls: str
) -> None:
    from identity.actions import record_agent_login

    record_agent_login(
        authorized.agent,
        authorized.token,
        protocol="postgres",
        connection=authorized.connection_name,
        client_address=client_address,
        session_id=session_id,
        subject=authorized.subject,
        application_name=application_name,
        client_tls=client_tls,
    )


def _record_login_failures(failures: list[dict[str, Any]]) -> None:
    from identity.actions import record_agent_login_failures

    record_agent_login_failures("postgres", failures)


LOGIN_AUDIT_FLUSH_SECONDS = 1.0
LOGIN_RECORD_TIMEOUT = 10.0


# --- the listener -----------------------------------------------------------------------------


class PostgresGateway:
    """The PostgreSQL listener: one ``Session`` per client connection.

    >>> gateway = PostgresGateway()                                # doctest: +SKIP
    >>> host, port = await gateway.start("127.0.0.1", 15432)       # doctest: +SKIP
    >>> await gateway.close()                                      # doctest: +SKIP
    """

    protocol_name = "postgres"

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        tls_context: ssl.SSLContext | None = None,
        decision_point_factory: DecisionPointFactory = default_decision_point,
        recorder_factory: RecorderFactory = default_recorder,
        server_secret: bytes | None = None,
        workers: Workers | None = None,
    ) -> None:
        self.limits = limits or Limits.from_settings()
        self.workers = workers
        self.tls_context = tls_context
        self.decision_point_factory = decision_point_factory
        self.recorder_factory = recorder_factory
        self.server_secret = server_secret or settings.SECRET_KEY.encode()
        self.throttle = LoginThrottle(self.limits.login_failures_per_minute)
        self.login_failures = LoginFailureLog()
        self._login_audit: asyncio.Task[None] | None = None
        self.sessions: set[Session] = set()
        self.cancel_keys: dict[tuple[int, int], Session] = {}
        self._server: asyncio.AbstractServer | None = None
        self._private: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # New policy versions reach open sessions (gateway.policy_watch).
        from gateway.policy_watch import REGISTRY, PolicyWatcher

        self.policy_watcher = PolicyWatcher(REGISTRY, settings.GATEWAY_POLICY_REFRESH_MS / 1000)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        workers = self.workers
        if workers is not None:
            # Cancel requests passed on by the other processes: the same path as the port's.
            self._private = await loop.create_unix_server(self._accept, workers.sockets[workers.index])
        self._server = await loop.create_server(
            self._accept, host, port, reuse_address=True, reuse_port=workers is not None, backlog=1024
        )
        self.policy_watcher.start()
        sock = self._server.sockets[0].getsockname()
        self._login_audit = loop.create_task(self._write_login_failures(), name="login failures audit")
        log.info("PostgreSQL gateway listening on %s:%s", sock[0], sock[1])
        return sock[0], sock[1]

    def _accept(self) -> Link:
        link = Link(self.limits.max_message)
        original = link.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            original(transport)
            if self._closing:
                transport.close()
                return
            session = Session(self, link)
            task = asyncio.get_running_loop().create_task(session.run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        link.connection_made = connection_made  # type: ignore[method-assign]
        return link

    async def close(self, reason: str = "the gateway is shutting down", grace_seconds: float = 15.0) -> None:
        """Stop listening, end every session with a FATAL error, wait for recordings to close."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._private is not None:
            self._private.close()
        for session in list(self.sessions):
            session.end(
                reason, status="terminated", error=pg.fatal("57P01", f"terminating connection: {reason}")
            )
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_seconds)
        await self.policy_watcher.close()
        from recordings.live import close_termination_listener

        await close_termination_listener()
        task, self._login_audit = self._login_audit, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await self._flush_login_failures(closing=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _write_login_failures(self) -> None:
        """Failed logins reach the audit log from here, at the rate ``LoginFailureLog``
        allows, off every session's path."""
        while True:
            await asyncio.sleep(LOGIN_AUDIT_FLUSH_SECONDS)
            await self._flush_login_failures()

    async def _flush_login_failures(self, *, closing: bool = False) -> None:
        records = self.login_failures.take(closing=closing)
        if not records:
            return
        try:
            await asyncio.wait_for(_in_db_thread(_record_login_failures)(records), LOGIN_RECORD_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%d failed-login audit records not written: %s", len(records), type(exc).__name__)

    def new_cancel_key(self, session: Session) -> tuple[int, int]:
        while True:
            pid = secrets.randbits(31)
            if self.workers is not None:
                # The owner's index in the pid, for the process a cancel request reaches.
                pid -= pid % self.workers.count - self.workers.index
                if pid >= 1 << 31:
                    continue
            if pid == 0:
                continue
            key = secrets.randbits(32) - (1 << 31)
            if (pid, key) not in self.cancel_keys:
                self.cancel_keys[(pid, key)] = session
                return pid, key


class Session:
    """One client connection through the gateway."""

    def __init__(self, gateway: PostgresGateway, client: Link) -> None:
        self.gateway = gateway
        self.limits = gateway.limits
        self.client = client
        self.upstream: Link | None = None
        self.relay: Relay | None = None
        self.recorder: Any = None
        self.authorized: Authorized | None = None
        self.cancel_key: tuple[int, int] | None = None
        self.upstream_key = (0, 0)
        peer = client.transport.get_extra_info("peername") if client.transport else None
        self.address = str(peer[0]) if peer else ""
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.tls = False
        self.direct_tls = False
        self.agent_name = ""
        self.application_name = ""
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._end_reason = "client disconnected"
        self._end_status = "ended"
        self._timer: asyncio.TimerHandle | None = None
        self._review_task: asyncio.Task[None] | None = None
        self._catalog_task: asyncio.Task[None] | None = None
        self.catalog: Any = None
        self._watching_termination = False
        self._login_record: asyncio.Task[None] | None = None
        # Approvals: the gate of this session, the approved statement whose run is to be
        # reported, and a notice waiting for the client stream to reach a message boundary.
        self.review_gate: Any = None
        self._approved: Any = None
        self._pending_notice = b""
        self.started = asyncio.get_running_loop().time()
        self.last_activity = self.started

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        gateway = self.gateway
        counted = False
        try:
            if len(gateway.sessions) >= self.limits.max_sessions:
                self.client.write(pg.fatal("53300", "sorry, too many clients already"))
                return
            gateway.sessions.add(self)
            counted = True
            self.client.on_lost = self._client_lost
            try:
                ready = await asyncio.wait_for(self._handshake(), self.limits.handshake_timeout)
            except TimeoutError:
                self.client.write(pg.fatal("08006", "the startup did not complete in time"))
                self._end_reason = "startup timed out"
                return
            if not ready:
                return
            self._start_relay()
            await self._done
        except ProtocolError as exc:
            log.warning("session from %s closed: %s", self.peer, exc)
            self._send_fatal_for(exc)
            self._end_reason = f"protocol error: {exc}"
            self._end_status = "terminated"
        except (ConnectionError, asyncio.IncompleteReadError):
            self._end_reason = "client disconnected"
        except Exception:
            log.exception("session from %s failed", self.peer)
            self.client.write(pg.fatal("XX000", "internal error in the gateway"))
            self._end_reason = "internal error"
            self._end_status = "terminated"
        finally:
            if counted:
                gateway.sessions.discard(self)
            await self._cleanup()

    def _send_fatal_for(self, exc: ProtocolError) -> None:
        if isinstance(exc, pg.MessageTooLarge):
            self.client.write(pg.fatal("54000", f"{exc}"))
        elif isinstance(exc, UnsupportedProtocol):
            self.client.write(pg.fatal("0A000", str(exc)))
        else:
            self.client.write(pg.fatal("08P01", f"protocol violation: {exc}"))

    async def _cleanup(self) -> None:
        if not self._done.done():
            # The end reason is settled: a client that goes away while this awaits
            # (below) must not rewrite it.
            self._done.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
        if self._catalog_task is not None:
            self._catalog_task.cancel()
        if self.catalog is not None:
            self.catalog.close()
        if self._review_task is not None:
            self._review_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                # Let the review cancel its request before the session's records close.
                await asyncio.wait_for(self._review_task, 10)
        if self._approved is not None and self.review_gate is not None:
            approved, self._approved = self._approved, None
            with contextlib.suppress(Exception):
                await self.review_gate.finished(
                    approved, ok=False, detail="the session ended before the statement's result was known"
                )
        if self.cancel_key is not None:
            self.gateway.cancel_keys.pop(self.cancel_key, None)
        if self.upstream is not None:
            if not self.upstream.closed:
                self.upstream.write(pg.message(b"X"))
            self.upstream.close()
        self.client.close()
        if self._login_record is not None and not self._login_record.done():
            await self._login_recorded()
        if self._watching_termination:
            from recordings.live import stop_watching

            await stop_watching(self.recorder.session_id)
        if self.recorder is not None:
            if self.relay is not None:
                try:
                    self.relay.flush_records()
                except Exception:
                    # Never keeps the recording from being closed and sealed below.
                    log.exception("session %s: queued events could not be recorded", self.peer)
            try:
                await self.recorder.close(reason=self._end_reason, status=self._end_status)
            except Exception:
                log.exception("session %s: the recording could not be closed", self.peer)

    def _append(self, kind: str, payload: dict[str, Any]) -> None:
        """Record a session-level event after the relay's queued ones (their order is kept)."""
        if self.relay is not None:
            self.relay.flush_records()
        self.recorder.append(kind, payload)

    def end(self, reason: str, *, status: str = "ended", error: bytes | None = None) -> None:
        """End the session (idempotent): optionally tell the client why, close both sides."""
        if self._done.done():
            return
        self._end_reason = reason
        self._end_status = status
        if error is not None:
            self.client.write(error)
        if status != "ended":
            log.info("session %s of %s ended: %s", self.peer, self.agent_name or "?", reason)
        self._done.set_result(None)
        if self.relay is None:
            # Still logging in: closing the socket ends the awaited read (after the
            # error above is flushed).
            self.client.close()

    def _client_lost(self, exc: Exception | None) -> None:
        self.end("client disconnected")

    def _upstream_lost(self, exc: Exception | None) -> None:
        name = self.authorized.connection_name if self.authorized else "?"
        self.end(
            "the server closed the connection",
            status="terminated",
            error=pg.fatal("08006", f'connection "{name}": the server closed the connection'),
        )

    def terminated_by(self, by: str, reason: str) -> None:
        """A person ended the session from the console (``recordings.live``, session.terminate)."""
        from recordings.live import terminated_reason

        why = terminated_reason(by, reason)
        message = f"terminating connection: {why}"
        if self.recorder is not None:
            self._append("error", {"code": "57P01", "message": message, "severity": "FATAL"})
        self.end(why, status="terminated", error=pg.fatal("57P01", message))

    def recording_failed(self, reason: str) -> None:
        # Strict recording: a session that cannot be recorded does not go on.
        self.end(
            f"recording failed: {reason}",
            status="terminated",
            error=pg.fatal("58000", "terminating connection: the session can no longer be recorded"),
        )

    # -- startup and login -------------------------------------------------------------------

    async def _handshake(self) -> bool:
        client = self.client
        while True:
            if not self.tls and await client.peek_byte() == pg.TLS_HANDSHAKE:
                if not await self._direct_tls():
                    return False
                continue
            body = await client.read_startup()
            packet = parse_startup_packet(body)
            if packet.kind is Kind.SSL:
                if self.tls:
                    raise ProtocolError("SSLRequest inside TLS")
                if client.has_buffered():
                    # CVE-2021-23214: bytes sent before the TLS handshake must not be
                    # taken as if they had come encrypted.
                    raise ProtocolError("received unencrypted data after SSL request")
                if self.gateway.tls_context is None:
                    client.write(b"N")
                    continue
                client.write(b"S")
                try:
                    await client.start_tls(self.gateway.tls_context, server_side=True)
                except ssl.SSLError as exc:
                    self._end_reason = f"TLS handshake failed: {exc}"
                    log.info("TLS handshake from %s failed: %s", self.address, exc)
                    return False
                self.tls = True
                continue
            if packet.kind is Kind.GSSENC:
                client.write(b"N")
                continue
            if packet.kind is Kind.CANCEL:
                await self._forward_cancel(packet.cancel_pid, packet.cancel_key)
                self._end_reason = "cancel request"
                return False
            break
        try:
            startup = check_startup(packet)
        except StartupRefused as exc:
            client.write(pg.fatal(exc.code, exc.message))
            self._end_reason = f"startup refused: {exc.message}"
            return False
        self.agent_name = startup.agent
        self.application_name = startup.upstream_params.get("application_name", "")
        if startup.negotiate is not None:
            client.write(pg.negotiate_protocol_version(*startup.negotiate))
        try:
            authorized = await self._login(startup)
        except LoginFailed as exc:
            if exc.counts_as_failure:
                self.gateway.throttle.failed(self.address, startup.agent)
            self.gateway.login_failures.failed(self.address, startup.agent, exc.code, exc.message)
            client.write(pg.fatal(exc.code, exc.message))
            self._end_reason = f"login refused: {exc.message}"
            log.info("login of %r from %s refused: %s", startup.agent, self.address, exc.message)
            return False
        self.authorized = authorized
        return await self._open_session(startup, authorized)

    def _tls_description(self) -> str:
        """The client connection's TLS, as recorded with the session ("" when plain)."""
        ssl_object = self.client.ssl_object()
        if ssl_object is None:
            return ""
        return f"{ssl_object.version()}, {'direct' if self.direct_tls else 'SSLRequest'}"

    async def _direct_tls(self) -> bool:
        """TLS straight away, without an SSLRequest (PostgreSQL 17's ``sslnegotiation=direct``).

        As PostgreSQL does, only a client that names the ``postgresql`` protocol in ALPN
        is served, so a TLS client of another protocol sent here is turned away.
        """
        context = self.gateway.tls_context
        if context is None:
            self._end_reason = "direct TLS refused: the gateway has no TLS certificate"
            return False
        try:
            await self.client.accept_direct_tls(context)
        except ssl.SSLError as exc:
            self._end_reason = f"TLS handshake failed: {exc}"
            log.info("direct TLS handshake from %s failed: %s", self.address, exc)
            return False
        self.tls = self.direct_tls = True
        ssl_object = self.client.ssl_object()
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn != pg.ALPN:
            self._end_reason = f"direct TLS refused: ALPN protocol {alpn!r}, not {pg.ALPN!r}"
            log.info("direct TLS from %s refused: ALPN protocol %r", self.address, alpn)
            return False
        return True

    async def _login(self, startup: ClientStartup) -> Authorized:
        gateway = self.gateway
        if gateway.throttle.blocked(self.address, startup.agent):
            raise LoginFailed("28000", "too many failed logins; try again in a minute")
        credentials = await _in_db_thread(_agent_credentials)(startup.agent, gateway.server_secret)
        use_password = self.tls and bool(settings.AIRLOCK_JWT_ISSUERS) and not credentials.verifiers
        token = None
        jwt_groups = None
        subject = ""
        if use_password:
            # Cleartext only inside TLS, for JWTs (which have no SCRAM verifier).
            self.client.write(pg.AUTH_CLEARTEXT)
            typ, body = await self.client.read_message()
            if typ != pg.MSG_PASSWORD:
                raise ProtocolError("expected a password message")
            raw = body[:-1].decode("utf-8", "replace")
            agent_id, name, jwt_groups, subject = await _in_db_thread(_jwt_identity)(raw)
            if name != startup.agent:
                raise LoginFailed(
                    "28P01", f'the JWT is not for agent "{startup.agent}"', counts_as_failure=True
                )
        else:
            token = await self._scram(startup, credentials)
            agent_id = credentials.agent_id
        if agent_id is None:
            raise LoginFailed("28P01", f'password authentication failed for user "{startup.agent}"')
        return await _in_db_thread(_authorize)(
            agent_id, token, startup.connection, gateway.decision_point_factory, jwt_groups, subject
        )

    async def _scram(self, startup: ClientStartup, credentials: AgentCredentials) -> Any:
        bad = LoginFailed(
            "28P01", f'password authentication failed for user "{startup.agent}"', counts_as_failure=True
        )
        client = self.client
        client.write(pg.auth_sasl([MECHANISM]))
        typ, body = await client.read_message()
        if typ != pg.MSG_PASSWORD:
            raise ProtocolError("expected SASLInitialResponse")
        mechanism, data = pg.parse_sasl_initial(body)
        if mechanism != MECHANISM:
            raise bad
        server = ScramServer(salt=credentials.salt, verifiers=credentials.verifiers)
        try:
            client.write(pg.auth_sasl_continue(server.first(data)))
            typ, body = await client.read_message()
            if typ != pg.MSG_PASSWORD:
                raise ProtocolError("expected SASLResponse")
            matched, final = server.final(body)
        except ScramError:
            raise bad from None
        if matched is None or credentials.agent_id is None:
            raise bad
        client.write(pg.auth_sasl_final(final))
        return credentials.tokens.get(id(matched))

    async def _open_session(self, startup: ClientStartup, authorized: Authorized) -> bool:
        if authorized.masking is not None and self.application_name:
            # The agent's application_name is recorded with the session: masked like the rest.
            try:
                self.application_name = authorized.masking.mask_text(self.application_name)[0]
            except MaskingError:
                self.application_name = "<withheld: it could not be masked>"
        client_tls = self._tls_description()
        try:
            self.recorder = await self.gateway.recorder_factory(
                protocol="postgres",
                agent_name=authorized.agent_name,
                connection_name=authorized.connection_name,
                agent_id=authorized.agent_id,
                connection_id=authorized.connection_id,
                on_behalf_of_name=authorized.on_behalf_of,
                client_address=self.address,
                application_name=self.application_name,
                client_tls=client_tls,
                on_failure=self.recording_failed,
            )
        except Exception as exc:
            log.error("session of %s refused: recording unavailable: %s", authorized.agent_name, exc)
            self.client.write(pg.fatal("58000", "the session cannot be recorded, so it is refused"))
            self._end_reason = "recording unavailable"
            return False
        # The login's audit record is written while the upstream connection is made, and
        # is in the log before the agent is told it is in.
        self._login_record = asyncio.get_running_loop().create_task(
            _in_db_thread(_record_login)(
                authorized,
                self.address,
                str(getattr(self.recorder, "session_id", "")),
                self.application_name,
                client_tls,
            )
        )
        relay = Relay(
            authorized.decision_point,
            self.recorder,
            max_message=self.limits.max_message,
            result_rows=self.limits.result_rows,
            masking=authorized.masking,
        )
        refusal = relay.judge_startup(startup.upstream_params)
        if refusal is not None:
            message = f"a startup setting is not allowed: {refusal.message}"
            if refusal.rule:
                message += f' (rule "{refusal.rule}")'
            self.client.write(pg.fatal("42501", message))
            self._end_reason = "startup setting refused"
            return False
        upstream: Upstream | None = None
        try:
            upstream = await connect_upstream(
                authorized.target,
                startup.upstream_params,
                max_message=self.limits.max_message,
                wait_seconds=self.limits.connect_timeout,
            )
            schemas = None
            # The engine resolves unqualified names on the server's own search_path.
            if getattr(authorized.decision_point, "policy", None) is not None:
                schemas = await current_search_path(upstream, wait_seconds=self.limits.connect_timeout)
        except UpstreamError as exc:
            # The server's own words (a login-time ErrorResponse) can quote a value.
            message = f'cannot connect to connection "{authorized.connection_name}": {relay.mask_server_text(str(exc))}'
            self.recorder.append("error", {"code": "08006", "message": message, "severity": "FATAL"})
            self.client.write(pg.fatal("08006", message))
            self._end_reason = "upstream unreachable"
            self._end_status = "terminated"
            log.warning("session of %s: %s", authorized.agent_name, message)
            if upstream is not None:
                upstream.link.abort()
            return False
        relay.seed_search_path(schemas)
        self.upstream = upstream.link
        self.upstream_key = (upstream.pid, upstream.key)
        self.cancel_key = self.gateway.new_cancel_key(self)
        out = [pg.AUTH_OK]
        out.append(relay.startup_messages(upstream.parameters, upstream.notices))
        out.append(pg.backend_key_data(*self.cancel_key))
        out.append(pg.ready_for_query(upstream.status))
        self.relay = relay
        # Statements' recording runs after what they send is written (Relay.flush_records).
        relay.defer_records = True
        if self.relay.uses_identity:
            from gateway.masking_runtime import CatalogLookup

            self.catalog = CatalogLookup(
                authorized.target,
                max_message=self.limits.max_message,
                wait_seconds=self.limits.connect_timeout,
            )
        session_id = getattr(self.recorder, "session_id", None)
        if session_id is not None:
            from recordings.live import watch_for_termination

            self._watching_termination = await watch_for_termination(session_id, self.terminated_by)
        self.relay.on_statement_done = self._statement_done
        self.review_gate = make_review_gate(authorized, getattr(self.recorder, "session_id", None))
        await self._login_recorded()
        self.client.write(b"".join(out))
        return True

    async def _login_recorded(self) -> None:
        """Wait (bounded) for the login's audit record; a failure is logged, not fatal:
        the recording's session_start holds the same facts."""
        task = self._login_record
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=LOGIN_RECORD_TIMEOUT)
        if task not in done:
            log.error("session %s: the login's audit record is late", self.peer)
        elif task.exception() is not None:
            log.error(
                "session %s: the login's audit record failed: %s", self.peer, type(task.exception()).__name__
            )

    async def _forward_cancel(self, pid: int, key: int) -> None:
        workers = self.gateway.workers
        if workers is not None and workers.owner(pid) != workers.index:
            await self._pass_cancel(workers.sockets[workers.owner(pid)], pid, key)
            return
        session = self.gateway.cancel_keys.get((pid, key))
        if session is None or session.authorized is None:
            log.info("cancel request from %s for an unknown session", self.address)
            return
        if session.cancel_review():
            return
        upstream_pid, upstream_key = session.upstream_key
        try:
            await send_cancel(
                session.authorized.target,
                upstream_pid,
                upstream_key,
                wait_seconds=self.limits.connect_timeout,
            )
        except (UpstreamError, OSError, TimeoutError) as exc:
            log.warning("cancel for session %s could not be sent: %s", session.peer, exc)
        else:
            if session.recorder is not None:
                session._append("notice", {"severity": "INFO", "message": "cancel request forwarded"})

    async def _pass_cancel(self, path: str, pid: int, key: int) -> None:
        """A cancel request for another gateway process, sent on to it as it came."""
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                _, writer = await asyncio.open_unix_connection(path)
                writer.write(pg.cancel_request(pid, key))
                await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            log.warning("cancel request from %s could not be passed to %s: %s", self.address, path, exc)

    # -- relay ------------------------------------------------------------------------------------

    def _start_relay(self) -> None:
        client, upstream = self.client, self.upstream
        if upstream is None:
            raise RuntimeError("relay started without an upstream")
        client.peer = upstream
        upstream.peer = client
        upstream.on_lost = self._upstream_lost
        client.on_data = self._from_client
        upstream.on_data = self._from_server
        if upstream.closed:
            self._upstream_lost(None)
            return
        pending_client = client.take_buffer()
        pending_server = upstream.take_buffer()
        if pending_server:
            self._from_server(pending_server)
        if pending_client:
            self._from_client(pending_client)
        self._schedule_timer()

    def _from_client(self, data: bytes) -> None:
        relay = self.relay
        if not (relay is not None and self.upstream is not None):
            return
        self.last_activity = self._loop.time()
        try:
            out = relay.from_client(data)
        except ProtocolError as exc:
            self._protocol_failure(exc, "client")
            return
        if out:
            self.upstream.write(out)
        relay.flush_records()
        if relay.blocked is not None:
            self._blocked()
        if relay.ended is not None:
            self.end(relay.ended)

    def _from_server(self, data: bytes) -> None:
        relay = self.relay
        if not (relay is not None):
            return
        self.last_activity = self._loop.time()
        try:
            out = relay.from_server(data)
        except ProtocolError as exc:
            self._protocol_failure(exc, "server")
            return
        if out:
            self.client.write(out)
        relay.flush_records()
        if relay.needs_catalog is not None and self._catalog_task is None and self.upstream is not None:
            self.upstream.pause_reading("catalog")
            self._catalog_task = self._loop.create_task(self._lookup(relay.needs_catalog))
        if self._pending_notice and relay.client_at_message_boundary():
            notice, self._pending_notice = self._pending_notice, b""
            self.client.write(notice)
        if relay.blocked == CONFIRM and relay.can_resume():
            self._resume(relay.resume)
        if relay.ended is not None:
            self.end(relay.ended, status="terminated")

    async def _lookup(self, oids: frozenset[int]) -> None:
        """Resolve a result's table OIDs, then let the server's output go on."""
        relay = self.relay
        found = None
        try:
            found = await self.catalog.resolve(oids)
        except Exception as exc:
            # Results over these tables are withheld (fail closed); the next statement retries.
            log.warning("session %s: column identities could not be resolved: %s", self.peer, exc)
            if self.catalog is not None:
                self.catalog.close()
        self._catalog_task = None
        if self._done.done() or relay is None or self.upstream is None:
            return
        relay.supply_catalog(found)
        self._from_server(b"")
        if relay.needs_catalog is None and not self.upstream.closed:
            self.upstream.resume_reading("catalog")

    def _protocol_failure(self, exc: ProtocolError, side: str) -> None:
        log.warning("session %s of %s closed: %s (from the %s)", self.peer, self.agent_name, exc, side)
        if side == "client":
            self._send_fatal_for(exc)
        else:
            self.client.write(pg.fatal("08P01", "the gateway lost track of the server's messages"))
        self.end(f"protocol error: {exc}", status="terminated")

    def _blocked(self) -> None:
        relay = self.relay
        if not (relay is not None):
            return
        if isinstance(relay.blocked, ReviewNeeded):
            # Reading goes on while a statement waits for reviewers, so that a client that
            # goes away is noticed and its request cancelled (WF-05); what it sends meanwhile
            # is buffered by the relay, up to one message's worth.
            if relay.buffered_client_bytes() > self.limits.max_message:
                self.client.pause_reading("relay")
            else:
                self.client.resume_reading("relay")
            if self._review_task is None:
                self._review_task = asyncio.get_running_loop().create_task(self._review(relay.blocked))
            return
        self.client.pause_reading("relay")

    async def _review(self, held: ReviewNeeded) -> None:
        if not (self.authorized is not None and self.relay is not None):
            return
        if self.review_gate is None:
            decision = await self.authorized.decision_point.wait_review(held.request, held.decision)
        else:
            self._inner_review = asyncio.get_running_loop().create_task(
                self.review_gate.review(held.request, held.decision, notice=self._notice)
            )
            try:
                review = await asyncio.shield(self._inner_review)
            except asyncio.CancelledError:
                if self._done.done() or not self._inner_review.cancelled():
                    # The session is ending: the inner review cancels its request (WF-05).
                    self._inner_review.cancel()
                    with contextlib.suppress(BaseException):
                        await self._inner_review
                    raise
                # A CancelRequest while the statement waited (docs 55.2.7): the request
                # is cancelled, and the statement fails as a cancelled one would.
                decision = replace(
                    held.decision,
                    action=Action.DENY,
                    message="canceling statement due to user request: the approval request was cancelled",
                )
            else:
                decision = review.decision
                if decision.action is Action.ALLOW and review.request_id is not None and not review.granted:
                    self._approved = review
            if self.recorder is not None:
                self._append(
                    "approval",
                    {"action": decision.action.value, "rule": decision.rule, "message": decision.message},
                )
        self._review_task = None
        if self._done.done():
            return
        self._resume(lambda: self.relay.resume_review(decision))  # type: ignore[union-attr]

    def cancel_review(self) -> bool:
        """Cancel the review of a held statement (a CancelRequest); False if none waits."""
        inner = getattr(self, "_inner_review", None)
        if self._review_task is None or inner is None or inner.done():
            return False
        inner.cancel()
        return True

    def _notice(self, text: str) -> None:
        notice = pg.notice_response(text)
        if self.relay is not None and not self.relay.client_at_message_boundary():
            self._pending_notice += notice
        else:
            self.client.write(notice)

    def _statement_done(self, decision: Decision, ok: bool, detail: str) -> None:
        approved = self._approved
        if approved is None or decision is not approved.decision or self.review_gate is None:
            return
        self._approved = None
        self._loop.create_task(self.review_gate.finished(approved, ok=ok, detail=detail))

    def _resume(self, step: Callable[[], bytes]) -> None:
        relay = self.relay
        if not (relay is not None and self.upstream is not None):
            return
        try:
            out = step()
        except ProtocolError as exc:
            self._protocol_failure(exc, "client")
            return
        if out:
            self.upstream.write(out)
        relay.flush_records()
        if relay.blocked is not None:
            self._blocked()
        else:
            self.client.resume_reading("relay")
        if relay.ended is not None:
            self.end(relay.ended)

    def _schedule_timer(self) -> None:
        interval = max(0.05, min(self.limits.idle_timeout, self.limits.session_timeout, 10.0) / 4)
        self._timer = asyncio.get_running_loop().call_later(interval, self._tick, interval)

    def _tick(self, interval: float) -> None:
        if self._done.done():
            return
        now = asyncio.get_running_loop().time()
        if now - self.started >= self.limits.session_timeout:
            self.end(
                "session time limit reached",
                status="terminated",
                error=pg.fatal("57P01", "terminating connection: the session time limit was reached"),
            )
            return
        relay = self.relay
        idle = relay is not None and not relay.busy()
        if idle and now - self.last_activity >= self.limits.idle_timeout:
            self.end(
                "idle timeout",
                status="terminated",
                error=pg.fatal("57P05", "terminating connection due to idle-session timeout"),
            )
            return
        self._timer = asyncio.get_running_loop().call_later(interval, self._tick, interval)
