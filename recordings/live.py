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
import weakref
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


class TerminationListener:
    """The gateway side of ``session.terminate``: one channel per event loop, every session
    of that loop's gateway a member of its own ``gateway-session-<id>`` group.

    One receive loop per process, not one per session: a busy gateway holds no Redis
    connection per session. Use the module functions ``watch_for_termination``,
    ``stop_watching`` and ``close_termination_listener``.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel = ""
        self.callbacks: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None

    async def watch(self, session_id: uuid.UUID, on_terminate: Any) -> None:
        if not self.channel:
            self.channel = await self.layer.new_channel()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._receive(), name="session.terminate listener"
            )
        self.callbacks[str(session_id)] = on_terminate
        await self.layer.group_add(gateway_group(session_id), self.channel)

    async def unwatch(self, session_id: uuid.UUID) -> None:
        if self.callbacks.pop(str(session_id), None) is not None:
            await self.layer.group_discard(gateway_group(session_id), self.channel)

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis restarted or a connection dropped: memberships live in Redis, so
                # receiving again is enough.
                log.warning("session.terminate listener: %s; receiving again", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if message.get("type") != TERMINATE:
                continue
            callback = self.callbacks.pop(str(message.get("session_id", "")), None)
            if callback is None:
                continue
            try:
                callback(str(message.get("by", "?"))[:150], str(message.get("reason", ""))[:200])
            except Exception:
                log.exception("session %s: terminating failed", message.get("session_id"))

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=PUBLISH_TIMEOUT)


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TerminationListener] = (
    weakref.WeakKeyDictionary()
)


async def watch_for_termination(session_id: uuid.UUID, on_terminate: Any) -> bool:
    """Call ``on_terminate(by, reason)`` (once, on this loop) when a person terminates the
    session from the console. For the gateway's protocol sessions, once their recording has
    started. Bounded and never raises: False when there is no channel layer to listen on."""
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None:
        layer = _channel_layer()
        if layer is None:
            return False
        listener = _listeners[loop] = TerminationListener(layer)
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await listener.watch(session_id, on_terminate)
    except Exception as exc:
        log.error("session %s cannot be terminated from the console: %s", session_id, type(exc).__name__)
        listener.callbacks.pop(str(session_id), None)
        return False
    return True


async def stop_watching(session_id: uuid.UUID) -> None:
    """Forget the session (when it ends). Bounded and never raises."""
    listener = _listeners.get(asyncio.get_running_loop())
    if listener is None:
        return
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await listener.unwatch(session_id)
    except Exception as exc:  # the membership expires with the group anyway
        log.warning("session %s: leaving its terminate group failed: %s", session_id, type(exc).__name__)


async def close_termination_listener() -> None:
    """Stop this loop's listener (when the gateway stops, before its loop does)."""
    listener = _listeners.pop(asyncio.get_running_loop(), None)
    if listener is not None:
        await listener.close()
