"""Opening the upstream connection with the connection's stored secret.

Authentication methods: trust, cleartext password, MD5 and SCRAM-SHA-256 (scramp as the
client); TLS by the connection's ``sslmode`` (libpq's meanings, see ``gateway.tls``).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from dataclasses import dataclass, field

import scramp

from gateway.postgres import protocol as pg
from gateway.postgres.link import Link
from gateway.tls import client_context


@dataclass(frozen=True)
class UpstreamTarget:
    """Where and as whom to connect (``password`` and ``ca_cert`` come from the secret)."""

    connection: str
    host: str
    port: int
    database: str
    user: str
    password: str = field(default="", repr=False)
    sslmode: str = "prefer"
    ca_cert: str = field(default="", repr=False)


class UpstreamError(Exception):
    """The upstream server could not be reached or refused us (message safe to show)."""


@dataclass
class Upstream:
    link: Link
    pid: int
    key: int
    parameters: list[tuple[str, str]]
    status: bytes
    notices: list[bytes]


async def _open(target: UpstreamTarget, max_message: int, wait_seconds: float) -> Link:
    loop = asyncio.get_running_loop()
    try:
        _, link = await asyncio.wait_for(
            loop.create_connection(lambda: Link(max_message), target.host, target.port), wait_seconds
        )
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise UpstreamError(f"cannot reach {target.host}:{target.port}: {reason}") from None
    context = client_context(target.sslmode, target.ca_cert)
    if context is None:
        return link
    link.write(pg.ssl_request())
    answer = await asyncio.wait_for(link.read_byte(), wait_seconds)
    if answer == ord("S"):
        if link.has_buffered():
            raise UpstreamError("the server sent unencrypted data after accepting TLS")
        try:
            await asyncio.wait_for(
                link.start_tls(context, server_side=False, server_hostname=target.host), wait_seconds
            )
        except (OSError, TimeoutError) as exc:
            link.abort()
            raise UpstreamError(f"TLS with {target.host}:{target.port} failed: {exc}") from None
    elif answer == ord("N"):
        if target.sslmode != "prefer":
            link.close()
            raise UpstreamError(f"the server does not accept TLS, which sslmode={target.sslmode} requires")
    else:
        link.abort()
        raise UpstreamError("the server answered the SSL request with garbage")
    return link


async def connect_upstream(
    target: UpstreamTarget, params: dict[str, str], *, max_message: int, wait_seconds: float
) -> Upstream:
    """Connect, authenticate and read up to the first ReadyForQuery."""
    try:
        return await asyncio.wait_for(_connect(target, params, max_message, wait_seconds), wait_seconds)
    except TimeoutError:
        raise UpstreamError(f"{target.host}:{target.port} did not complete the connection in time") from None
    except (ConnectionError, pg.ProtocolError) as exc:
        raise UpstreamError(f"{target.host}:{target.port}: {exc}") from None


async def _connect(
    target: UpstreamTarget, params: dict[str, str], max_message: int, wait_seconds: float
) -> Upstream:
    link = await _open(target, max_message, wait_seconds)
    try:
        startup = {"user": target.user, "database": target.database, **params}
        link.write(pg.startup_packet(startup))
        await _authenticate(link, target)
        parameters: list[tuple[str, str]] = []
        notices: list[bytes] = []
        pid = key = 0
        while True:
            typ, body = await link.read_message()
            if typ == ord("S"):
                name, pos = pg.read_cstring(body, 0)
                value, _ = pg.read_cstring(body, pos)
                parameters.append((name.decode(), value.decode("utf-8", "replace")))
            elif typ == ord("K"):
                pid, key = struct.unpack("!ii", body[:8])
            elif typ == ord("N"):
                notices.append(pg.message(b"N", body))
            elif typ == ord("E"):
                raise _server_error(body)
            elif typ == ord("Z"):
                return Upstream(link, pid, key, parameters, body[:1], notices)
            elif typ == ord("v"):
                continue  # NegotiateProtocolVersion: we asked for 3.0 exactly
            else:
                raise UpstreamError(f"unexpected message {chr(typ)!r} during startup")
    except BaseException:
        link.abort()
        raise


# The schemas an unqualified name resolves in, in order, as the server resolves them
# ("$user" expanded, schemas that do not exist left out, the database's and role's own
# settings and the startup packet's search_path applied).
SEARCH_PATH_QUERY = "SELECT pg_catalog.unnest(pg_catalog.current_schemas(false))"


async def current_search_path(upstream: Upstream, *, wait_seconds: float) -> tuple[str, ...]:
    """Ask the freshly connected server for its effective ``search_path`` (before relaying).

    The policy engine resolves unqualified table names with it: its default (``public``)
    is wrong for a database or role whose ``search_path`` puts another schema first.
    """
    link = upstream.link
    link.write(pg.query(SEARCH_PATH_QUERY))
    schemas: list[str] = []
    error: UpstreamError | None = None

    async def read() -> None:
        nonlocal error
        while True:
            typ, body = await link.read_message()
            if typ == ord("D"):
                (length,) = struct.unpack_from("!i", body, 2)
                if length >= 0:
                    schemas.append(body[6 : 6 + length].decode("utf-8", "replace"))
            elif typ == ord("E"):
                error = _server_error(body)
            elif typ == ord("Z"):
                upstream.status = body[:1]
                return
            # RowDescription, CommandComplete, notices: nothing to keep.

    try:
        await asyncio.wait_for(read(), wait_seconds)
    except TimeoutError:
        raise UpstreamError("the server did not say its search_path in time") from None
    except (ConnectionError, pg.ProtocolError) as exc:
        raise UpstreamError(f"reading the server's search_path: {exc}") from None
    if error is not None:
        raise UpstreamError(f"reading the server's search_path: {error}")
    return tuple(schemas)


def _server_error(body: bytes) -> UpstreamError:
    fields = pg.parse_fields(body)
    return UpstreamError(
        f"the server refused the connection: {fields.get('M', '')} (SQLSTATE {fields.get('C', '')})"
    )


async def _authenticate(link: Link, target: UpstreamTarget) -> None:
    scram: scramp.ScramClient | None = None
    while True:
        typ, body = await link.read_message()
        if typ == ord("E"):
            raise _server_error(body)
        if typ != ord("R"):
            raise UpstreamError(f"unexpected message {chr(typ)!r} during authentication")
        code = struct.unpack_from("!i", body, 0)[0]
        if code == 0:
            return
        if code == 3:
            link.write(pg.password_message(target.password))
        elif code == 5:
            salt = body[4:8]
            inner = hashlib.md5((target.password + target.user).encode()).hexdigest()  # noqa: S324 - PostgreSQL's MD5 method
            outer = hashlib.md5(inner.encode() + salt).hexdigest()  # noqa: S324
            link.write(pg.password_message("md5" + outer))
        elif code == 10:
            mechanisms = [m.decode() for m in body[4:].split(b"\x00") if m]
            if "SCRAM-SHA-256" not in mechanisms:
                raise UpstreamError(f"no supported SASL mechanism among {mechanisms}")
            scram = scramp.ScramClient(["SCRAM-SHA-256"], target.user, target.password)
            link.write(pg.sasl_initial_response("SCRAM-SHA-256", scram.get_client_first().encode()))
        elif code == 11 and scram is not None:
            try:
                scram.set_server_first(body[4:].decode())
            except scramp.ScramException as exc:
                raise UpstreamError(f"SCRAM exchange failed: {exc}") from None
            link.write(pg.sasl_response(scram.get_client_final().encode()))
        elif code == 12 and scram is not None:
            try:
                scram.set_server_final(body[4:].decode())
            except scramp.ScramException:
                raise UpstreamError(
                    "the server's SCRAM signature is wrong (not the expected server?)"
                ) from None
        else:
            raise UpstreamError(f"unsupported authentication method {code} requested by the server")


async def send_cancel(target: UpstreamTarget, pid: int, key: int, *, wait_seconds: float) -> None:
    """Send a CancelRequest to the upstream server (docs 55.2.7)."""
    link = await asyncio.wait_for(_open(target, 1024, wait_seconds), wait_seconds)
    try:
        link.write(pg.cancel_request(pid, key))
        # The server closes the connection once it has read the request.
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while not link.closed and asyncio.get_running_loop().time() < deadline:
            try:
                await asyncio.wait_for(link.read_byte(), deadline - asyncio.get_running_loop().time())
            except (ConnectionError, TimeoutError):
                break
    finally:
        link.close()
