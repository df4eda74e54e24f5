"""Several sessions' batches written by one transaction (``recordings.writer._persist_group``),
against the real PostgreSQL: what it writes is what each session's own writes would have
written, and a session whose write cannot go with the others (its row locked, its
recording closed by another gateway) is written, or fails, alone."""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recordings import search, writer
from recordings.models import Event, Session
from recordings.tests.conftest import in_db
from recordings.tests.factories import BILLING_BOT
from recordings.tests.test_writer import _admin_conn, _events, _session, _until, _verify, stuck_and_free
from recordings.writer import SessionRecorder, close_abandoned

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def jobs(monkeypatch):  # type: ignore[no-untyped-def]
    """The write jobs run (on the writer threads): ("group", sessions, outcome) and
    ("single", session, outcome), in the order they finished."""
    runs: list[tuple[str, Any, str]] = []
    real_group, real_single = writer._persist_group, writer._persist

    def group(writes, timeout):  # type: ignore[no-untyped-def]
        sessions = [write[0] for write in writes]
        try:
            states = real_group(writes, timeout)
        except Exception as exc:
            runs.append(("group", sessions, writer._describe(exc)))
            raise
        runs.append(("group", sessions, "ok"))
        return states

    def single(session_id, *args):  # type: ignore[no-untyped-def]
        try:
            state = real_single(session_id, *args)
        except Exception as exc:
            runs.append(("single", session_id, writer._describe(exc)))
            raise
        runs.append(("single", session_id, "ok"))
        return state

    monkeypatch.setattr(writer, "_persist_group", group)
    monkeypatch.setattr(writer, "_persist", single)
    return runs


def _statement(word: str, masked: int = 0) -> dict[str, Any]:
    return {"text": f"SELECT * FROM {word}", "params": [], "result": {"rows": 1, "masked": masked}}


async def _persisted(recorder: SessionRecorder, seq: int) -> None:
    await _until(lambda: recorder._state.seq >= seq)


def _found(word: str) -> set[Any]:
    return set(search.search_sessions(Session.objects.all(), word).values_list("pk", flat=True))


async def test_sessions_flushing_together_are_written_by_one_transaction_each_as_its_own(jobs):
    words = ("alphatable", "bravotable", "charlietable")
    async with asyncio.timeout(30):
        recorders = [await SessionRecorder.start(**BILLING_BOT) for _ in words]
        jobs.clear()
        # In one turn of the loop, as a gateway's sessions come to the same flush tick.
        for recorder, word in zip(recorders, words, strict=True):
            for n in range(3):
                handle = recorder.open_statement(_statement(word, masked=n))
                assert recorder.complete(handle, {"rows": 1, "masked": n})
            recorder.append(
                Event.Kind.DECISION, {"action": "deny", "rule": "r", "policy": "p", "message": ""}
            )
        for recorder in recorders:
            await _persisted(recorder, 5)
        grouped = list(jobs)
        found = {word: await in_db(_found, word) for word in words}
        await asyncio.gather(*(recorder.close(reason="done") for recorder in recorders))
        sessions = [await in_db(_session, r.session_id) for r in recorders]
        events = [await in_db(_events, r.session_id) for r in recorders]
        results = [await in_db(_verify, r.session_id) for r in recorders]
    assert [(kind, set(ids), outcome) for kind, ids, outcome in grouped] == [
        ("group", {r.session_id for r in recorders}, "ok")
    ]
    for recorder, word, session, kinds, result in zip(
        recorders, words, sessions, events, results, strict=True
    ):
        assert [e["kind"] for e in kinds] == ["session_start"] + ["statement"] * 3 + [
            "decision",
            "session_end",
        ]
        assert all(e["payload"]["text"] == f"SELECT * FROM {word}" for e in kinds[1:4])
        assert (session.event_count, session.statement_count, session.denied_count, session.masked_count) == (
            6,
            3,
            1,
            3,
        )
        assert session.gateway_seen_at is not None and session.dropped_events == 0
        assert result.ok, result.reason
        # Each session's search words are its own.
        assert found[word] == {recorder.session_id}


