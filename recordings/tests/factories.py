"""Recorded sessions for tests, made through the real writer."""

from __future__ import annotations

from typing import Any

from recordings.models import Event
from recordings.writer import SessionRecorder

BILLING_BOT = {"protocol": "postgres", "agent_name": "billing-bot", "connection_name": "shop"}


async def record_session(
    events: list[tuple[str, dict[str, Any]]] | None = None, **start: Any
) -> SessionRecorder:
    """Start a billing-bot session, append ``events`` (a few statements by default), close it."""
    recorder = await SessionRecorder.start(**{**BILLING_BOT, "client_address": "127.0.0.1:50000", **start})
    if events is None:
        events = statement_events(3)
    for kind, payload in events:
        recorder.append(kind, payload)
    await recorder.close(reason="client disconnected")
    return recorder


def statement_events(count: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for n in range(count):
        events += [
            (Event.Kind.STATEMENT, {"text": "SELECT * FROM invoices WHERE id = $1", "params": [str(n)]}),
            (
                Event.Kind.DECISION,
                {
                    "action": "allow",
                    "rule": "read-only",
                    "policy": "default",
                    "policy_version": 1,
                    "message": "",
                },
            ),
            (
                Event.Kind.RESULT,
                {
                    "rows": 1,
                    "command_tag": "SELECT 1",
                    "columns": ["id", "total"],
                    "first_rows": [[str(n), "9.99"]],
                    "duration_ms": 0.4,
                },
            ),
        ]
    return events
