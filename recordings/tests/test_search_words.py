"""Search words (PostgreSQL): while a session runs, a batch adds a row of its own words and
never rewrites an earlier one; sealing folds them into the session's document; a search
finds sessions either way."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from recordings.models import Event, SearchWords, Session
from recordings.search import search_sessions
from recordings.tests.conftest import in_db
from recordings.tests.factories import BILLING_BOT
from recordings.writer import SessionRecorder

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the search words exist on PostgreSQL only (SQLite scans events)",
)


def _words(session_id: object) -> list[str]:
    return [
        str(w)
        for w in SearchWords.objects.filter(session_id=session_id)
        .order_by("pk")
        .values_list("words", flat=True)
    ]


async def _until_rows(session_id: object, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    while len(rows := await in_db(_words, session_id)) < count:
        assert time.monotonic() < deadline, f"batch {count} was not written"
        await asyncio.sleep(0.02)
    return rows


def _found(text: str) -> list[Session]:
    # Only the key: the migration tests search a schema older than the model's.
    return list(search_sessions(Session.objects.only("pk"), text))


def _searches() -> list[bool]:
    return [
        bool(_found("firstbatchtable secondbatch")),  # words from two batches
        bool(_found("FIRSTBATCH srv")),  # prefixes, any case, between punctuation
        bool(_found("firstbatchtable absent_word")),  # every word must match
    ]


async def _two_batches() -> tuple[SessionRecorder, list[str], list[str], list[bool]]:
    recorder = await SessionRecorder.start(**BILLING_BOT)
    recorder.append(Event.Kind.STATEMENT, {"text": "SELECT total FROM firstbatchtable", "params": []})
    first = await _until_rows(recorder.session_id, 1)
    recorder.append(Event.Kind.INPUT, {"data": "cat /srv/secondbatch.log\r"})
    both = await _until_rows(recorder.session_id, 2)
    live = await in_db(_searches)
    await recorder.close(reason="client disconnected")
    return recorder, first, both, live


def _document(session_id: object) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT search_vector::text FROM recordings_session WHERE id = %s", [session_id])
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_each_batch_adds_its_own_words_and_sealing_merges_them():
    recorder, first, both, live = asyncio.run(asyncio.wait_for(_two_batches(), 30))
    assert both[0] == first[0]  # written once, never rewritten by a later batch
    assert "'firstbatchtable'" in both[0] and "'secondbatch'" in both[1]
    assert live == [True, True, False]  # live: each word in one of its rows
    session = Session.objects.get(pk=recorder.session_id)
    assert _words(session.pk) == []  # sealed: folded into the document
    document = _document(session.pk)
    assert "'firstbatchtable'" in document and "'secondbatch'" in document and "'srv'" in document
    assert _searches() == [True, True, False]  # one lookup for all the words
    assert session.verify().ok


@pytest.mark.django_db(transaction=True)
def test_a_session_too_wordy_to_merge_keeps_its_rows_and_is_found():
    from recordings.search import merge_session_words

    def base36(n: int) -> str:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        return "".join(digits[n // 36**k % 36] for k in (3, 2, 1, 0))

    session = Session.objects.create(protocol="postgres", agent_name="bot", connection_name="shop")
    with connection.cursor() as cursor:
        # 220,000 distinct words in two batches: more than a merge takes on (100,000).
        for first, span in (("alpha", range(0, 110_000)), ("beta", range(110_000, 220_000))):
            cursor.execute(
                "INSERT INTO recordings_searchwords (session_id, words) SELECT %s, recordings_search_words(%s)",
                [session.pk, first + " " + " ".join(base36(n) for n in span)],
            )
    assert len(_words(session.pk)) == 2
    assert merge_session_words(session.pk) is False
    assert len(_words(session.pk)) == 2 and _document(session.pk) == "None"
    assert [s.pk for s in _found("alpha beta")] == [session.pk]


@pytest.mark.django_db(transaction=True)
def test_migration_0007_keeps_the_documents_and_folds_rows_back_on_the_way_back():
    executor = MigrationExecutor(connection)
    before, after = [("recordings", "0006_recount_reviewed")], [("recordings", "0007_search_words_per_batch")]
    executor.migrate(before)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO recordings_session (id, protocol, agent_name, on_behalf_of_name,"
                " connection_name, client_address, application_name, status, started_at, end_reason,"
                " event_count, statement_count, denied_count, review_count, error_count, masked_count,"
                " dropped_events, last_hash, seal, signing_key_id, legal_hold, search_vector) VALUES"
                " (gen_random_uuid(), 'postgres', 'bot', '', 'shop', '', '', 'live', now(), '', 0, 0, 0, 0, 0,"
                " 0, 0, '', '', '', false, recordings_search_append(NULL, 'DELETE FROM old_invoices'))"
                " RETURNING id"
            )
            (session_id,) = cursor.fetchone()
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        assert [s.pk for s in _found("old_inv")] == [session_id]  # the document as it was
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO recordings_searchwords (session_id, words) SELECT %s, recordings_search_words(%s)",
                [session_id, "UPDATE new_orders"],
            )
        assert [s.pk for s in _found("old_inv new_ord")] == []  # in neither alone
        assert [s.pk for s in _found("new_ord")] == [session_id]
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert _document(session_id) == "'delete' 'from' 'invoices' 'new' 'old' 'orders' 'update'"
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


_TRICKY = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 412345;\nSELECT abalance FROM pgbench_accounts WHERE aid = 99;",
    "INSERT INTO notes VALUES ('mail me at ann@example.com', 'http://x.org/a b', 1.5e+10, -3.2, 'naïve café')",
    "UPDATE \"Weird Table\" SET col = 'a-b-c' WHERE x <> 'it''s' AND path = '/usr/local/bin/x y';",
    "SELECT '<a href=\"x y\">link</a>', $$dollar  quoted$$, E'\\ttab', 1_000, '~/.ssh/id_rsa' -- done",
    "kubectl get pods -n prod && rm -rf /tmp/x* ; cat /srv/app.log | grep 'ERROR  42'",
]


def _lexemes(text: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(tsvector_to_array(recordings_search_words(%s)))", [text])
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_a_batch_gives_each_word_once_and_the_same_lexemes_as_its_whole_text():
    from recordings.search import batch_words

    events = [("statement", {"text": text}) for text in _TRICKY]
    events += [("input", {"data": chunk}) for chunk in ("cat /srv/", "app.log", "\r")]
    events.append(("statement", {"text": _TRICKY[0]}))  # a repeated statement adds nothing
    words = batch_words(events)
    assert len(words.split()) == len(set(words.split()))
    whole = "\n".join([*_TRICKY, _TRICKY[0], "cat /srv/app.log\r"])
    assert len(words) < len(whole) * 0.7
    assert _lexemes(words) == _lexemes(whole)
    assert {"pgbench", "accounts", "ann@example.com", "412345", "99", "/srv/app.log", "weird"} <= _lexemes(
        words
    )
