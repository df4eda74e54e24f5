"""``COPY ... TO STDOUT`` under masking: what a COPY statement copies, and its rows' fields.

COPY output has no RowDescription, so column rules cannot see which table columns the
fields come from. ``copy_out(statement)`` reads a COPY statement (pglast): its format and
options, and a *probe*, ``SELECT <the same columns> LIMIT 0``, which the gateway runs just
before the COPY in the same Query (same session, same search_path, same snapshot of the
catalog) so that its RowDescription gives each field's table OID, column number and type.
A ``LIMIT 0`` query fetches no row; a query holding a data-modifying statement (``WITH d AS
(DELETE ...)``) would run it anyway, so it gets no probe (the COPY is then withheld).

``CopyFormat.split`` and ``CopyFormat.encode`` read one CopyData row (the server sends one
row per message) into raw fields and values, and write a masked value back in the same
format: text-format escapes (``\\t``, ``\\n``, ``\\\\``, the delimiter) and CSV quoting.
Binary COPY is never read here: under masking it is withheld.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pglast
from pglast import ast
from pglast.stream import RawStream
from pglast.visitors import Visitor

from policies.sql import mentions

_MAY_COPY = re.compile(r"\bcopy\b", re.IGNORECASE)
_DML = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
# Options COPY TO accepts whose effect on the output is understood here.
_KNOWN = {"format", "delimiter", "null", "header", "quote", "escape", "force_quote"}
_TEXT_ESCAPES = {
    b"b"[0]: b"\b",
    b"f"[0]: b"\f",
    b"n"[0]: b"\n",
    b"r"[0]: b"\r",
    b"t"[0]: b"\t",
    b"v"[0]: b"\v",
}
_TEXT_UNESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _FindDML(Visitor):  # type: ignore[misc]
    found = False

    def visit(self, ancestors, node):  # type: ignore[no-untyped-def]
        if isinstance(node, _DML):
            self.found = True


@dataclass(frozen=True)
class CopyFormat:
    csv: bool
    delimiter: bytes
    null: bytes
    quote: bytes
    escape: bytes
    header: bool

    def split(self, line: bytes) -> tuple[list[bytes], list[bytes | None]]:
        """The raw fields of one row (as sent) and their values (None for NULL)."""
        if line.endswith(b"\n"):
            line = line[:-1]
        return self._split_csv(line) if self.csv else self._split_text(line)

    def _split_text(self, line: bytes) -> tuple[list[bytes], list[bytes | None]]:
        raws: list[bytes] = []
        start = 0
        delimiter = self.delimiter[0]
        index = 0
        n = len(line)
        while index < n:
            byte = line[index]
            if byte == 0x5C:  # backslash: the next byte is escaped, never a delimiter
                index += 2
                continue
            if byte == delimiter:
                raws.append(line[start:index])
                start = index + 1
            index += 1
        raws.append(line[start:])
        values: list[bytes | None] = [
            None if raw == self.null else _TEXT_UNESCAPE.sub(_unescape, raw) if b"\\" in raw else raw
            for raw in raws
        ]
        return raws, values

    def _split_csv(self, line: bytes) -> tuple[list[bytes], list[bytes | None]]:
        raws: list[bytes] = []
        values: list[bytes | None] = []
        quote, escape, delimiter = self.quote[0], self.escape[0], self.delimiter[0]
        index = 0
        n = len(line)
        while True:
            start = index
            value = bytearray()
            quoted = False
            while index < n and line[index] != delimiter:
                if line[index] == quote:
                    quoted = True
                    index += 1
                    while True:
                        if index >= n:
                            raise ValueError("unterminated quoted CSV field")
                        byte = line[index]
                        if byte == escape and index + 1 < n and line[index + 1] in (quote, escape):
                            if escape != quote or line[index + 1] == quote:
                                value.append(line[index + 1])
                                index += 2
                                continue
                        if byte == quote:
                            index += 1
                            break
                        value.append(byte)
                        index += 1
                else:
                    value.append(line[index])
                    index += 1
            raw = line[start:index]
            raws.append(raw)
            values.append(None if not quoted and raw == self.null else bytes(value))
            if index >= n:
                return raws, values
            index += 1  # the delimiter

    def encode(self, value: bytes | None) -> bytes:
        """A (masked) value written as a field of this format."""
        if value is None:
            return self.null
        if self.csv:
            quote, escape = self.quote, self.escape
            out = bytearray(quote)
            for byte in value:
                if byte == quote[0] or byte == escape[0]:
                    out += escape
                out.append(byte)
            out += quote
            return bytes(out)
        out = bytearray()
        delimiter = self.delimiter[0]
        for byte in value:
            if byte == 0x5C:
                out += b"\\\\"
            elif byte == delimiter:
                out += b"\\" + bytes((byte,))
            elif byte in _CONTROL:
                out += _CONTROL[byte]
            else:
                out.append(byte)
        return bytes(out)

    def join(self, raws: list[bytes]) -> bytes:
        return self.delimiter.join(raws) + b"\n"


_CONTROL = {8: b"\\b", 12: b"\\f", 10: b"\\n", 13: b"\\r", 9: b"\\t", 11: b"\\v"}


def _unescape(match: re.Match[bytes]) -> bytes:
    octal, hexa, other = match.groups()
    if octal is not None:
        return bytes((int(octal, 8) & 0xFF,))
    if hexa is not None:
        return bytes((int(hexa, 16),))
    return _TEXT_ESCAPES.get(other[0], other)


@dataclass(frozen=True)
class CopyOut:
    """A ``COPY ... TO STDOUT`` statement: its format (None: binary or options not understood
    here), the probe that describes its columns (None: none can be run), and why not."""

    format: CopyFormat | None
    probe: str | None
    problem: str = ""


def _option_text(arg: object) -> str | None:
    if isinstance(arg, ast.String):
        return str(arg.sval)
    return None


def _option_bool(arg: object) -> bool | None:
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return {0: False, 1: True}.get(int(arg.ival or 0))
    text = _option_text(arg)
    if text is None:
        return None
    return {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}.get(text.lower())


def _format(options: tuple[ast.DefElem, ...] | None) -> tuple[CopyFormat | None, str]:
    settings: dict[str, object] = {}
    for option in options or ():
        name = option.defname
        if name not in _KNOWN:
            return None, f"the COPY option {name} is not supported under masking"
        settings[name] = option.arg
    fmt = _option_text(settings.get("format")) if "format" in settings else "text"
    if fmt not in ("text", "csv"):
        return None, "binary COPY output cannot be masked; use the text or CSV format"
    csv = fmt == "csv"
    values: dict[str, str] = {}
    for name in ("delimiter", "null", "quote", "escape"):
        if name in settings:
            text = _option_text(settings[name])
            if text is None:
                return None, f"the COPY option {name} is not understood"
            values[name] = text
    header = _option_bool(settings["header"]) if "header" in settings else False
    if header is None:
        return None, "the COPY option header is not understood"
    delimiter = values.get("delimiter", "," if csv else "\t").encode()
    quote = values.get("quote", '"').encode()
    escape = values.get("escape", values.get("quote", '"')).encode()
    if len(delimiter) != 1 or len(quote) != 1 or len(escape) != 1:
        return None, "COPY delimiter, quote and escape must be single one-byte characters"
    null = values.get("null", "" if csv else "\\N").encode()
    return CopyFormat(csv, delimiter, null, quote, escape, header), ""


def copy_out(statement: str) -> CopyOut | None:
    """What ``statement`` copies if it is a ``COPY ... TO STDOUT``; None if it is not one."""
    if not mentions(statement, _MAY_COPY, ("copy",)):
        return None
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError:
        return None
    if len(parsed) != 1 or not isinstance(parsed[0].stmt, ast.CopyStmt):
        return None
    node = parsed[0].stmt
    if node.is_from or node.is_program or node.filename is not None:
        return None
    fmt, problem = _format(node.options)
    if node.query is not None:
        finder = _FindDML()
        finder(node.query)
        if finder.found:
            return CopyOut(fmt, None, problem or "COPY of a data-modifying query cannot be masked by column")
        # The client's own query, deparsed: it runs in the client's session with its rights.
        probe = f"SELECT * FROM ({RawStream()(node.query)}) AS airlock_copy LIMIT 0"  # noqa: S608
    elif node.relation is not None:
        relation = RawStream()(node.relation)
        columns = ", ".join(_quote_ident(c.sval) for c in node.attlist) if node.attlist else "*"
        probe = f"SELECT {columns} FROM {relation} LIMIT 0"  # noqa: S608 - names quoted, from the parse
    else:
        return None
    return CopyOut(fmt, probe, problem)
