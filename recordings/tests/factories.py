"""Recorded sessions for tests, made through the real writer."""

from __future__ import annotations

import asyncio
from typing import Any

from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from recordings import chain, writer
from recordings.models import Event, Session
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


def recorded(events: list[tuple[str, dict[str, Any]]] | None = None, **start: Any) -> Session:
    """A closed, sealed session recorded through the real writer (call from sync tests)."""
    recorder = asyncio.run(asyncio.wait_for(record_session(events, **start), 30))
    return Session.objects.get(pk=recorder.session_id)


def terminal_events() -> list[tuple[str, dict[str, Any]]]:
    """What an SSH shell records: a prompt, typed keys, the command's output."""
    return [
        (Event.Kind.OUTPUT, {"data": "deploy@web-1:~$ "}),
        (Event.Kind.INPUT, {"data": "l"}),
        (Event.Kind.INPUT, {"data": "s -la /srv\r"}),
        (Event.Kind.OUTPUT, {"data": "ls -la /srv\r\ntotal 8\r\ndrwxr-xr-x 2 root root 4096 app\r\n"}),
        (Event.Kind.OUTPUT, {"data": "deploy@web-1:~$ "}),
    ]


def approval_events(by: str) -> list[tuple[str, dict[str, Any]]]:
    """A held DELETE, approved by ``by``, then run."""
    return [
        (Event.Kind.STATEMENT, {"text": "DELETE FROM invoices WHERE id = 7", "params": []}),
        (
            Event.Kind.DECISION,
            {"action": "review", "rule": "writes", "policy": "default", "policy_version": 2, "message": ""},
        ),
        (Event.Kind.APPROVAL, {"request_id": 41, "state": "approved", "by": by, "reason": "ticket OPS-12"}),
        (
            Event.Kind.RESULT,
            {"rows": 1, "command_tag": "DELETE 1", "columns": [], "first_rows": [], "duration_ms": 1.2},
        ),
    ]


def session_row(**fields: Any) -> Session:
    """A session row without events (what the writer creates before a first batch)."""
    return Session.objects.create(
        **{"protocol": "postgres", "agent_name": "bot", "connection_name": "crm", **fields}
    )


def queued(payloads: list[dict[str, Any]], wall: float = 1_700_000_000.0) -> list[Any]:
    """``payloads`` as the recorder hands statement events to the writer (``writer._take``),
    a second apart from ``wall``."""
    items = []
    for i, payload in enumerate(payloads):
        snapshot, canonical, facts = writer._take("statement", payload)
        items.append((0.0, wall + i, float(i), "statement", snapshot, canonical, facts))
    return items


def write_chained(session_id: Any, items: list[Any]) -> list[Any]:
    """``items`` chained from the session's start and written as the writer writes a batch
    (COPY on PostgreSQL), in a transaction of their own; the rows written."""
    rows, _ = writer._chain_rows(session_id, writer._ChainState(chain.genesis_hash(session_id)), items)
    with transaction.atomic():
        writer._insert_events(session_id, rows)
    return rows


def migrate_to(targets: list[tuple[str, str]] | None = None) -> None:
    """Migrate the test database to ``targets`` (every app's latest when None)."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets if targets is not None else executor.loader.graph.leaf_nodes())
