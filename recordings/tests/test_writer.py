"""The session recorder against the real PostgreSQL: batching, counters, strict and best-effort modes."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import psycopg
import pytest
from django.db import connection, connections
from django.db.backends import utils as db_utils

from recordings import keys
from recordings.models import Event, Session
from recordings.tests.conftest import in_db
from recordings.tests.factories import BILLING_BOT, record_session, statement_events
from recordings.writer import RecordingUnavailable, SessionRecorder, close_all, shutdown_writer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def _session(session_id):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session_id)


def _events(session_id):  # type: ignore[no-untyped-def]
    return list(Event.objects.filter(session_id=session_id).order_by("seq").values("seq", "kind", "payload"))


def _verify(session_id):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session_id).verify()


async def _until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _admin_conn() -> psycopg.Connection:
    """A separate connection to the test database, for locking and altering tables."""
    s = connection.settings_dict
    return psycopg.connect(
        host=s["HOST"] or "127.0.0.1",
        port=s["PORT"] or 5432,
        user=s["USER"],
        dbname=s["NAME"],
        autocommit=True,
    )


async def test_it_records_a_session_that_verifies_with_the_right_counters():
    async with asyncio.timeout(30):
        recorder = await record_session(
            [
                (Event.Kind.STATEMENT, {"text": "SELECT 1", "params": []}),
                (
                    Event.Kind.DECISION,
                    {"action": "allow", "rule": "reads", "policy": "p", "policy_version": 1, "message": ""},
                ),
                (Event.Kind.RESULT, {"rows": 1, "command_tag": "SELECT 1", "masked": 3}),
                (Event.Kind.STATEMENT, {"text": "DELETE FROM t", "params": []}),
                (
                    Event.Kind.DECISION,
                    {
                        "action": "deny",
                        "rule": "no-deletes",
                        "policy": "p",
                        "policy_version": 1,
                        "message": "no",
                    },
                ),
                (Event.Kind.ERROR, {"code": "42501", "message": "denied by rule no-deletes"}),
                (Event.Kind.STATEMENT, {"text": "DROP TABLE t", "params": []}),
                (
                    Event.Kind.DECISION,
                    {"action": "review", "rule": "ddl", "policy": "p", "policy_version": 1, "message": ""},
                ),
                (Event.Kind.NOTICE, {"severity": "WARNING", "message": "hi"}),
            ]
        )
        session = await in_db(_session, recorder.session_id)
        events = await in_db(_events, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)

    assert [e["seq"] for e in events] == list(range(1, 12))
    assert events[0]["kind"] == "session_start" and events[-1]["kind"] == "session_end"
    assert events[0]["payload"]["agent"] == "billing-bot"
    assert events[-1]["payload"] == {"reason": "client disconnected", "status": "ended"}
    assert (session.event_count, session.statement_count, session.denied_count) == (11, 3, 1)
    assert (session.review_count, session.error_count, session.masked_count) == (1, 1, 3)
    assert session.status == "ended" and session.end_reason == "client disconnected"
    assert session.ended_at is not None and session.sealed_at is not None and session.seal
    assert session.signing_key_id == await in_db(keys.signing_key_id)
    assert session.dropped_events == 0 and not recorder.failed
    assert result.ok, result.reason
    assert result.event_count == 11 and result.last_hash == session.last_hash


async def test_it_batches_many_appends_into_few_writes_off_the_event_loop(monkeypatch):
    statements: list[tuple[str, str]] = []
    real_execute, real_copy = db_utils.CursorWrapper.execute, psycopg.Cursor.copy

    def counting_execute(self, sql, params=None):  # type: ignore[no-untyped-def]
        statements.append((threading.current_thread().name, sql))
        return real_execute(self, sql, params)

    def counting_copy(self, statement, *args, **kwargs):  # type: ignore[no-untyped-def]
        statements.append((threading.current_thread().name, str(statement)))
        return real_copy(self, statement, *args, **kwargs)

    monkeypatch.setattr(db_utils.CursorWrapper, "execute", counting_execute)
    monkeypatch.setattr(psycopg.Cursor, "copy", counting_copy)
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        statements.clear()
        for n in range(5000):
            recorder.append(Event.Kind.OUTPUT, {"data": f"line {n}\n"})
        # append() is synchronous and never queries: nothing ran while appending.
        assert statements == []
        await recorder.close(reason="done")
        written = list(statements)
        session = await in_db(_session, recorder.session_id)

    copies = [sql for _, sql in written if sql.startswith('COPY "recordings_event"')]
    inserts = [sql for _, sql in written if "INSERT" in sql.upper()]
    assert session.event_count == 5002
    # 5001 events, at most 2000 per write: 3 writes, one more if a flush timer split a batch.
    assert 3 <= len(copies) <= 4, len(copies)
    assert inserts == []
    assert {name for name, _ in written} <= {f"recording-writer-{n}" for n in range(8)}


async def test_it_records_the_payload_as_it_was_when_appended():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        payload = {"text": "SELECT 1", "params": ["a"]}
        recorder.append(Event.Kind.STATEMENT, payload)
        payload["text"] = "DROP TABLE invoices"
        payload["params"].append("b")
        await recorder.close(reason="done")
        events = await in_db(_events, recorder.session_id)
    assert events[1]["payload"] == {"text": "SELECT 1", "params": ["a"]}


async def test_it_refuses_unknown_kinds_and_payloads_that_are_not_json():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        with pytest.raises(ValueError, match="unknown recording event kind"):
            recorder.append("telepathy", {})
        with pytest.raises(TypeError, match="only JSON values"):
            recorder.append(Event.Kind.STATEMENT, {"text": object()})
        await recorder.close(reason="done")
        session = await in_db(_session, recorder.session_id)
    assert session.event_count == 2


async def test_text_copy_reads_specially_is_stored_exactly_and_the_counters_follow():
    # Events go in with COPY's text format: backslashes (and "\\N", COPY's NULL), tabs,
    # newlines and carriage returns in a payload must come back unchanged.
    tricky = 'C:\\dir\\N\tcol\nline\r\\. end \\\\ "quoted" é \U0001f600'
    async with asyncio.timeout(30):
        recorder = await record_session(
            [
                (Event.Kind.STATEMENT, {"text": tricky, "params": [tricky, None]}),
                (Event.Kind.DECISION, {"action": "deny", "rule": "r", "statement": tricky}),
                (Event.Kind.RESULT, {"statement": tricky, "rows": 1, "masked": 3, "first_rows": [[tricky]]}),
            ]
        )
        result = await in_db(_verify, recorder.session_id)
        events = await in_db(_events, recorder.session_id)
        session = await in_db(_session, recorder.session_id)
    assert result.ok, result.reason
    assert events[1]["payload"] == {"text": tricky, "params": [tricky, None]}
    assert events[2]["payload"]["statement"] == tricky
    assert events[3]["payload"]["first_rows"] == [[tricky]]
    assert (session.statement_count, session.denied_count, session.masked_count) == (1, 1, 3)


async def test_values_jsonb_would_alter_are_stored_so_the_chain_still_verifies():
    odd = {
        "data": "nul\x00 byte, lone \udcff surrogate, emoji \U0001f600, ctrl \x1b[0m",
        "big": 1e20,
        "tiny": 1e-7,
        "negzero": -0.0,
        "nan": math.nan,
        "inf": -math.inf,
        "huge_int": 2**70,
        "nested": {"b": [1, 2.5, None, True], "a": "é"},
        3: "int key",
        "when": __import__("datetime").date(2026, 1, 2),
        "raw": b"\xff\xfebytes",
    }
    async with asyncio.timeout(30):
        recorder = await record_session([(Event.Kind.OUTPUT, odd)])
        result = await in_db(_verify, recorder.session_id)
        events = await in_db(_events, recorder.session_id)
    assert result.ok, result.reason
    stored = events[1]["payload"]
    assert stored["data"] == "nul\ufffd byte, lone \ufffd surrogate, emoji \U0001f600, ctrl \x1b[0m"
    assert stored["big"] == str(10**20) and stored["tiny"] == 1e-7 and stored["negzero"] == 0.0
    assert stored["nan"] is None and stored["inf"] is None and stored["huge_int"] == str(2**70)
    assert (
        stored["3"] == "int key" and stored["when"] == "2026-01-02" and stored["raw"] == "\ufffd\ufffdbytes"
    )


async def test_closing_twice_or_appending_after_close_changes_nothing():
    async with asyncio.timeout(30):
        recorder = await record_session(statement_events(1))
        recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 'late'"})
        await recorder.close(reason="again", status="terminated")
        session = await in_db(_session, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)
    assert session.event_count == 5 and session.status == "ended"
    assert session.end_reason == "client disconnected"
    assert result.ok, result.reason


async def test_a_close_whose_caller_is_cancelled_still_completes():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 1"})
        closer = asyncio.create_task(recorder.close(reason="shutdown", status="terminated"))
        await asyncio.sleep(0)
        closer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closer
        await recorder.close(reason="ignored")
        session = await in_db(_session, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)
    assert (session.status, session.end_reason, session.event_count) == ("terminated", "shutdown", 3)
    assert result.ok, result.reason


async def test_close_all_ends_every_live_session_of_the_process():
    async with asyncio.timeout(30):
        first = await SessionRecorder.start(**BILLING_BOT)
        second = await SessionRecorder.start(**{**BILLING_BOT, "protocol": "ssh"})
        first.append(Event.Kind.STATEMENT, {"text": "SELECT 1"})
        second.append(Event.Kind.INPUT, {"data": "ls\r"})
        await close_all()
        sessions = [await in_db(_session, r.session_id) for r in (first, second)]
    assert [(s.status, s.end_reason, s.event_count) for s in sessions] == [
        ("terminated", "gateway shutting down", 3),
        ("terminated", "gateway shutting down", 3),
    ]


async def test_strict_mode_calls_on_failure_once_when_the_table_is_locked(settings):
    settings.RECORDING_PERSIST_TIMEOUT = 1
    failures: list[str] = []
    admin = await asyncio.to_thread(_admin_conn)
    try:
        async with asyncio.timeout(30):
            recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
            # Another transaction holds the table: every INSERT waits behind it.
            await asyncio.to_thread(admin.execute, "BEGIN")
            await asyncio.to_thread(admin.execute, "LOCK TABLE recordings_event IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 1"})
            await _until(lambda: failures)
            waited = time.monotonic() - started
            recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 2"})
            await asyncio.sleep(0.3)
            assert failures == ["events not persisted within 1s (database slow or locked)"]
            assert recorder.failed
            await asyncio.to_thread(admin.execute, "ROLLBACK")
            # The lock is gone: close() persists what was held back and seals it.
            await recorder.close(reason="recording failed", status="terminated")
            session = await in_db(_session, recorder.session_id)
            result = await in_db(_verify, recorder.session_id)
    finally:
        await asyncio.to_thread(admin.close)
    assert 0.9 < waited < 5
    assert session.status == "terminated" and session.event_count == 4
    assert session.end_reason.startswith("recording failed; events not persisted within 1s")
    assert result.ok, result.reason


async def one_session_whose_writes_fail(
    *, fine_after: int = 0, within: float = 30
) -> tuple[dict[str, list[str]], SessionRecorder, SessionRecorder]:
    """Two strict sessions, 20 statements each, every write of the "doomed" one failing on
    a real constraint from its second batch on; ``fine_after`` more statements for the other
    once the doomed one has failed; both closed. (failures per session, doomed, fine)"""
    failures: dict[str, list[str]] = {"doomed": [], "fine": []}
    admin = await asyncio.to_thread(_admin_conn)
    try:
        async with asyncio.timeout(within):
            doomed = await SessionRecorder.start(**BILLING_BOT, on_failure=failures["doomed"].append)
            fine = await SessionRecorder.start(**BILLING_BOT, on_failure=failures["fine"].append)
            # A real write error for one session's events only.
            await asyncio.to_thread(
                admin.execute,
                f"ALTER TABLE recordings_event ADD CONSTRAINT doomed CHECK (session_id <> '{doomed.session_id}') NOT VALID",
            )
            for kind, payload in statement_events(20):
                doomed.append(kind, payload)
                fine.append(kind, payload)
            await _until(lambda: failures["doomed"])
            for kind, payload in statement_events(fine_after):
                fine.append(kind, payload)
            await fine.close(reason="done")
            await doomed.close(reason="recording failed", status="terminated")
    finally:
        await asyncio.to_thread(
            admin.execute, "ALTER TABLE recordings_event DROP CONSTRAINT IF EXISTS doomed"
        )
        await asyncio.to_thread(admin.close)
    return failures, doomed, fine


async def test_strict_mode_fails_one_session_whose_writes_error_and_leaves_the_other_alone(settings):
    settings.RECORDING_PERSIST_TIMEOUT = 1
    failures, doomed, fine = await one_session_whose_writes_fail(fine_after=5)
    doomed_session = await in_db(_session, doomed.session_id)
    fine_session = await in_db(_session, fine.session_id)
    fine_result = await in_db(_verify, fine.session_id)
    doomed_result = await in_db(_verify, doomed.session_id)
    assert failures["doomed"][0].startswith("recording write failed: IntegrityError: new row for relation")
    assert len(failures["doomed"]) == 1 and failures["fine"] == []
    assert "Failing row" not in failures["doomed"][0]
    assert fine_session.event_count == 1 + 75 + 1 and fine_result.ok, fine_result.reason
    # Nothing after session_start could be written; the seal covers what was, and says so.
    assert doomed_session.event_count == 1 and doomed_session.dropped_events == 61
    assert doomed_session.status == "terminated"
    assert doomed_session.end_reason.endswith("recording incomplete: 61 events not persisted")
    assert doomed_result.ok, doomed_result.reason


async def test_best_effort_mode_counts_dropped_events_and_goes_on(settings):
    settings.RECORDING_STRICT = False
    settings.RECORDING_PERSIST_TIMEOUT = 1
    failures: list[str] = []
    admin = await asyncio.to_thread(_admin_conn)
    try:
        async with asyncio.timeout(30):
            recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
            recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 'kept before'"})
            await _until(lambda: recorder._state.seq == 2)
            await asyncio.to_thread(
                admin.execute,
                f"ALTER TABLE recordings_event ADD CONSTRAINT gap CHECK (session_id <> '{recorder.session_id}') NOT VALID",
            )
            for n in range(5):
                recorder.append(Event.Kind.STATEMENT, {"text": f"SELECT 'lost {n}'"})
            await _until(lambda: recorder.dropped_events == 5)
            await asyncio.to_thread(admin.execute, "ALTER TABLE recordings_event DROP CONSTRAINT gap")
            recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 'kept after'"})
            await recorder.close(reason="done")
            session = await in_db(_session, recorder.session_id)
            events = await in_db(_events, recorder.session_id)
            result = await in_db(_verify, recorder.session_id)
    finally:
        await asyncio.to_thread(admin.execute, "ALTER TABLE recordings_event DROP CONSTRAINT IF EXISTS gap")
        await asyncio.to_thread(admin.close)
    assert failures == [] and not recorder.failed
    assert session.dropped_events == 5 and session.status == "ended"
    assert [e["kind"] for e in events] == [
        "session_start",
        "statement",
        "dropped",
        "statement",
        "session_end",
    ]
    assert events[2]["payload"]["count"] == 5
    assert events[2]["payload"]["reason"].startswith("recording write failed: IntegrityError")
    assert events[3]["payload"]["text"] == "SELECT 'kept after'"
    assert result.ok, result.reason


async def _overfill(monkeypatch, appends: int):  # type: ignore[no-untyped-def]
    """A recorder whose queue holds three events, sent ``appends`` statements with no await
    in between (so its flusher cannot take any meanwhile); with its failures."""
    from recordings import writer

    monkeypatch.setattr(writer, "MAX_QUEUED", 3)
    failures: list[str] = []
    recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
    for n in range(appends):
        recorder.append(Event.Kind.STATEMENT, {"text": f"SELECT {n}"})
    return recorder, failures


async def _written(recorder):  # type: ignore[no-untyped-def]
    return (
        await in_db(_session, recorder.session_id),
        await in_db(_events, recorder.session_id),
        await in_db(_verify, recorder.session_id),
    )


async def test_a_full_queue_drops_what_does_not_fit_and_records_how_much_in_best_effort_mode(
    settings, monkeypatch
):
    """Appends never wait: past ``MAX_QUEUED`` waiting events they are dropped, and the
    chain says where and how many (a ``dropped`` event in their place)."""
    settings.RECORDING_STRICT = False
    async with asyncio.timeout(30):
        recorder, failures = await _overfill(monkeypatch, 10)
        assert recorder.dropped_events == 7
        await _until(lambda: recorder._state.seq >= 4)  # the three that fitted are written
        recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 'after'"})
        await recorder.close(reason="done")
        session, events, result = await _written(recorder)
    assert failures == [] and not recorder.failed
    assert session.dropped_events == 7 and session.status == "ended"
    assert [e["kind"] for e in events] == [
        "session_start", "statement", "statement", "statement", "dropped", "statement", "session_end",
    ]  # fmt: skip
    assert [e["payload"].get("text") for e in events[1:4]] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    marker = events[4]["payload"]
    assert (marker["count"], marker["reason"]) == (7, "recording queue full")
    assert marker["first_offset_ms"] <= marker["last_offset_ms"]
    assert events[5]["payload"]["text"] == "SELECT 'after'"
    assert result.ok, result.reason


async def test_a_full_queue_fails_the_recording_in_strict_mode(monkeypatch):  # strict: the default
    async with asyncio.timeout(30):
        recorder, failures = await _overfill(monkeypatch, 5)
        assert failures == ["recording queue full: the database is not keeping up"]
        assert recorder.failed and recorder.dropped_events == 2
        await recorder.close(reason="recording failed", status="terminated")
        session, events, result = await _written(recorder)
    assert session.status == "terminated" and session.dropped_events == 2
    assert [e["kind"] for e in events][-2:] == ["dropped", "session_end"]
    assert result.ok, result.reason


async def test_two_recorders_interleaving_keep_separate_chains():
    async with asyncio.timeout(30):
        a = await SessionRecorder.start(**BILLING_BOT)
        b = await SessionRecorder.start(**{**BILLING_BOT, "agent_name": "report-bot"})
        for n in range(300):
            a.append(Event.Kind.STATEMENT, {"text": f"SELECT {n}"})
            b.append(Event.Kind.OUTPUT, {"data": f"{n}\n"})
            if n % 50 == 0:
                await asyncio.sleep(0.01)
        await asyncio.gather(a.close(reason="done"), b.close(reason="done"))
        results = [await in_db(_verify, r.session_id) for r in (a, b)]
        events = [await in_db(_events, r.session_id) for r in (a, b)]
    assert all(r.ok for r in results), results
    assert [r.event_count for r in results] == [302, 302]
    assert {e["kind"] for e in events[0][1:-1]} == {"statement"}
    assert {e["kind"] for e in events[1][1:-1]} == {"output"}


def _point_default_database_at(port: int) -> int:
    settings_dict = connections.settings["default"]
    old = settings_dict["PORT"]
    settings_dict["PORT"] = port
    return old


async def test_strict_mode_refuses_to_start_a_session_when_the_database_is_unreachable(settings):
    from conftest import free_port

    settings.RECORDING_PERSIST_TIMEOUT = 1
    await in_db(keys.signing_key)
    shutdown_writer()
    old = _point_default_database_at(free_port())  # nothing listens there
    try:
        async with asyncio.timeout(30):
            with pytest.raises(
                RecordingUnavailable, match="recording could not be started: OperationalError"
            ):
                await SessionRecorder.start(**BILLING_BOT)
    finally:
        shutdown_writer()
        _point_default_database_at(old)
    assert await in_db(Session.objects.count) == 0


async def test_strict_mode_calls_on_failure_when_the_database_goes_away_mid_session(settings):
    from conftest import free_port

    settings.RECORDING_PERSIST_TIMEOUT = 1
    failures: list[str] = []
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
        shutdown_writer()
        old = _point_default_database_at(free_port())
        try:
            recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 1"})
            await _until(lambda: failures)
        finally:
            shutdown_writer()
            _point_default_database_at(old)
        await recorder.close(reason="recording failed", status="terminated")
        session = await in_db(_session, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)
    assert failures[0].startswith("recording write failed: OperationalError")
    assert recorder.failed and len(failures) == 1
    # The database came back before close: everything held back was written and sealed.
    assert session.event_count == 3 and session.status == "terminated" and result.ok, result.reason


async def test_best_effort_mode_creates_the_session_later_when_the_database_was_down_at_start(settings):
    from conftest import free_port

    settings.RECORDING_STRICT = False
    settings.RECORDING_PERSIST_TIMEOUT = 1
    await in_db(keys.signing_key)
    shutdown_writer()
    old = _point_default_database_at(free_port())
    try:
        async with asyncio.timeout(30):
            recorder = await SessionRecorder.start(**BILLING_BOT)
    finally:
        shutdown_writer()
        _point_default_database_at(old)
    async with asyncio.timeout(30):
        recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 1"})
        await recorder.close(reason="done")
        session = await in_db(_session, recorder.session_id)
        events = await in_db(_events, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)
    assert [e["kind"] for e in events] == ["session_start", "statement", "session_end"]
    assert session.agent_name == "billing-bot" and session.status == "ended" and session.dropped_events == 0
    assert result.ok, result.reason


async def stuck_and_free(
    admin: psycopg.Connection, failures: dict[str, list[str]]
) -> tuple[SessionRecorder, SessionRecorder]:
    """Two sessions whose failures go to ``failures["stuck"]`` and ``["free"]``; ``admin``
    holds the first one's row in an open transaction (until its ROLLBACK), so that
    session's writes wait on the lock."""
    stuck = await SessionRecorder.start(**BILLING_BOT, on_failure=failures["stuck"].append)
    free = await SessionRecorder.start(**BILLING_BOT, on_failure=failures["free"].append)
    await asyncio.to_thread(admin.execute, "BEGIN")
    await asyncio.to_thread(
        admin.execute, "SELECT 1 FROM recordings_session WHERE id = %s FOR UPDATE", [stuck.session_id]
    )
    return stuck, free


