"""An in-memory stand-in for the recorder the relay records through, for unit tests that
drive the relay without a gateway (the gateway's tests use the real ``SessionRecorder``).

It keeps ``SessionRecorder``'s contract for a statement's result: a result joins its
statement's event (``payload["result"]``) when nothing was recorded in between, and is an
event of its own otherwise. The recorder's flush-interval bound is not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def results(events: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Every result of ``(kind, payload)`` events, joined to its statement's event or an
    event of its own, each naming its statement (``statement``) as a result event does."""
    found = []
    for kind, payload in events:
        if kind == "result":
            found.append(payload)
        elif kind == "statement" and "result" in payload:
            found.append({**payload["result"], "statement": payload["text"]})
    return found


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._open = 0  # the handle of the last event if it is an open statement

    def append(self, kind: str, payload: dict[str, Any]) -> None:
        self._open = 0
        self.events.append((kind, payload))

    def open_statement(self, payload: dict[str, Any]) -> int:
        self.events.append(("statement", payload))
        self._open = len(self.events)
        return self._open

    def complete(self, handle: int, result: dict[str, Any]) -> bool:
        if not handle or handle != self._open:
            return False
        self._open = 0
        self.events[handle - 1][1]["result"] = result
        return True

    def results(self) -> list[dict[str, Any]]:
        return results(self.events)
