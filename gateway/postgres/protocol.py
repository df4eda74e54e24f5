"""PostgreSQL frontend/backend protocol 3.0: constants, message builders and parsers.

Pure functions over bytes (no I/O). References are to the PostgreSQL 15 documentation,
chapter 55 "Frontend/Backend Protocol", section 55.7 "Message Formats".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from gateway import native
from gateway.postgres import datarows as _datarows
from gateway.postgres import wirerows as _wirerows

# DataRows, the bulk of every result: read and written by gateway/postgres/datarows.py,
# compiled when it was built (gateway/native.py).
if TYPE_CHECKING:
    from gateway.postgres.datarows import data_row as data_row
    from gateway.postgres.datarows import data_rows as data_rows
    from gateway.postgres.datarows import decode_rows as decode_rows
    from gateway.postgres.datarows import parse_data_row as parse_data_row
    from gateway.postgres.datarows import parse_data_rows as parse_data_rows
    from gateway.postgres.wirerows import scan_rows as scan_rows
    from gateway.postgres.wirerows import write_rows as write_rows
else:
    _rows = native.load(_datarows)
    parse_data_rows = _rows.parse_data_rows
    parse_data_row = _rows.parse_data_row
    data_rows = _rows.data_rows
    data_row = _rows.data_row
    decode_rows = _rows.decode_rows
    # Masking's fast path over a result's DataRows (gateway/postgres/wirerows.py, in C
    # when it was built: gateway/postgres/_wirerows.c).
    _wire = native.load(_wirerows)
    scan_rows = _wire.scan_rows
    write_rows = _wire.write_rows

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
# A startup packet is small; PostgreSQL itself refuses ones over 10000 bytes
# (MAX_STARTUP_PACKET_LENGTH in libpq/pqcomm.h).
MAX_STARTUP_PACKET = 10000
# PostgreSQL 17's direct TLS (``sslnegotiation=direct``): the connection opens with a TLS
# handshake record (content type 22) where a startup packet's length would be, and the
# client names this protocol in ALPN.
TLS_HANDSHAKE = 0x16
ALPN = "postgresql"

_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_I16 = struct.Struct("!h")
_HEADER = struct.Struct("!cI")

# Message types as ints (buffer[i] of a bytes object is an int).
MSG_QUERY = ord("Q")
MSG_PARSE = ord("P")
MSG_BIND = ord("B")
MSG_DESCRIBE = ord("D")
MSG_EXECUTE = ord("E")
MSG_CLOSE = ord("C")
MSG_SYNC = ord("S")
MSG_FLUSH = ord("H")
MSG_TERMINATE = ord("X")
MSG_FUNCTION_CALL = ord("F")
MSG_COPY_DATA = ord("d")
MSG_COPY_DONE = ord("c")
MSG_COPY_FAIL = ord("f")
MSG_PASSWORD = ord("p")  # PasswordMessage, SASLInitialResponse, SASLResponse

FRONTEND_TYPES = frozenset(b"QPBDECSHXFdcfp")


class ProtocolError(Exception):
    """The peer broke the protocol: the session that received it is closed."""


class MessageTooLarge(ProtocolError):
    pass


# --- framing ---------------------------------------------------------------------------


class Framer:
    """Splits a byte stream into ``(type, body)`` messages, one chunk at a time.

    >>> framer = Framer(max_message=1 << 20)
    >>> framer.feed(b"Z\\x00\\x00\\x00\\x05IQ\\x00\\x00")
    [(90, b'I')]
    >>> framer.feed(b"\\x00\\x05\\x00")
    [(81, b'\\x00')]
    """

    __slots__ = ("_buf", "_need", "max_message")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._need = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                # A large message arriving in many chunks: wait for all of it without
                # copying the buffer on every chunk.
                return []
            data = bytes(self._buf)
            self._buf.clear()
        out: list[tuple[int, bytes]] = []
        pos = 0
        n = len(data)
        unpack = _U32.unpack_from
        limit = self.max_message
        self._need = 5
        while n - pos >= 5:
            length = unpack(data, pos + 1)[0]
            if length < 4:
                raise ProtocolError(f"invalid message length {length}")
            if length > limit:
                raise MessageTooLarge(f"message of {length} bytes exceeds the limit of {limit}")
            end = pos + 1 + length
            if end > n:
                self._need = end - pos
                break
            out.append((data[pos], data[pos + 5 : end]))
            pos = end
        if pos < n:
            self._buf += data[pos:]
        return out

    def pending(self) -> bytes:
        """Bytes received but not yet framed (handed over when a session changes phase)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._need = 0
        return rest


