"""Live sessions on the channel layer: the messages the writer, the console and the gateway share.

Group ``session-<id>``, published by the writer (``recordings.writer``) after the batches it
commits, never per event and at most once a second per session (``Announcer``):

- ``{"type": "session.events", "session_id": str, "last_seq": int}``: events up to
  ``last_seq`` are committed; watchers read what they have not seen from the database.
- ``{"type": "session.ended", "session_id": str, "status": str, "reason": str}``: the
  session has ended and is sealed.

Group ``gateway-session-<id>``, published by ``recordings.actions.do_terminate_session``
after its transaction commits (which also stores a ``TerminationRequest`` row that the
gateway polls for, in case the message cannot reach it), listened to by the gateway
process serving the session:

- ``{"type": "session.terminate", "session_id": str, "by": str, "reason": str}``: close
  the session now. The agent gets an error naming who terminated it and why; the recording
  ends with status ``terminated`` and an end reason naming them too
  (``terminated_reason(by, reason)``).

Messages carry no event data: the database stays the one source, and a lost message costs
a watcher only latency (the live page also polls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import uuid
import weakref
from typing import Any

log = logging.getLogger("airlock.recordings")

EVENTS = "session.events"
ENDED = "session.ended"
TERMINATE = "session.terminate"
PUBLISH_TIMEOUT = 2.0  # seconds a publish may take before it is given up
ANNOUNCE_INTERVAL = 1.0  # seconds between two progress announcements of one session, at least


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
    Progress is published at most once per ``ANNOUNCE_INTERVAL`` per session: the first
    batch after a quiet spell goes out at once, a busy session's batches (one every
    ``RECORDING_FLUSH_SECONDS``) are announced together. Each publish is a few Redis round
    trips on the gateway's event loop; at 8 busy sessions per process they took about 8%
    of the loop (docs/performance.md). The end of a session is never held back.
    """

    def __init__(self, session_id: uuid.UUID) -> None:
        self.group = events_group(session_id)
        self._layer = _channel_layer()
        self._pending: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._last = -ANNOUNCE_INTERVAL  # time.monotonic() of the last publish

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
            wait = self._last + ANNOUNCE_INTERVAL - time.monotonic()
            if wait > 0 and all(m["type"] == EVENTS for m in self._pending):
                await asyncio.sleep(wait)  # what is announced meanwhile replaces the message
                continue
            self._last = time.monotonic()
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


def _requested_terminations(session_ids: list[str]) -> list[tuple[str, str, str]]:
    """(session id, by, reason) of the termination requests among ``session_ids``.

    Runs on the listener's own thread, which keeps one database connection between polls
    (dropped after an error, so the next poll reconnects)."""
    from django.db import close_old_connections, connections

    from recordings.models import TerminationRequest

    close_old_connections()
    try:
        rows = TerminationRequest.objects.filter(session_id__in=session_ids).values_list(
            "session_id", "requested_by", "reason"
        )
        return [(str(pk), by, reason) for pk, by, reason in rows]
    except Exception:
        connections.close_all()
        raise


def _close_thread_connections() -> None:
    from django.db import connections

    connections.close_all()


class TerminationListener:
    """The gateway side of ``session.terminate``, for every session of one event loop.

    Two ways in, whichever comes first: the channel layer (one channel per loop, every
    session a member of its own ``gateway-session-<id>`` group: no Redis connection per
    session), and a poll of ``recordings.TerminationRequest`` for all the loop's sessions,
    one query every ``RECORDING_TERMINATE_POLL_SECONDS``, made only while sessions are
    watched. The poll is what terminates sessions when the console's message cannot reach
    the gateway: the embedded default's in-memory channel layer lives in each process, a
    Redis message can be lost, a group membership can expire. Use the module functions
    ``watch_for_termination``, ``stop_watching`` and ``close_termination_listener``.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel = ""
        self.callbacks: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.poller: asyncio.Task[None] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def start_polling(self) -> None:
        if self.poller is None or self.poller.done():
            self.poller = asyncio.get_running_loop().create_task(self._poll(), name="session.terminate poll")

    async def join(self, session_id: uuid.UUID) -> None:
        if not self.channel:
            self.channel = await self.layer.new_channel()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self._receive(), name="session.terminate listener"
            )
        await self.layer.group_add(gateway_group(session_id), self.channel)

    async def unwatch(self, session_id: uuid.UUID) -> None:
        if self.callbacks.pop(str(session_id), None) is not None and self.layer is not None and self.channel:
            await self.layer.group_discard(gateway_group(session_id), self.channel)

    def deliver(self, session_id: str, by: str, reason: str) -> None:
        callback = self.callbacks.pop(session_id, None)
        if callback is None:
            return  # ended meanwhile, or already told by the other way in
        try:
            callback(by[:150], reason[:200])
        except Exception:
            log.exception("session %s: terminating failed", session_id)

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis restarted or a connection dropped: memberships live in Redis, so
                # receiving again is enough (and the poll covers the gap).
                log.warning("session.terminate listener: %s; receiving again", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if message.get("type") != TERMINATE:
                continue
            self.deliver(
                str(message.get("session_id", "")),
                str(message.get("by", "?")),
                str(message.get("reason", "")),
            )

    async def _poll(self) -> None:
        from django.conf import settings

        interval = float(getattr(settings, "RECORDING_TERMINATE_POLL_SECONDS", 1.0))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            if not self.callbacks:
                continue
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="airlock-terminate-poll"
                )
            try:
                found = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, _requested_terminations, list(self.callbacks)),
                    max(interval * 5, 10.0),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("termination requests could not be read: %s", type(exc).__name__)
                continue
            for session_id, by, reason in found:
                self.deliver(session_id, by, reason)

    async def close(self) -> None:
        tasks = [t for t in (self.task, self.poller) if t is not None]
        self.task = self.poller = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=PUBLISH_TIMEOUT)
        executor, self._executor = self._executor, None
        if executor is not None:
            # The poll thread's database connection is closed on that thread.
            closing = asyncio.get_running_loop().run_in_executor(executor, _close_thread_connections)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing, PUBLISH_TIMEOUT)
            executor.shutdown(wait=False)


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TerminationListener] = (
    weakref.WeakKeyDictionary()
)


async def watch_for_termination(session_id: uuid.UUID, on_terminate: Any) -> bool:
    """Call ``on_terminate(by, reason)`` (once, on this loop) when a person terminates the
    session from the console. For the gateway's protocol sessions, once their recording has
    started. Bounded and never raises. True: the session is watched (by the database poll
    at least; the channel layer too when there is one and joining its group worked)."""
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None:
        listener = _listeners[loop] = TerminationListener(_channel_layer())
    listener.callbacks[str(session_id)] = on_terminate
    listener.start_polling()
    if listener.layer is not None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await listener.join(session_id)
        except Exception as exc:
            log.warning(
                "session %s: terminate messages not received (%s); the database poll stands in",
                session_id,
                type(exc).__name__,
            )
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
