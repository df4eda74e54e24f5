"""An in-memory recorder with ``recordings.writer.SessionRecorder``'s interface.

Stands in for the real writer only until it is merged into this branch; the gateway
itself uses the real writer by default.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any


class MemoryRecorder:
    def __init__(self, **start: Any) -> None:
        self.session_id = uuid.uuid4()
        self.start = start
        self.events: list[tuple[str, dict[str, Any]]] = [("session_start", dict(start))]
        self.closed: dict[str, str] | None = None
        self.failed = False
        self.lock = threading.Lock()

    def append(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, payload))

    async def close(self, *, reason: str, status: str = "ended") -> None:
        self.events.append(("session_end", {"reason": reason, "status": status}))
        self.closed = {"reason": reason, "status": status}


def memory_recorder_factory(store: list[Any]):  # type: ignore[no-untyped-def]
    async def start(**kwargs: Any) -> MemoryRecorder:
        kwargs.pop("on_failure", None)
        recorder = MemoryRecorder(**kwargs)
        store.append(recorder)
        return recorder

    return start