async def test_a_session_whose_row_is_locked_leaves_its_group_and_the_others_are_written(settings, jobs):
    settings.RECORDING_PERSIST_TIMEOUT = 3
    failures: dict[str, list[str]] = {"stuck": [], "free": []}
    admin = await asyncio.to_thread(_admin_conn)
    try:
        async with asyncio.timeout(30):
            stuck, free = await stuck_and_free(admin, failures)
            jobs.clear()
            started = time.monotonic()
            stuck.append(Event.Kind.STATEMENT, _statement("stucktable"))
            free.append(Event.Kind.STATEMENT, _statement("freetable"))
            await _persisted(free, 2)
            free_took = time.monotonic() - started
            await _until(lambda: failures["stuck"])
            await asyncio.to_thread(admin.execute, "ROLLBACK")
            await free.close(reason="done")
            await stuck.close(reason="recording failed", status="terminated")
            free_result = await in_db(_verify, free.session_id)
            stuck_result = await in_db(_verify, stuck.session_id)
            stuck_session = await in_db(_session, stuck.session_id)
    finally:
        await asyncio.to_thread(admin.close)
    group = [job for job in jobs if job[0] == "group"]
    assert len(group) == 1 and set(group[0][1]) == {stuck.session_id, free.session_id}
    assert "lock timeout" in group[0][2]
    # The free session did not wait for the stuck one's bound (3 s), only the group's try.
    assert free_took < 2.0
    assert failures["free"] == [] and free_result.ok and free_result.event_count == 3
    assert failures["stuck"] == ["events not persisted within 3s (database slow or locked)"]
    # The stuck session's statement was written once the lock went, before its seal.
    assert stuck_result.ok, stuck_result.reason
    assert stuck_session.statement_count == 1 and stuck_session.status == "terminated"


async def test_a_session_closed_elsewhere_leaves_its_group_and_ends_alone(jobs):
    failures: dict[str, list[str]] = {"gone": [], "kept": []}
    async with asyncio.timeout(30):
        gone = await SessionRecorder.start(**BILLING_BOT, on_failure=failures["gone"].append)
        kept = await SessionRecorder.start(**BILLING_BOT, on_failure=failures["kept"].append)
        # Another gateway closes the first as abandoned; the second it still hears of.
        later = datetime.now(UTC) + timedelta(hours=1)
        await in_db(lambda: Session.objects.filter(pk=kept.session_id).update(gateway_seen_at=later))
        assert await in_db(lambda: close_abandoned(abandoned_after=0.0)) == [gone.session_id]
        jobs.clear()
        gone.append(Event.Kind.STATEMENT, _statement("gonetable"))
        kept.append(Event.Kind.STATEMENT, _statement("kepttable"))
        await _persisted(kept, 2)
        await _until(lambda: failures["gone"])
        await gone.close(reason="client disconnected")
        await kept.close(reason="done")
        kept_result = await in_db(_verify, kept.session_id)
        gone_session = await in_db(_session, gone.session_id)
    group = [job for job in jobs if job[0] == "group"]
    # The closed session's next seq is taken by the end the other gateway recorded: the
    # group is refused as a whole, and each batch is then written alone.
    assert len(group) == 1 and set(group[0][1]) == {gone.session_id, kept.session_id}
    assert group[0][2].startswith("GroupWriteFailed: IntegrityError: duplicate key value")
    assert ("single", kept.session_id, "ok") in jobs
    assert failures["kept"] == [] and kept_result.ok and kept_result.event_count == 3
    assert len(failures["gone"]) == 1
    assert failures["gone"][0].startswith(
        "SessionClosedElsewhere: the recording was closed meanwhile (interrupted:"
    )
    # Its start and the end the other gateway recorded, nothing after.
    assert gone_session.status == "interrupted" and gone_session.event_count == 2


def test_a_batch_is_due_at_the_first_tick_of_the_shared_grid_after_its_oldest_event(settings):
    settings.RECORDING_FLUSH_SECONDS = 0.2
    recorder = SessionRecorder(on_failure=None)
    other = SessionRecorder(on_failure=None)
    rng = random.Random(7)
    for _ in range(1000):
        oldest = rng.uniform(0, 100_000)
        due = recorder._due(oldest)
        # Never later than one interval after the event, never before it...
        assert oldest <= due <= oldest + 0.2 + 1e-9
        # ...on the grid every recorder of the process shares.
        assert math.isclose(due / 0.2, round(due / 0.2), abs_tol=1e-6)
        assert other._due(oldest + rng.uniform(0, due - oldest)) == due
