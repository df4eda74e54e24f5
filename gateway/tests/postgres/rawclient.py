"""A minimal blocking PostgreSQL client over a raw socket, for what libpq will not send
(malformed packets, FunctionCall, protocol 3.1 startup). Authentication is real SCRAM
through scramp."""

from __future__ import annotations

import socket
import struct

import scramp

from gateway.postgres import protocol as pg


class RawSession:
    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self) -> tuple[str, bytes]:
        while len(self.buf) < 5 or len(self.buf) < 1 + struct.unpack_from("!I", self.buf, 1)[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed by the gateway")
            self.buf += chunk
        length = struct.unpack_from("!I", self.buf, 1)[0]
        typ, body = chr(self.buf[0]), self.buf[5 : 1 + length]
        self.buf = self.buf[1 + length :]
        return typ, body

    def until(self, typ: str) -> list[tuple[str, bytes]]:
        out = []
        while True:
            message = self.read_message()
            out.append(message)
            if message[0] == typ:
                return out

    def login(
        self, agent: str, token: str, dbname: str = "shop", version: int = pg.PROTOCOL_3_0, **params: str
    ) -> list[tuple[str, bytes]]:
        self.send(pg.startup_packet({"user": agent, "database": dbname, **params}, version))
        seen = []
        client = None
        while True:
            typ, body = self.read_message()
            seen.append((typ, body))
            if typ == "R":
                code = struct.unpack_from("!i", body)[0]
                if code == 10:
                    client = scramp.ScramClient(["SCRAM-SHA-256"], agent, token)
                    self.send(pg.sasl_initial_response("SCRAM-SHA-256", client.get_client_first().encode()))
                elif code == 11 and client is not None:
                    client.set_server_first(body[4:].decode())
                    self.send(pg.sasl_response(client.get_client_final().encode()))
                elif code == 12 and client is not None:
                    client.set_server_final(body[4:].decode())
            elif typ in ("Z", "E"):
                return seen

    def closed(self) -> bool:
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def fields(body: bytes) -> dict[str, str]:
    return pg.parse_fields(body)


# Extended-protocol messages as clients send them (Parse: ``pg.parse_message``).


def bind(
    portal: bytes = b"", statement: bytes = b"", values: tuple[bytes, ...] = (), binary: bool = False
) -> bytes:
    """A Bind of ``statement`` to ``portal``: ``values`` all in the text format, or all in
    the binary one; results in the text format."""
    formats = struct.pack("!hh", 1, 1) if binary else struct.pack("!h", 0)
    params = b"".join(struct.pack("!i", len(value)) + value for value in values)
    body = portal + b"\x00" + statement + b"\x00" + formats + struct.pack("!h", len(values)) + params
    return pg.message(b"B", body + struct.pack("!h", 0))


def execute(portal: bytes = b"") -> bytes:
    """An Execute of ``portal`` fetching every row."""
    return pg.message(b"E", portal + b"\x00" + struct.pack("!i", 0))


SYNC = pg.message(b"S")