async def test_a_session_whose_writes_hang_does_not_hold_up_another(settings):
    settings.RECORDING_PERSIST_TIMEOUT = 2
    failures: dict[str, list[str]] = {"stuck": [], "free": []}
    admin = await asyncio.to_thread(_admin_conn)
    try:
        async with asyncio.timeout(30):
            stuck, free = await stuck_and_free(admin, failures)
            stuck.append(Event.Kind.STATEMENT, {"text": "SELECT 'stuck'"})
            await asyncio.sleep(0.2)  # let the stuck write start and block first
            for kind, payload in statement_events(10):
                free.append(kind, payload)
            await free.close(reason="done")
            # The free session finished while the stuck one was still waiting on the lock.
            stuck_waiting = not failures["stuck"]
            await _until(lambda: failures["stuck"])
            await asyncio.to_thread(admin.execute, "ROLLBACK")
            await stuck.close(reason="recording failed", status="terminated")
            free_result = await in_db(_verify, free.session_id)
            stuck_result = await in_db(_verify, stuck.session_id)
    finally:
        await asyncio.to_thread(admin.close)
    assert failures["free"] == [] and free_result.ok and free_result.event_count == 32
    assert stuck_waiting
    assert failures["stuck"] == ["events not persisted within 2s (database slow or locked)"]
    assert stuck_result.ok, stuck_result.reason


