"""Recorder throughput: ``python -m recordings.benchmark`` (uses a throwaway database).

Reports the cost of ``append`` on the event loop (events/second, microseconds per event)
and how fast events reach the database (events/second persisted, end to end: from the
first append until ``close`` returns with everything committed and sealed), for one
recorder and for several recording at once.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any


def _statement(n: int) -> list[tuple[str, dict[str, Any]]]:
    # Three events of the kinds a statement records, each an event of its own (the gateway
    # usually joins a result to its statement's event: docs/recordings.md); what is
    # measured is the recorder's cost per event.
    return [
        ("statement", {"text": "SELECT abalance FROM pgbench_accounts WHERE aid = $1", "params": [str(n)]}),
        (
            "decision",
            {"action": "allow", "rule": "reads", "policy": "default", "policy_version": 3, "message": ""},
        ),
        (
            "result",
            {
                "rows": 1,
                "command_tag": "SELECT 1",
                "columns": ["abalance"],
                "first_rows": [[str(n % 5000)]],
                "duration_ms": 0.081,
            },
        ),
    ]


EVENTS = [event for n in range(30_000) for event in _statement(n)]  # 90,000 events


async def _one_recorder() -> dict[str, float]:
    from recordings.writer import SessionRecorder

    recorder = await SessionRecorder.start(protocol="postgres", agent_name="bench", connection_name="bench")
    started = time.perf_counter()
    for kind, payload in EVENTS:
        recorder.append(kind, payload)
    appended = time.perf_counter()
    await recorder.close(reason="bench")
    persisted = time.perf_counter()
    if recorder.failed or recorder.dropped_events:
        raise RuntimeError(f"recording lost events: {recorder.failure_reason}")
    return {
        "append_per_s": len(EVENTS) / (appended - started),
        "append_us": (appended - started) / len(EVENTS) * 1e6,
        "persist_per_s": len(EVENTS) / (persisted - started),
    }


async def _many_recorders(sessions: int, per_session: int) -> float:
    """Sessions appending one statement's events at a time, yielding between statements."""
    from recordings.writer import SessionRecorder

    recorders = [
        await SessionRecorder.start(protocol="postgres", agent_name=f"bench-{n}", connection_name="bench")
        for n in range(sessions)
    ]

    async def drive(recorder: SessionRecorder) -> None:
        for n in range(0, per_session, 3):
            for kind, payload in EVENTS[n : n + 3]:
                recorder.append(kind, payload)
            await asyncio.sleep(0)
        await recorder.close(reason="bench")

    started = time.perf_counter()
    await asyncio.gather(*(drive(r) for r in recorders))
    elapsed = time.perf_counter() - started
    if any(r.failed or r.dropped_events for r in recorders):
        raise RuntimeError("recording lost events")
    return sessions * per_session / elapsed


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from django.db import connection

    from recordings.writer import shutdown_writer

    if connection.vendor != "postgresql":
        print("recordings benchmark: set DATABASE_URL to a PostgreSQL database", file=sys.stderr)
        return 2
    base_name = connection.settings_dict["NAME"]
    connection.settings_dict["TEST"]["NAME"] = f"{base_name}_bench_recordings"
    old = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        runs = [asyncio.run(_one_recorder()) for _ in range(3)]
        one = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        many = {n: asyncio.run(_many_recorders(n, 90_000 // n)) for n in (8, 50)}
    finally:
        shutdown_writer()
        connection.close()
        connection.creation.destroy_test_db(old, verbosity=0)
    print(
        "recordings: append on the event loop   {append_per_s:>10,.0f} events/s  ({append_us:.1f} us/event)".format(
            **one
        )
    )
    print("recordings: persisted, 1 recorder      {persist_per_s:>10,.0f} events/s".format(**one))
    for sessions, rate in many.items():
        print(f"recordings: persisted, {sessions:>2} recorders     {rate:>10,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
