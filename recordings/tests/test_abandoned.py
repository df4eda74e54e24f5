"""Sessions whose gateway stopped without ending them: the heartbeat that vouches for an idle
session, ``close_abandoned`` closing and sealing the others (once, however many gateways
look), and a gateway that finds its session closed meanwhile ending it without touching the
seal. Against the real PostgreSQL; a gateway killed for real is in
gateway/tests/postgres/test_abandoned.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from recordings.models import Event, Session
from recordings.tests.conftest import in_db
from recordings.tests.factories import BILLING_BOT
from recordings.writer import SessionRecorder, close_abandoned

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def _session(session_id):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session_id)


def _kinds(session_id):  # type: ignore[no-untyped-def]
    return list(Event.objects.filter(session_id=session_id).order_by("seq").values_list("kind", flat=True))


def _verify(session_id):  # type: ignore[no-untyped-def]
    return Session.objects.get(pk=session_id).verify()


async def _until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def _written(recorder: SessionRecorder, count: int) -> None:
    async def done() -> bool:
        return (await in_db(_session, recorder.session_id)).event_count >= count

    await _until(done)


async def test_an_idle_session_is_vouched_for_by_its_heartbeat_and_left_alone(settings):
    settings.RECORDING_HEARTBEAT_SECONDS = 0.5
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT)
        first = (await in_db(_session, recorder.session_id)).gateway_seen_at
        assert first is not None
        await asyncio.sleep(1.3)  # idle: no event, only heartbeats
        later = (await in_db(_session, recorder.session_id)).gateway_seen_at
        closed = await in_db(lambda: close_abandoned(abandoned_after=1.0))
        await recorder.close(reason="client disconnected")
        session = await in_db(_session, recorder.session_id)
    assert later > first
    assert closed == []
    assert session.status == "ended" and (await in_db(_verify, recorder.session_id)).ok


async def test_a_session_not_heard_of_is_closed_as_interrupted_and_sealed_once_by_concurrent_sweepers():
    async with asyncio.timeout(30):
        recorders = [await SessionRecorder.start(**BILLING_BOT) for _ in range(3)]
        for recorder in recorders:
            recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 1", "params": []})
            await _written(recorder, 2)
        # Their gateway stops (its recorders write nothing more): stand-ins for a killed one.
        for recorder in recorders:
            assert recorder._task is not None
            recorder._task.cancel()
            SessionRecorder._live.discard(recorder)
        await asyncio.sleep(0.05)

        def sweep() -> list[object]:
            try:
                return list(close_abandoned(abandoned_after=0.0))
            finally:
                from django.db import connections

                connections.close_all()

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = list(await asyncio.gather(*(asyncio.wrap_future(pool.submit(sweep)) for _ in range(2))))
        sessions = [await in_db(_session, r.session_id) for r in recorders]
        kinds = [await in_db(_kinds, r.session_id) for r in recorders]
        results = [await in_db(_verify, r.session_id) for r in recorders]
    closed = sorted(str(pk) for run in runs for pk in run)
    assert closed == sorted(str(r.session_id) for r in recorders)  # each once, by one sweeper
    for session, kind, result in zip(sessions, kinds, results, strict=True):
        assert kind == ["session_start", "statement", "session_end"]
        assert session.status == "interrupted" and session.seal and session.ended_at is not None
        assert session.end_reason.startswith("the gateway serving it stopped without ending it")
        assert session.statement_count == 1 and session.event_count == 3
        assert result.ok, result.reason


async def test_a_gateway_that_finds_its_session_closed_elsewhere_ends_it_and_keeps_the_seal():
    failures: list[str] = []
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
        recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 1", "params": []})
        await _written(recorder, 2)
        # Cut off from the database long enough for another gateway to close it...
        assert await in_db(lambda: close_abandoned(abandoned_after=0.0)) == [recorder.session_id]
        sealed = await in_db(_session, recorder.session_id)
        # ...then it writes again: refused, and the session ends.
        recorder.append(Event.Kind.STATEMENT, {"text": "SELECT 2", "params": []})

        async def failed() -> bool:
            return bool(failures)

        await _until(failed)
        await recorder.close(reason="client disconnected")
        after = await in_db(_session, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)
    assert len(failures) == 1
    assert failures[0].startswith("SessionClosedElsewhere: the recording was closed meanwhile (interrupted:")
    assert (after.status, after.seal, after.last_hash, after.event_count) == (
        "interrupted",
        sealed.seal,
        sealed.last_hash,
        3,
    )
    assert result.ok, result.reason


async def test_an_idle_gateway_learns_from_its_heartbeat_that_its_session_was_closed(settings):
    settings.RECORDING_HEARTBEAT_SECONDS = 0.3
    failures: list[str] = []
    async with asyncio.timeout(30):
        recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
        assert await in_db(lambda: close_abandoned(abandoned_after=0.0)) == [recorder.session_id]

        async def failed() -> bool:
            return bool(failures)

        await _until(failed, timeout=5)
        await recorder.close(reason="client disconnected")
        session = await in_db(_session, recorder.session_id)
    assert failures[0].startswith("SessionClosedElsewhere")
    assert session.status == "interrupted" and session.event_count == 2


async def test_the_command_closes_what_was_not_heard_of_for_its_bound_and_refuses_a_bound_too_short(settings):
    settings.RECORDING_HEARTBEAT_SECONDS = 0.5
    async with asyncio.timeout(30):
        stale = await SessionRecorder.start(**BILLING_BOT)
        legacy = await SessionRecorder.start(**BILLING_BOT)
        fresh = await SessionRecorder.start(**BILLING_BOT)
        for gone in (stale, legacy):  # their gateways went away
            assert gone._task is not None
            gone._task.cancel()
            SessionRecorder._live.discard(gone)
        hours_ago = datetime.now(UTC) - timedelta(hours=2)
        await in_db(lambda: Session.objects.filter(pk=stale.session_id).update(gateway_seen_at=hours_ago))
        # A session of a release before the heartbeat: no gateway ever vouched for it.
        await in_db(lambda: Session.objects.filter(pk=legacy.session_id).update(gateway_seen_at=None))
        with pytest.raises(CommandError, match="at least twice the heartbeat"):
            await in_db(lambda: call_command("recordings", "close-abandoned", "--after", "0"))
        await asyncio.sleep(1.2)  # all three started more than a second ago; fresh keeps beating
        out, unknown = StringIO(), StringIO()
        await in_db(lambda: call_command("recordings", "close-abandoned", "--after", "1", stdout=out))
        after_first = await in_db(_session, legacy.session_id)
        await in_db(
            lambda: call_command("recordings", "close-abandoned", "--after", "1", "--unknown", stdout=unknown)
        )
        await fresh.close(reason="client disconnected")
        sessions = [await in_db(_session, r.session_id) for r in (stale, legacy, fresh)]
        results = [await in_db(_verify, r.session_id) for r in (stale, legacy)]
    assert out.getvalue().splitlines() == [
        f"closed {stale.session_id}  interrupted, sealed",
        "1 abandoned session closed",
    ]
    assert after_first.status == "live"
    assert unknown.getvalue().splitlines() == [
        f"closed {legacy.session_id}  interrupted, sealed",
        "1 abandoned session closed",
    ]
    assert [s.status for s in sessions] == ["interrupted", "interrupted", "ended"]
    assert sessions[1].end_reason.startswith(
        "the gateway serving it stopped without ending it: not heard of since"
    )
    for result in results:
        assert result.ok and result.event_count == 2, result.reason