# -- a statement's result joined to its event ---------------------------------------------


async def test_a_result_that_comes_next_joins_its_statements_event():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        handle = recorder.open_statement({"text": "SELECT email FROM customers", "params": []})
        await asyncio.sleep(0.01)
        assert recorder.complete(handle, {"command_tag": "SELECT 2", "rows": 2, "masked": 2})
        assert not recorder.complete(handle, {"command_tag": "SELECT 2"})  # once only
        await recorder.close(reason="done")
        events = await in_db(_events, recorder.session_id)
        session = await in_db(_session, recorder.session_id)
        offsets = await in_db(
            lambda: list(
                Event.objects.filter(session_id=recorder.session_id).values_list("offset_ms", flat=True)
            )
        )
    assert [e["kind"] for e in events] == ["session_start", "statement", "session_end"]
    assert events[1]["payload"] == {
        "text": "SELECT email FROM customers",
        "params": [],
        "result": {"command_tag": "SELECT 2", "rows": 2, "masked": 2},
    }
    assert (session.statement_count, session.masked_count, session.event_count) == (1, 2, 3)
    # The event keeps the statement's time, not the result's.
    assert offsets[2] - offsets[1] >= 10
    assert (await in_db(_verify, recorder.session_id)).ok


async def test_anything_recorded_in_between_settles_the_statement_and_the_result_stands_alone():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        first = recorder.open_statement({"text": "SELECT 1"})
        recorder.append(Event.Kind.NOTICE, {"message": "hello"})
        assert not recorder.complete(first, {"command_tag": "SELECT 1"})
        recorder.append(Event.Kind.RESULT, {"statement": "SELECT 1", "command_tag": "SELECT 1", "masked": 1})
        # A pipeline: the second statement settles the first; only the last one's result joins.
        second = recorder.open_statement({"text": "SELECT 2"})
        third = recorder.open_statement({"text": "SELECT 3"})
        assert not recorder.complete(second, {"command_tag": "SELECT 1"})
        assert recorder.complete(third, {"command_tag": "SELECT 1", "masked": 4})
        # Closing settles an open statement that never got a result.
        recorder.open_statement({"text": "SELECT pg_sleep(60)"})
        await recorder.close(reason="done")
        events = await in_db(_events, recorder.session_id)
        session = await in_db(_session, recorder.session_id)
    shown = [(e["kind"], e["payload"].get("text"), "result" in e["payload"]) for e in events]
    assert shown == [
        ("session_start", None, False),
        ("statement", "SELECT 1", False),
        ("notice", None, False),
        ("result", None, False),
        ("statement", "SELECT 2", False),
        ("statement", "SELECT 3", True),
        ("statement", "SELECT pg_sleep(60)", False),
        ("session_end", None, False),
    ]
    assert (session.statement_count, session.masked_count) == (4, 5)
    assert (await in_db(_verify, recorder.session_id)).ok


