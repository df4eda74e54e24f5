"""Splitting a simple Query's text into statements, and spotting statements that change
the prepared-statement namespace (pure).

PostgreSQL runs every statement of a simple Query string (docs 55.2.2.1 "Multiple
Statements in a Simple Query"); each one must be decided on, so a statement the splitter
missed would run undecided. ``pglast.split`` with the scanner silently drops fragments it
cannot classify, so the split here is on the scanner's top-level ``;`` tokens (which
already knows quotes, dollar quotes and comments), preferring the parser's split when the
text parses (it keeps ``BEGIN ATOMIC ... END`` bodies whole).
"""

from __future__ import annotations

import re

import pglast
from pglast import parser as pg_parser

from policies.sql import mentions

Span = tuple[int, int]


def split_statements(text: str) -> list[Span]:
    """(start, end) character spans of the statements of ``text``; empty ones are dropped."""
    stripped_end = len(text.rstrip().rstrip(";").rstrip())
    if ";" not in text[:stripped_end]:
        # The common case: one statement, perhaps with a trailing semicolon.
        start = len(text) - len(text.lstrip())
        return [(start, stripped_end)] if stripped_end > start else []
    try:
        slices = pglast.split(text, with_parser=True, only_slices=True)
        spans = [(s.start, s.stop) for s in slices]
    except Exception:
        spans = _scanner_split(text)
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _scanner_split(text: str) -> list[Span]:
    try:
        tokens = pg_parser.scan(text)
    except Exception:
        return [(0, len(text))]
    spans: list[Span] = []
    start = 0
    for token in tokens:
        if token.name == "ASCII_59":
            spans.append((start, token.start))
            start = token.end + 1
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        out.append((a + lead, a + len(piece.rstrip())))
    return out


_NAMESPACE_WORDS = re.compile(r"(?i)\b(prepare|deallocate|discard)\b")
_NAMESPACE_LOWER = ("prepare", "deallocate", "discard")
_COMMENTS = ("C_COMMENT", "SQL_COMMENT")


def prepared_names_touched(statement: str) -> frozenset[str] | None:
    """Names of prepared statements that ``statement`` may create or drop.

    Protocol-level (Parse) and SQL-level (PREPARE) statements share one namespace. Returns
    an empty set for a statement that touches none, the names for ``PREPARE name`` and
    ``DEALLOCATE [PREPARE] name``, and None ("any of them") for ``DEALLOCATE ALL``,
    ``DISCARD ALL`` and anything else that mentions those words (dynamic SQL in a DO block,
    say): the caller then forgets every name it knew.
    """
    if not mentions(statement, _NAMESPACE_WORDS, _NAMESPACE_LOWER):
        return frozenset()
    try:
        tokens = [t for t in pg_parser.scan(statement) if t.name not in _COMMENTS]
    except Exception:
        return None
    words = [t.name for t in tokens]
    if words[:1] == ["DISCARD"]:
        return None if words[1:2] == ["ALL"] else frozenset()
    if words[:1] == ["PREPARE"] and words[1:2] == ["TRANSACTION"]:
        return frozenset()
    if words[:1] in (["PREPARE"], ["DEALLOCATE"]):
        index = 2 if words[1:2] == ["PREPARE"] and words[0] == "DEALLOCATE" else 1
        if index >= len(tokens) or words[index] == "ALL":
            return None
        token = tokens[index]
        return frozenset({_identifier(statement[token.start : token.end + 1])})
    return None


def _identifier(text: str) -> str:
    # Docs 4.1.1: quoted identifiers are exact, unquoted ones fold to lower case.
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1].replace('""', '"')
    return text.lower()
