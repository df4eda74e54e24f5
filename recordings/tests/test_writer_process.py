"""The recording writer in a child process (``manage.py gateway``'s default), against the real
PostgreSQL: what it writes verifies, a killed writer process loses nothing, a failing write
reaches strict mode with its first line only, and stopping ends the child."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from recordings import writer
from recordings.tests.conftest import in_db
from recordings.tests.factories import BILLING_BOT, record_session, statement_events
from recordings.tests.test_writer import (
    _admin_conn,
    _session,
    _until,
    _verify,
    one_session_whose_writes_fail,
)
from recordings.writer import SessionRecorder, close_abandoned, shutdown_writer, use_writer_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


@pytest.fixture(autouse=True)
def writer_process():  # type: ignore[no-untyped-def]
    shutdown_writer()
    use_writer_process(True)
    yield
    use_writer_process(False)
    shutdown_writer()


def _child() -> int:
    process = writer._process
    assert process is not None and not process.closed
    assert process.proc.pid != os.getpid() and process.proc.poll() is None
    return int(process.proc.pid)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie not reaped yet counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "Z"


async def test_a_session_written_by_the_writer_process_verifies_and_stopping_ends_the_process():
    async with asyncio.timeout(60):
        recorder = await record_session(statement_events(40))
        pid = _child()
        session = await in_db(_session, recorder.session_id)
        result = await in_db(_verify, recorder.session_id)
    assert session.event_count == 1 + 40 * 3 + 1 and session.statement_count == 40
    assert session.seal and result.ok, result.reason
    await asyncio.to_thread(shutdown_writer)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "the writer process did not end"
        await asyncio.sleep(0.05)


async def test_a_writer_process_killed_with_a_write_in_flight_loses_nothing(settings):
    settings.RECORDING_PERSIST_TIMEOUT = 20
    failures: list[str] = []
    admin = await asyncio.to_thread(_admin_conn)
    try:
        async with asyncio.timeout(60):
            recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
            first = _child()
            # Hold the next write in the child: the lock keeps its COPY waiting.
            await asyncio.to_thread(admin.execute, "BEGIN")
            await asyncio.to_thread(admin.execute, "LOCK TABLE recordings_event IN EXCLUSIVE MODE")
            for kind, payload in statement_events(10):
                recorder.append(kind, payload)
            await _until(lambda: recorder._inflight is not None)
            await asyncio.sleep(0.3)
            os.kill(first, signal.SIGKILL)
            await asyncio.to_thread(admin.execute, "COMMIT")
            for kind, payload in statement_events(5):
                recorder.append(kind, payload)
            await recorder.close(reason="done")
            second = _child()
            session = await in_db(_session, recorder.session_id)
            result = await in_db(_verify, recorder.session_id)
    finally:
        await asyncio.to_thread(admin.close)
    assert second != first
    assert failures == []
    assert session.event_count == 1 + 15 * 3 + 1 and session.dropped_events == 0
    assert result.ok, result.reason


async def test_a_write_failing_in_the_writer_process_fails_its_session_with_the_first_line_only(settings):
    settings.RECORDING_PERSIST_TIMEOUT = 1
    failures, _, fine = await one_session_whose_writes_fail(within=60)
    fine_result = await in_db(_verify, fine.session_id)
    assert failures["doomed"][0].startswith("recording write failed: IntegrityError: new row for relation")
    assert "Failing row" not in failures["doomed"][0]
    assert len(failures["doomed"]) == 1 and failures["fine"] == []
    assert fine_result.ok, fine_result.reason


async def test_the_heartbeat_and_a_session_closed_elsewhere_reach_across_the_writer_process(settings):
    settings.RECORDING_HEARTBEAT_SECONDS = 0.3
    failures: list[str] = []
    async with asyncio.timeout(60):
        recorder = await SessionRecorder.start(**BILLING_BOT, on_failure=failures.append)
        _child()
        first = (await in_db(_session, recorder.session_id)).gateway_seen_at
        await asyncio.sleep(0.8)  # idle: the heartbeat is the writer process's job
        later = (await in_db(_session, recorder.session_id)).gateway_seen_at
        assert await in_db(lambda: close_abandoned(abandoned_after=0.0)) == [recorder.session_id]
        # The next heartbeat is refused in the child; the error comes back described.
        await _until(lambda: failures)
        await recorder.close(reason="client disconnected")
        session = await in_db(_session, recorder.session_id)
    assert first is not None and later > first
    assert len(failures) == 1 and failures[0].startswith("SessionClosedElsewhere: the recording was closed")
    assert session.status == "interrupted"


async def test_sessions_flushing_together_are_written_by_one_job_of_the_writer_process(monkeypatch):
    from recordings.writer_process import WriterProcess

    names: list[tuple[str, int]] = []
    real_submit = WriterProcess.submit

    def submit(self, name, *args):  # type: ignore[no-untyped-def]
        names.append((name, len(args[0]) if name == "persist_group" else 1))
        return real_submit(self, name, *args)

    monkeypatch.setattr(WriterProcess, "submit", submit)
    async with asyncio.timeout(60):
        recorders = [await SessionRecorder.start(**BILLING_BOT) for _ in range(3)]
        names.clear()
        for recorder in recorders:
            for kind, payload in statement_events(5):
                recorder.append(kind, payload)
        await _until(lambda: all(r._state.seq >= 16 for r in recorders))
        written = list(names)
        await asyncio.gather(*(recorder.close(reason="done") for recorder in recorders))
        results = [await in_db(_verify, r.session_id) for r in recorders]
    assert written == [("persist_group", 3)]
    assert all(result.ok and result.event_count == 17 for result in results), results