def message(typ: bytes, body: bytes = b"") -> bytes:
    return _HEADER.pack(typ, len(body) + 4) + body


def cstring(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if b"\x00" in raw:
        raise ValueError("a protocol string cannot contain NUL")
    return raw + b"\x00"


def read_cstring(body: bytes, pos: int) -> tuple[bytes, int]:
    end = body.find(b"\x00", pos)
    if end < 0:
        raise ProtocolError("unterminated string in message")
    return body[pos:end], end + 1


# --- startup phase ----------------------------------------------------------------------


def startup_packet(params: Mapping[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = _I32.pack(version) + b"".join(cstring(k) + cstring(v) for k, v in params.items()) + b"\x00"
    return _I32.pack(len(body) + 4) + body


def parse_startup_params(body: bytes) -> dict[str, str]:
    """The name/value pairs after the protocol version of a StartupMessage."""
    params: dict[str, str] = {}
    pos = 4
    while True:
        if pos >= len(body):
            raise ProtocolError("startup packet is not terminated")
        if body[pos] == 0:
            if pos != len(body) - 1:
                raise ProtocolError("trailing bytes after the startup parameters")
            return params
        name, pos = read_cstring(body, pos)
        value, pos = read_cstring(body, pos)
        try:
            params[name.decode()] = value.decode()
        except UnicodeDecodeError:
            raise ProtocolError("startup parameters must be UTF-8") from None


def ssl_request() -> bytes:
    return _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


def cancel_request(pid: int, key: int) -> bytes:
    return _I32.pack(16) + _I32.pack(CANCEL_REQUEST_CODE) + _I32.pack(pid) + _I32.pack(key)


def authentication(code: int, extra: bytes = b"") -> bytes:
    return message(b"R", _I32.pack(code) + extra)


AUTH_OK = authentication(0)
AUTH_CLEARTEXT = authentication(3)


def auth_sasl(mechanisms: Iterable[str]) -> bytes:
    return authentication(10, b"".join(cstring(m) for m in mechanisms) + b"\x00")


def auth_sasl_continue(data: bytes) -> bytes:
    return authentication(11, data)


def auth_sasl_final(data: bytes) -> bytes:
    return authentication(12, data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstring(name) + cstring(value))


def backend_key_data(pid: int, key: int) -> bytes:
    return message(b"K", _I32.pack(pid) + _I32.pack(key))


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def negotiate_protocol_version(minor: int, unsupported: list[str]) -> bytes:
    return message(
        b"v", _I32.pack(minor) + _I32.pack(len(unsupported)) + b"".join(cstring(o) for o in unsupported)
    )


def parse_sasl_initial(body: bytes) -> tuple[str, bytes]:
    mechanism, pos = read_cstring(body, 0)
    if len(body) < pos + 4:
        raise ProtocolError("truncated SASLInitialResponse")
    length = _I32.unpack_from(body, pos)[0]
    data = body[pos + 4 :]
    if length == -1:
        data = b""
    elif length != len(data):
        raise ProtocolError("SASLInitialResponse length does not match")
    return mechanism.decode("ascii", "replace"), data


def password_message(password: str | bytes) -> bytes:
    return message(b"p", cstring(password))


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", cstring(mechanism) + _I32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(b"p", data)


# --- errors and notices -----------------------------------------------------------------


def error_response(
    code: str, text: str, *, severity: str = "ERROR", detail: str = "", hint: str = ""
) -> bytes:
    body = b"S" + cstring(severity) + b"V" + cstring(severity) + b"C" + cstring(code)
    body += b"M" + cstring(text.replace("\x00", ""))
    if detail:
        body += b"D" + cstring(detail.replace("\x00", ""))
    if hint:
        body += b"H" + cstring(hint.replace("\x00", ""))
    return message(b"E", body + b"\x00")


def fatal(code: str, text: str, **kwargs: str) -> bytes:
    return error_response(code, text, severity="FATAL", **kwargs)


def notice_response(text: str, *, code: str = "00000", severity: str = "NOTICE") -> bytes:
    """A NoticeResponse (docs 55.7): psql prints it as ``NOTICE:  <text>``."""
    body = b"S" + cstring(severity) + b"V" + cstring(severity) + b"C" + cstring(code)
    return message(b"N", body + b"M" + cstring(text.replace("\x00", "")) + b"\x00")


def parse_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse or NoticeResponse body, keyed by their one-letter code."""
    fields: dict[str, str] = {}
    pos = 0
    n = len(body)
    while pos < n and body[pos] != 0:
        code = chr(body[pos])
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            break
        fields[code] = body[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return fields


# --- extended query protocol ------------------------------------------------------------


def parse_parse(body: bytes) -> tuple[bytes, bytes, tuple[int, ...]]:
    """Statement name, query text (raw bytes) and parameter type OIDs of a Parse message."""
    name, pos = read_cstring(body, 0)
    query, pos = read_cstring(body, pos)
    try:
        count = _I16.unpack_from(body, pos)[0]
        types = struct.unpack_from(f"!{count}I", body, pos + 2) if count > 0 else ()
    except struct.error:
        raise ProtocolError("truncated Parse message") from None
    return name, query, tuple(types)


def parse_parameter_description(body: bytes) -> tuple[int, ...]:
    """The parameter type OIDs of a ParameterDescription (the server's answer to Describe
    of a statement: the types it inferred for every parameter, declared ones included)."""
    try:
        count = _I16.unpack_from(body, 0)[0]
        types = struct.unpack_from(f"!{count}I", body, 2) if count > 0 else ()
    except struct.error:
        raise ProtocolError("truncated ParameterDescription message") from None
    return tuple(types)


def parse_bind(body: bytes) -> tuple[bytes, bytes, tuple[bytes | None, ...], tuple[int, ...]]:
    """Portal, statement, parameter values (None for NULL) and their format codes."""
    portal, statement, values, codes, _ = _parse_bind(body, False)
    return portal, statement, values, codes


def parse_bind_all(
    body: bytes,
) -> tuple[bytes, bytes, tuple[bytes | None, ...], tuple[int, ...], tuple[int, ...]]:
    """``parse_bind``'s four and the result-column format codes as sent (none, one, or one
    per column), in one pass over the message."""
    return _parse_bind(body, True)


def _parse_bind(
    body: bytes, results: bool
) -> tuple[bytes, bytes, tuple[bytes | None, ...], tuple[int, ...], tuple[int, ...]]:
    portal, pos = read_cstring(body, 0)
    statement, pos = read_cstring(body, pos)
    result_formats: tuple[int, ...] = ()
    try:
        nformats = _I16.unpack_from(body, pos)[0]
        pos += 2
        formats = struct.unpack_from(f"!{nformats}h", body, pos) if nformats else ()
        pos += 2 * nformats
        nparams = _I16.unpack_from(body, pos)[0]
        pos += 2
        values: list[bytes | None] = []
        for _ in range(nparams):
            length = _I32.unpack_from(body, pos)[0]
            pos += 4
            if length == -1:
                values.append(None)
            else:
                if length < 0 or pos + length > len(body):
                    raise ProtocolError("Bind parameter runs past the message")
                values.append(body[pos : pos + length])
                pos += length
        if results:
            count = _I16.unpack_from(body, pos)[0]
            if count < 0:
                raise ProtocolError("Bind result format count is negative")
            result_formats = tuple(struct.unpack_from(f"!{count}h", body, pos + 2)) if count else ()
    except struct.error:
        raise ProtocolError("truncated Bind message") from None
    if nformats not in (0, 1, nparams) or nformats < 0 or nparams < 0:
        raise ProtocolError("Bind format codes do not match the parameters")
    # Section 55.7, Bind: no codes = all text; one code applies to every parameter.
    if nformats == 0:
        codes: tuple[int, ...] = (0,) * nparams
    elif nformats == 1:
        codes = (formats[0],) * nparams
    else:
        codes = tuple(formats)
    return portal, statement, tuple(values), codes, result_formats


def parse_name_after_kind(body: bytes) -> tuple[int, bytes]:
    """(kind byte 'S' or 'P', name) of a Describe or Close message."""
    if not body:
        raise ProtocolError("empty Describe/Close message")
    name, _ = read_cstring(body, 1)
    return body[0], name


def parse_execute(body: bytes) -> tuple[bytes, int]:
    portal, pos = read_cstring(body, 0)
    if len(body) < pos + 4:
        raise ProtocolError("truncated Execute message")
    return portal, _I32.unpack_from(body, pos)[0]


def query(text: str | bytes) -> bytes:
    return message(b"Q", cstring(text))


def parse_message(name: bytes, text: bytes) -> bytes:
    return message(b"P", name + b"\x00" + text + b"\x00" + b"\x00\x00")


# --- results ----------------------------------------------------------------------------


def parse_row_description(body: bytes) -> list[tuple[str, int]]:
    """Column names and format codes of a RowDescription."""
    count = _I16.unpack_from(body, 0)[0]
    pos = 2
    columns = []
    for _ in range(count):
        name, pos = read_cstring(body, pos)
        fmt = _I16.unpack_from(body, pos + 16)[0]
        pos += 18
        columns.append((name.decode("utf-8", "replace"), fmt))
    return columns


def command_rows(tag: str) -> int | None:
    """Rows returned or affected, from a CommandComplete tag ("SELECT 5", "INSERT 0 3")."""
    last = tag.rpartition(" ")[2]
    return int(last) if last.isdigit() else None


# --- masking support ---------------------------------------------------------------------

_ROW_FIELD = struct.Struct("!IhIhih")


def parse_row_fields(body: bytes) -> list[tuple[str, int, int, int, int]]:
    """Every field of a RowDescription: (name, table OID, column number, type OID, format)."""
    count = _I16.unpack_from(body, 0)[0]
    pos = 2
    fields = []
    for _ in range(count):
        name, pos = read_cstring(body, pos)
        table, attnum, type_oid, _size, _mod, fmt = _ROW_FIELD.unpack_from(body, pos)
        pos += 18
        fields.append((name.decode("utf-8", "replace"), table, attnum, type_oid, fmt))
    return fields


def parse_field_list(body: bytes) -> list[tuple[int, bytes]]:
    """The fields of an ErrorResponse or NoticeResponse as raw ``(code, value)`` pairs, in order."""
    fields: list[tuple[int, bytes]] = []
    pos = 0
    n = len(body)
    while pos < n and body[pos] != 0:
        end = body.find(b"\x00", pos + 1)
        if end < 0:
            raise ProtocolError("unterminated error or notice field")
        fields.append((body[pos], body[pos + 1 : end]))
        pos = end + 1
    return fields


def field_list_message(typ: bytes, fields: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes((code,)) + value.replace(b"\x00", b"") + b"\x00" for code, value in fields)
    return message(typ, body + b"\x00")
