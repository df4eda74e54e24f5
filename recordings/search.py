"""Full-text search over the statements and commands of sessions.

PostgreSQL: each session carries ``search_vector``, the distinct words (``simple``
configuration, no stemming: SQL names and literals are searched as written) of its
statements and typed terminal input, without positions. The writer folds each batch's
words in with ``recordings_search_append()`` in the UPDATE it already makes for the
counters (see ``recordings.writer``), so the hot path pays no extra round trip. A GIN index
answers searches over any number of sessions. Every word of a query must match the start
of a word of the session (``invo`` finds ``invoices``).

SQLite (the embedded default): the statement and input events are scanned with a
case-insensitive substring match, which is fine for the sessions one machine holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.db import connection
from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

# What is indexed of each event and of each batch: a statement longer than this is
# searchable by its beginning (long INSERTs are mostly values).
STATEMENT_CHARS = 4000
BATCH_CHARS = 256 * 1024
SEARCHED_KINDS = ("statement", "input")
_WORD = re.compile(r"\w")

# Each word of the query becomes a prefix match, all of them required. The query's words
# are what PostgreSQL's parser makes of it, so a search splits text the way indexing did.
_PREFIX_QUERY = (
    "to_tsquery('simple', (SELECT string_agg('''' || replace(replace(w, '\\', '\\\\'), '''', '''''')"
    " || ''':*', ' & ') FROM unnest(tsvector_to_array(to_tsvector('simple', %s))) AS w))"
)


def batch_words(events: Iterable[tuple[str, object]]) -> str:
    """The searchable text of a batch of ``(kind, decoded payload)`` events ("" if none)."""
    parts: list[str] = []
    size = 0
    typed: list[str] = []
    for kind, payload in events:
        if not isinstance(payload, dict):
            continue
        if kind == "statement":
            text = payload.get("text")
            if isinstance(text, str) and text:
                parts.append(text[:STATEMENT_CHARS])
                size += min(len(text), STATEMENT_CHARS)
        elif kind == "input":
            data = payload.get("data")
            if isinstance(data, str):
                # Keystrokes arrive in small chunks: joined, they spell the command.
                typed.append(data)
                size += len(data)
        if size >= BATCH_CHARS:
            break
    if typed:
        parts.append("".join(typed))
    return "\n".join(parts)[:BATCH_CHARS]


def search_sessions(sessions: QuerySet, text: str) -> QuerySet:  # type: ignore[type-arg]
    """``sessions`` narrowed to those whose statements or typed commands match ``text``."""
    text = text.strip()
    if not _WORD.search(text):
        return sessions  # only punctuation: no words to look for
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(sessions.model._meta.db_table)
        return sessions.filter(
            # The query text is a bound parameter; only constant SQL is formatted in.
            RawSQL(f"{table}.search_vector @@ {_PREFIX_QUERY}", [text], output_field=BooleanField())  # noqa: S611
        )
    from recordings.models import Event

    # Each word may match a different event of the session.
    for word in text.split():
        sessions = sessions.filter(
            Exists(
                Event.objects.filter(session=OuterRef("pk")).filter(
                    Q(kind="statement", payload__text__icontains=word)
                    | Q(kind="input", payload__data__icontains=word)
                )
            )
        )
    return sessions
