"""Live sessions on the channel layer: the messages the writer, the console and the gateway share.

Group ``session-<id>``, published by the writer (``recordings.writer``) after each batch it
commits, never per event:

- ``{"type": "session.events", "session_id": str, "last_seq": int}``: events up to
  ``last_seq`` are committed; watchers read what they have not seen from the database.
- ``{"type": "session.ended", "session_id": str, "status": str, "reason": str}``: the
  session has ended and is sealed.

Group ``gateway-session-<id>``, published by ``recordings.actions.do_terminate_session``
after its transaction commits, listened to by the gateway process serving the session:

- ``{"type": "session.terminate", "session_id": str, "by": str, "reason": str}``: close
  the session now. The agent gets an error naming who terminated it and why; the recording
  ends with status ``terminated`` and an end reason naming them too
  (``terminated_reason(by, reason)``).

Messages carry no event data: the database stays the one source, and a lost message costs
a watcher only latency (the live page also polls).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

log = logging.getLogger("airlock.recordings")

EVENTS = "session.events"
ENDED = "session.ended"
TERMINATE = "session.terminate"
PUBLISH_TIMEOUT = 2.0  # seconds a publish may take before it is given up


def events_group(session_id: uuid.UUID | str) -> str:
    return f"session-{session_id}"


def gateway_group(session_id: uuid.UUID | str) -> str:
    return f"gateway-session-{session_id}"


def events_message(session_id: uuid.UUID | str, last_seq: int) -> dict[str, Any]:
    return {"type": EVENTS, "session_id": str(session_id), "last_seq": last_seq}


def ended_message(session_id: uuid.UUID | str, status: str, reason: str) -> dict[str, Any]:
    return {"type": ENDED, "session_id": str(session_id), "status": status, "reason": reason}


def terminate_message(session_id: uuid.UUID | str, by: str, reason: str) -> dict[str, Any]:
    return {"type": TERMINATE, "session_id": str(session_id), "by": by, "reason": reason}


def terminated_reason(by: str, reason: str) -> str:
    """The end reason a terminated session records (and the agent is told)."""
    return f"terminated by {by}: {reason}" if reason else f"terminated by {by}"


def _channel_layer() -> Any:
    try:
        from channels.layers import get_channel_layer

        return get_channel_layer()
    except Exception:  # a broken channel layer setting must not stop recording
        log.exception("channel layer unavailable: live sessions are not announced")
        return None


class Announcer:
    """Publishes one recorder's progress, from the recorder's event loop, never blocking it.

    ``announce`` only remembers the message and starts a task if none is running; messages
    that pile up while a publish is in flight are coalesced (the newest ``last_seq`` says
    all the earlier ones did), so a slow channel layer costs one task, not a queue.
    """

    def __init__(self, session_id: uuid.UUID) -> None:
        self.group = events_group(session_id)
        self._layer = _channel_layer()
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def announce(self, message: dict[str, Any]) -> None:
        if self._layer is None:
            return
        if self._pending and self._pending[-1]["type"] == message["type"] == EVENTS:
            self._pending[-1] = message
        else:
            self._pending.append(message)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._publish(), name=f"announce {self.group}"
            )

    async def _publish(self) -> None:
        while self._pending:
            message = self._pending.pop(0)
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await self._layer.group_send(self.group, message)
            except Exception as exc:
                log.warning("%s: live announcement not sent: %s", self.group, type(exc).__name__)

    async def drain(self) -> None:
        """Wait (bounded) for what is being published, so a closing session's end goes out."""
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=PUBLISH_TIMEOUT)
            if task not in done:
                task.cancel()


def listen_for_termination(session_id: uuid.UUID, on_terminate: Any) -> asyncio.Task[None] | None:
    """Start listening on ``gateway-session-<id>``; call ``on_terminate(by, reason)`` once.

    For the gateway's protocol sessions: call when the session's recording has started,
    cancel the returned task when the session ends. None when there is no channel layer.
    """
    layer = _channel_layer()
    if layer is None:
        return None
    return asyncio.get_running_loop().create_task(
        _listen(layer, session_id, on_terminate), name=f"terminate listener {session_id}"
    )


async def _listen(layer: Any, session_id: uuid.UUID, on_terminate: Any) -> None:
    group = gateway_group(session_id)
    channel = await layer.new_channel()
    try:
        await layer.group_add(group, channel)
        while True:
            message = await layer.receive(channel)
            if message.get("type") == TERMINATE and message.get("session_id") == str(session_id):
                on_terminate(str(message.get("by", "?"))[:150], str(message.get("reason", ""))[:200])
                return
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s: termination listener stopped", group)
    finally:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await asyncio.shield(layer.group_discard(group, channel))
        except Exception:  # noqa: S110 - best effort: the group's membership expires anyway
            pass
