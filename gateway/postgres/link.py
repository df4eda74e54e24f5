"""One socket of a session, as an asyncio Protocol (the thin I/O edge).

During the startup phase the session awaits whole packets (``read_startup``,
``read_message``); in the relay phase every chunk goes straight to ``on_data``, with no
task switch and no per-message read. Flow control is passed across: when the peer's
socket cannot take more, this side stops reading.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from asyncio import sslproto
from collections.abc import Callable

from gateway import busypoll
from gateway.postgres import protocol as pg
from gateway.postgres.protocol import ProtocolError

_U32 = struct.Struct("!I")


class Link(asyncio.Protocol):
    """A socket whose bytes are read in the chunks they arrive in.

    >>> transport, link = await loop.create_connection(lambda: Link(1 << 20), host, port)  # doctest: +SKIP
    >>> typ, body = await link.read_message()                                              # doctest: +SKIP
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.transport: asyncio.Transport | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.peer: Link | None = None
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._paused_by: set[str] = set()
        self._peer_full = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        busypoll.poke()  # keep polling for the answer once this is handled
        on_data = self.on_data
        if on_data is not None:
            on_data(data)
            return
        self._buf += data
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed PostgreSQL socket is finished

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading("peer-full")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading("peer-full")

    # -- reading control ------------------------------------------------------------------

    def pause_reading(self, why: str) -> None:
        if not self._paused_by and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused_by.add(why)

    def resume_reading(self, why: str) -> None:
        self._paused_by.discard(why)
        if not self._paused_by and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- startup phase ----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self.closed:
            raise ConnectionResetError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_startup(self) -> bytes:
        """The body of an untyped startup-phase packet (after its length word)."""
        while True:
            if len(self._buf) >= 4:
                length = _U32.unpack_from(self._buf, 0)[0]
                if length < 8 or length > pg.MAX_STARTUP_PACKET:
                    raise ProtocolError(f"invalid startup packet length {length}")
                if len(self._buf) >= length:
                    body = bytes(self._buf[4:length])
                    del self._buf[:length]
                    return body
            await self._wait()

    async def read_message(self) -> tuple[int, bytes]:
        """The next typed message: (type byte, body)."""
        while True:
            if len(self._buf) >= 5:
                length = _U32.unpack_from(self._buf, 1)[0]
                if length < 4:
                    raise ProtocolError(f"invalid message length {length}")
                if length > self.max_message:
                    raise pg.MessageTooLarge(f"message of {length} bytes exceeds the limit")
                if len(self._buf) >= length + 1:
                    typ = self._buf[0]
                    body = bytes(self._buf[5 : length + 1])
                    del self._buf[: length + 1]
                    return typ, body
            await self._wait()

    async def peek_byte(self) -> int:
        """The next byte, left in the buffer."""
        while not self._buf:
            await self._wait()
        return self._buf[0]

    async def read_byte(self) -> int:
        while not self._buf:
            await self._wait()
        value = self._buf[0]
        del self._buf[:1]
        return value

    def has_buffered(self) -> bool:
        return bool(self._buf)

    def take_buffer(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS of this socket (version, ALPN, peer certificate), or None while it is plain."""
        return self.transport.get_extra_info("ssl_object") if self.transport is not None else None

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        if self.transport is None:
            raise ConnectionResetError("not connected")
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self.transport, self, context, server_side=server_side, server_hostname=server_hostname
        )
        if transport is None:
            raise ConnectionResetError("connection closed during the TLS handshake")
        self.transport = transport  # type: ignore[assignment]

    async def accept_direct_tls(self, context: ssl.SSLContext, handshake_seconds: float = 30.0) -> None:
        """Serve TLS on a connection whose first bytes, already read, open a TLS handshake.

        ``loop.start_tls`` cannot be handed bytes already read, so this wires the standard
        library's TLS protocol in itself (what ``start_tls`` does inside): it becomes the
        socket's protocol and is fed the buffered ClientHello; once the handshake is done
        this Link reads and writes through it (``_TlsSide`` passes the decrypted side on).
        """
        transport = self.transport
        if transport is None or self.closed:
            raise ConnectionResetError("not connected")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        side = _TlsSide(self)
        tls = sslproto.SSLProtocol(
            loop, side, context, waiter, server_side=True, ssl_handshake_timeout=handshake_seconds
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)
        hello = memoryview(self.take_buffer())
        while hello and not waiter.done():
            buffer = tls.get_buffer(len(hello))
            n = min(len(buffer), len(hello))
            buffer[:n] = hello[:n]
            hello = hello[n:]
            tls.buffer_updated(n)
        await waiter
        if side.transport is None:
            raise ConnectionResetError("connection closed during the TLS handshake")
        self.transport = side.transport


class _TlsSide(asyncio.Protocol):
    """The decrypted side of a direct TLS connection, passed on to its Link.

    The Link itself is not handed to the TLS protocol: its ``connection_made`` is where
    the gateway starts a session, and the end of a handshake must not start another.
    """

    def __init__(self, link: Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.link.data_received(data)

    def eof_received(self) -> bool:
        return self.link.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.connection_lost(exc)

    def pause_writing(self) -> None:
        self.link.pause_writing()

    def resume_writing(self) -> None:
        self.link.resume_writing()
