"""libpg_query's parse, normalize and deparse, called without releasing the GIL.

pglast (the PostgreSQL parser this project uses) releases the GIL around every call into
libpg_query (``with nogil`` in ``pglast/parser.pyx``), and frees the result in a second
released section. That suits a program parsing in several threads at once; it is costly
in the gateway, whose event loop parses for a few microseconds per statement while the
recording writer's threads run Python: every release hands the GIL to one of them, and the
loop then waits for it to be handed back (up to the switch interval, twice per call).
Measured here: ``pglast.parser.normalize`` of pgbench's statement takes 1.8 µs alone and
67 µs while one other Python thread is busy (switch interval 0.5 ms); on the gateway under
pgbench, the two libpg_query calls per statement cost more loop time than all the rest
of the policy decision (docs/performance.md).

The functions below call the same C functions of the same library build (pglast's
extension module exports libpg_query's symbols) through ``ctypes.PyDLL``, which keeps the
GIL for the call. Parsing a statement takes microseconds; a caller that parses large texts
in a thread of its own can keep using pglast. Results are byte-for-byte pglast's (tested
against it over the classification and security-case corpus); errors are pglast's own
``ParseError`` with the same message and character index.

Only the calls on the gateway's hot path are here: ``normalize`` (constants to ``$n``,
the shape of a statement), ``parse_json`` and ``deparse`` (a statement's canonical text,
what ``regex`` rules see). When the library cannot be loaded this way (a pglast build
that does not export the symbols), every function falls back to pglast's.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from pglast import parser as pg_parser

__all__ = ["AVAILABLE", "deparse", "normalize", "parse_json"]


class _Error(ctypes.Structure):
    _fields_ = [
        ("message", ctypes.c_char_p),
        ("funcname", ctypes.c_char_p),
        ("filename", ctypes.c_char_p),
        ("lineno", ctypes.c_int),
        ("cursorpos", ctypes.c_int),
        ("context", ctypes.c_char_p),
    ]


class _Protobuf(ctypes.Structure):
    _fields_ = [("len", ctypes.c_size_t), ("data", ctypes.c_void_p)]


class _ParseResult(ctypes.Structure):
    _fields_ = [
        ("parse_tree", ctypes.c_void_p),
        ("stderr_buffer", ctypes.c_void_p),
        ("error", ctypes.POINTER(_Error)),
    ]


class _ProtobufParseResult(ctypes.Structure):
    _fields_ = [
        ("parse_tree", _Protobuf),
        ("stderr_buffer", ctypes.c_void_p),
        ("error", ctypes.POINTER(_Error)),
    ]


class _StringResult(ctypes.Structure):
    """PgQueryNormalizeResult and PgQueryDeparseResult: a string and an error."""

    _fields_ = [("text", ctypes.c_void_p), ("error", ctypes.POINTER(_Error))]


def _load() -> ctypes.PyDLL | None:
    try:
        lib = ctypes.PyDLL(pg_parser.__file__)
        signatures = {
            "pg_query_normalize": ([ctypes.c_char_p], _StringResult),
            "pg_query_free_normalize_result": ([_StringResult], None),
            "pg_query_parse": ([ctypes.c_char_p], _ParseResult),
            "pg_query_free_parse_result": ([_ParseResult], None),
            "pg_query_parse_protobuf": ([ctypes.c_char_p], _ProtobufParseResult),
            "pg_query_free_protobuf_parse_result": ([_ProtobufParseResult], None),
            "pg_query_deparse_protobuf": ([_Protobuf], _StringResult),
            "pg_query_free_deparse_result": ([_StringResult], None),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
    except (OSError, AttributeError):
        return None
    return lib


def _raise(text: str, error: _Error, kind: type[Exception] = pg_parser.ParseError) -> None:
    message = (error.message or b"").decode("utf-8", errors="replace")
    index = error.cursorpos - 1  # 1-based, in characters (as pglast reports it)
    raise kind(message, index if 0 <= index < len(text) else None)


def _normalize(text: str) -> str:
    result = _lib.pg_query_normalize(text.encode("utf-8"))
    try:
        if result.error:
            _raise(text, result.error.contents)
        return ctypes.string_at(result.text).decode("utf-8")
    finally:
        _lib.pg_query_free_normalize_result(result)


def _parse_json(text: str) -> str:
    result = _lib.pg_query_parse(text.encode("utf-8"))
    try:
        if result.error:
            _raise(text, result.error.contents)
        return ctypes.string_at(result.parse_tree).decode("utf-8")
    finally:
        _lib.pg_query_free_parse_result(result)


def _deparse(text: str) -> str:
    parsed = _lib.pg_query_parse_protobuf(text.encode("utf-8"))
    try:
        if parsed.error:
            _raise(text, parsed.error.contents)
        deparsed = _lib.pg_query_deparse_protobuf(parsed.parse_tree)
        try:
            if deparsed.error:
                error = deparsed.error.contents
                raise pg_parser.DeparseError((error.message or b"").decode("utf-8", errors="replace"))
            return ctypes.string_at(deparsed.text).decode("utf-8")
        finally:
            _lib.pg_query_free_deparse_result(deparsed)
    finally:
        _lib.pg_query_free_protobuf_parse_result(parsed)


def _pglast_deparse(text: str) -> str:
    return str(pg_parser.deparse_protobuf(pg_parser.parse_sql_protobuf(text)))


_lib: Any = _load()  # the functions' types are set in _load
AVAILABLE = _lib is not None

normalize: Callable[[str], str] = _normalize if AVAILABLE else pg_parser.normalize
"""``text`` with its constants replaced by ``$1``, ``$2``... (``pglast.parser.normalize``)."""

parse_json: Callable[[str], str] = _parse_json if AVAILABLE else pg_parser.parse_sql_json
"""The JSON parse tree of ``text`` (``pglast.parser.parse_sql_json``)."""

deparse: Callable[[str], str] = _deparse if AVAILABLE else _pglast_deparse
"""``text`` parsed and printed back by PostgreSQL's deparser (what pglast's
``deparse_protobuf(parse_sql_protobuf(text))`` gives)."""
