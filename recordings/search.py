"""Full-text search over the statements and commands of sessions.

PostgreSQL: the words (``simple`` configuration, no stemming: SQL names and literals are
searched as written) of a session's statements and typed terminal input, without
positions. While the session runs, each batch the writer commits adds a row of its own
words to ``SearchWords`` (in the batch's transaction: the statement path pays nothing, and
a batch costs what its own words cost, however long the session); once the session is
sealed, ``merge_session_words`` folds its rows into ``Session.search_vector`` (written
once) and deletes them. A search matches the sealed sessions whose document holds every
word of the query (a GIN index on the documents, one lookup for the whole query) and the
others, few, whose rows hold each word in one of them. A word matches the start of a word
of the session (``invo`` finds ``invoices``).

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

# The query's words are what PostgreSQL's parser makes of it, so that a search splits
# text the way indexing did; each becomes a prefix match (quotes and backslashes escaped:
# tsquery operators in a query are only words).
_QUERY_WORDS = "SELECT DISTINCT w FROM unnest(tsvector_to_array(to_tsvector('simple', %s))) AS w"


def _prefix(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "':*"


def batch_words(events: Iterable[tuple[str, object]]) -> str:
    """The searchable text of a batch of ``(kind, decoded payload)`` events ("" if none),
    each whitespace-separated word once.

    The statements of a batch mostly repeat one another's words (in a batch of pgbench's
    ``SELECT abalance FROM pgbench_accounts WHERE aid = 412345;`` only the number is new
    each time): PostgreSQL's parser reads each word once instead of every time it occurs,
    about a fifth of the text there. Its tokens never span whitespace, so the lexemes are
    the whole text's (``recordings/tests/test_search_words.py``); a search matches words,
    not positions.
    """
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
    return " ".join(dict.fromkeys("\n".join(parts)[:BATCH_CHARS].split()))


def add_batches_words(batches: list[tuple[str, str]]) -> None:
    """Add batches' searchable text (``batch_words``), ``(session id, words)`` each, to
    their sessions' search rows in one statement, in the caller's transaction (PostgreSQL
    only)."""
    from recordings.models import SearchWords

    table = connection.ops.quote_name(SearchWords._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            # Only constant SQL is formatted in; the ids and words are bound arrays.
            f"INSERT INTO {table} (session_id, words) SELECT b.id, w"  # noqa: S608
            " FROM unnest(%s::uuid[], %s::text[]) AS b(id, words),"
            " LATERAL recordings_search_words(b.words) AS w WHERE w IS NOT NULL",
            [[sid for sid, _ in batches], [words for _, words in batches]],
        )


def merge_session_words(session_id: object) -> bool:
    """Fold a sealed session's search rows into its document and delete them (PostgreSQL
    only). False when the words are too many for one document: the rows stay, and are
    searched as they are."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT recordings_search_merge(%s)", [session_id])
        return bool(cursor.fetchone()[0])


def search_sessions(sessions: QuerySet, text: str) -> QuerySet:  # type: ignore[type-arg]
    """``sessions`` narrowed to those whose statements or typed commands match ``text``."""
    text = text.strip()
    if not _WORD.search(text):
        return sessions  # only punctuation: no words to look for
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_QUERY_WORDS, [text])
            words = sorted(row[0] for row in cursor.fetchall())
        if not words:
            return sessions
        from recordings.models import SearchWords

        prefixes = [_prefix(w) for w in words]
        # Sessions not merged yet (live, or too wordy): each word in one of their rows.
        having = " AND ".join(["bool_or(words @@ to_tsquery('simple', %s))"] * len(words))
        table = connection.ops.quote_name(SearchWords._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                # Only constant SQL is formatted in; the words are bound parameters.
                f"SELECT session_id FROM {table} WHERE words @@ to_tsquery('simple', %s)"  # noqa: S608
                f" GROUP BY session_id HAVING {having}",
                [" | ".join(prefixes), *prefixes],
            )
            unmerged = [row[0] for row in cursor.fetchall()]
        table = connection.ops.quote_name(sessions.model._meta.db_table)
        # Sealed sessions: their one document holds every word.
        in_document = RawSQL(  # noqa: S611 - constant SQL, the query is a bound parameter
            f"{table}.search_vector @@ to_tsquery('simple', %s)",
            [" & ".join(prefixes)],
            output_field=BooleanField(),
        )
        return sessions.filter(Q(in_document) | Q(pk__in=unmerged))
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
