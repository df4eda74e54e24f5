"""The client's startup phase, sans-I/O: what the first packets ask for and what we answer.

Docs section 55.2.1 "Start-up" and 55.2.10 "SSL Session Encryption": the first packet
is an SSLRequest, a GSSENCRequest, a CancelRequest or a StartupMessage; after an
SSLRequest/GSSENCRequest answered 'N' the client sends another startup packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

from gateway.postgres import protocol
from gateway.postgres.protocol import ProtocolError


class Kind(Enum):
    SSL = "ssl"
    GSSENC = "gssenc"
    CANCEL = "cancel"
    STARTUP = "startup"


@dataclass(frozen=True)
class StartupPacket:
    kind: Kind
    params: dict[str, str] = field(default_factory=dict)
    minor_version: int = 0
    cancel_pid: int = 0
    cancel_key: int = 0


def parse_startup_packet(body: bytes) -> StartupPacket:
    """Classify a startup-phase packet (``body`` is what follows the length word)."""
    if len(body) < 4:
        raise ProtocolError("startup packet too short")
    code = struct.unpack_from("!i", body, 0)[0]
    if code == protocol.SSL_REQUEST_CODE and len(body) == 4:
        return StartupPacket(Kind.SSL)
    if code == protocol.GSSENC_REQUEST_CODE and len(body) == 4:
        return StartupPacket(Kind.GSSENC)
    if code == protocol.CANCEL_REQUEST_CODE and len(body) == 12:
        pid, key = struct.unpack_from("!ii", body, 4)
        return StartupPacket(Kind.CANCEL, cancel_pid=pid, cancel_key=key)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise UnsupportedProtocol(f"unsupported frontend protocol {major}.{minor}: server supports 3.0")
    return StartupPacket(Kind.STARTUP, params=protocol.parse_startup_params(body), minor_version=minor)


class UnsupportedProtocol(ProtocolError):
    pass


class StartupRefused(Exception):
    """The startup packet asks for something the gateway does not allow."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Startup parameters passed to the upstream server, by lower-case name. Anything else is
# dropped: a startup parameter is a GUC set before any statement the policy could see.
SAFE_PARAMS = {
    name.lower(): name
    for name in (
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "search_path",
        "extra_float_digits",
        "IntervalStyle",
        "bytea_output",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
    )
}
# `options` carries "-c name=value" for any GUC (session_replication_role=replica would
# disable triggers); `replication` opens a walsender that speaks another protocol.
REFUSED_PARAMS = {"options", "replication"}

# Client-only encodings whose multi-byte characters can contain ASCII bytes such as a
# quote or backslash: the gateway's view of the SQL text would differ from the server's.
UNSAFE_ENCODINGS = {
    "SJIS",
    "SHIFTJIS",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
    "WIN932",
    "WIN936",
    "WIN949",
    "WIN950",
    "CP932",
    "CP936",
    "CP949",
    "CP950",
}


def is_unsafe_encoding(name: str) -> bool:
    return name.upper().replace("_", "").replace("-", "") in UNSAFE_ENCODINGS


@dataclass(frozen=True)
class ClientStartup:
    """What the client asked for, once checked."""

    agent: str
    connection: str
    upstream_params: dict[str, str]
    # Answer with NegotiateProtocolVersion when not None: (newest minor we speak, options).
    negotiate: tuple[int, list[str]] | None


def check_startup(packet: StartupPacket) -> ClientStartup:
    """Validate a StartupMessage; raises ``StartupRefused`` with the SQLSTATE to send."""
    params = packet.params
    unsupported = sorted(name for name in params if name.startswith("_pq_."))
    negotiate = (0, unsupported) if packet.minor_version > 0 or unsupported else None
    user = params.get("user", "")
    if not user:
        raise StartupRefused("28000", "no agent name specified (the startup parameter user)")
    for name in params:
        if name.lower() in REFUSED_PARAMS:
            raise StartupRefused(
                "42501", f'the startup parameter "{name}" is not allowed through Airlock (it bypasses policy)'
            )
    upstream: dict[str, str] = {}
    for name, value in params.items():
        canonical = SAFE_PARAMS.get(name.lower())
        if canonical is not None:
            upstream[canonical] = value
    encoding = upstream.get("client_encoding", "")
    if encoding and is_unsafe_encoding(encoding):
        raise StartupRefused("0A000", f'client_encoding "{encoding}" is not supported through Airlock')
    # PostgreSQL defaults the database to the user name (docs 55.7, StartupMessage).
    return ClientStartup(
        agent=user,
        connection=params.get("database") or user,
        upstream_params=upstream,
        negotiate=negotiate,
    )