async def test_a_statement_still_running_is_written_within_the_flush_interval(settings):
    settings.RECORDING_FLUSH_SECONDS = 0.05
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        handle = recorder.open_statement({"text": "SELECT pg_sleep(60)"})
        # Live viewers see it while it runs: written without waiting for its result.
        await _until(lambda: recorder._state.seq == 2)
        assert not recorder.complete(handle, {"command_tag": "SELECT 1"})
        recorder.append(Event.Kind.RESULT, {"statement": "SELECT pg_sleep(60)", "command_tag": "SELECT 1"})
        await recorder.close(reason="done")
        events = await in_db(_events, recorder.session_id)
    assert [e["kind"] for e in events] == ["session_start", "statement", "result", "session_end"]
    assert "result" not in events[1]["payload"]


async def test_after_close_an_open_statement_is_not_recorded():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        await recorder.close(reason="done")
        assert recorder.open_statement({"text": "SELECT 1"}) == 0
        session = await in_db(_session, recorder.session_id)
    assert session.event_count == 2


async def test_an_open_statement_that_is_not_json_data_fails_where_it_is_queued():
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        handle = recorder.open_statement({"text": object()})
        with pytest.raises(TypeError, match="only JSON values"):
            recorder.complete(handle, {"command_tag": "SELECT 1"})
        recorder.append(Event.Kind.NOTICE, {"message": "the session goes on"})
        await recorder.close(reason="done")
        events = await in_db(_events, recorder.session_id)
    assert [e["kind"] for e in events] == ["session_start", "notice", "session_end"]


async def test_plain_batches_are_chained_in_one_pass_and_the_rest_as_before(monkeypatch):
    # ``recordings.chainrows.chain_copy`` takes a batch whose events all carry canonical
    # bytes; a batch holding one that does not (a float jsonb would write otherwise) goes
    # through ``_chain_rows``. Either way the chain verifies and the counters follow.
    from recordings import writer

    general: list[int] = []
    one_pass: list[int] = []
    chain_rows, chain_copy = writer._chain_rows, writer._chain_copy

    def counted_rows(session_id, base, items, searched=None):  # type: ignore[no-untyped-def]
        general.append(len(items))
        return chain_rows(session_id, base, items, searched)

    def counted_copy(session, prev, seq, items):  # type: ignore[no-untyped-def]
        copied = chain_copy(session, prev, seq, items)
        if copied is not None:
            one_pass.append(len(items))
        return copied

    monkeypatch.setattr(writer, "_chain_rows", counted_rows)
    monkeypatch.setattr(writer, "_chain_copy", counted_copy)
    async with asyncio.timeout(30):
        # Kinds as the gateway passes them, plain strings (an ``Event.Kind`` member is a
        # str subclass, which the one pass leaves to the general path).
        plain = await record_session(
            [
                ("statement", {"text": "SELECT '\\\\' AS backslash", "params": ["a\tb"]}),
                ("result", {"rows": 1, "masked": 2}),
                ("decision", {"action": "deny", "rule": "r", "policy": "p", "policy_version": 1}),
            ]
        )
        plain_result = await in_db(_verify, plain.session_id)
        plain_session = await in_db(_session, plain.session_id)
        assert one_pass and not general
        mixed = await record_session(
            [(Event.Kind.STATEMENT, {"text": "SELECT 1", "params": []}), (Event.Kind.OUTPUT, {"big": 1e20})]
        )
        mixed_result = await in_db(_verify, mixed.session_id)
    assert plain_result.ok and mixed_result.ok, (plain_result.reason, mixed_result.reason)
    assert general, "the batch with a value jsonb writes otherwise took the general path"
    assert (plain_session.statement_count, plain_session.denied_count, plain_session.masked_count) == (
        1,
        1,
        2,
    )
    events = await in_db(_events, plain.session_id)
    assert events[1]["payload"]["text"] == "SELECT '\\\\' AS backslash"
