"""What approvals put on the channel layer, and what the inbox websocket sends browsers.

Two kinds of message, kept apart on purpose:

* Channel-layer messages (``RequestChanged`` to the inbox group, ``Outcome`` to the
  request's own group, only when it leaves ``pending``) carry only an id and a status,
  never a statement: each inbox
  consumer loads the request itself and re-checks that its person may see it, so nothing
  leaks to a socket that should not have it.
* Websocket payloads (``CardPayload``, ``CountPayload``) are what a
  browser receives, built per person by the consumer.

``publish_change`` is called by the action functions after commit; a channel layer that is
down loses the push, never the request (the gateway polls the database, the inbox page
shows the truth on reload).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer

from approvals.models import Status

log = logging.getLogger("airlock.approvals")

INBOX_GROUP = "approvals.inbox"

# The statuses a waiting gateway acts on: a request leaving ``pending``. Nothing else is
# sent to a request's group (a vote short of the quorum, the rows estimate, the run's
# report), so that a waiter is woken only when there is an outcome to read.
OUTCOME_STATUSES = frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED})


def layer_crosses_processes() -> bool:
    """Whether the default channel layer carries messages between processes.

    The in-memory layer (the embedded default, without ``REDIS_URL``) reaches only the
    process that sent: what the gateway or a Celery worker publishes never reaches the
    console's websockets, so the inbox page asks the console for its lists instead
    (``static/approvals/live.js``). No layer at all crosses nothing either.
    """
    from django.conf import settings
    from django.utils.module_loading import import_string

    backend = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND")
    if not backend:
        return False
    layer_class = import_string(backend)
    return not (isinstance(layer_class, type) and issubclass(layer_class, InMemoryChannelLayer))


def request_group(request_id: int) -> str:
    """The group a gateway waiting on ``request_id`` listens to."""
    return f"approvals.request.{request_id}"


@dataclass(frozen=True)
class RequestChanged:
    """Channel layer -> inbox consumers: request ``id`` was created or changed."""

    type: ClassVar[str] = "approvals.changed"
    id: int
    status: str
    created: bool = False

    def message(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class Outcome:
    """Channel layer -> the waiting gateway: request ``id`` left ``pending`` (or ran)."""

    type: ClassVar[str] = "approvals.outcome"
    id: int
    status: str

    def message(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class CardPayload:
    """Websocket -> browser: a request's card, to put in ``section`` (pending or history)."""

    id: int
    status: str
    section: str
    html: str
    # Shown as a browser notification for a new request the person can decide.
    notify: dict[str, str] | None = None
    type: str = field(default="request", init=False)

    def json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CountPayload:
    """Websocket -> browser: how many pending requests this person can decide."""

    pending: int
    type: str = field(default="count", init=False)

    def json(self) -> dict[str, Any]:
        return asdict(self)


class _Publisher:
    """One event loop thread per process that sends to the channel layer.

    Actions publish after commit from whatever thread committed (a view's, a gateway
    database thread, a Celery worker). ``async_to_sync`` there would make a new event loop,
    and with it a new Redis connection, for every message; this loop keeps one, and the
    action does not wait for the send.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="approvals-publisher", daemon=True)
        self.thread.start()
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def send(
        self,
        layer: Any,
        group: str,
        message: dict[str, Any],
        after: concurrent.futures.Future[Any] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Send ``message`` to ``group``; with ``after``, once that send has ended (so that
        the first has the loop, and the connection, to itself)."""

        async def run() -> None:
            if after is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(after)
            await layer.group_send(group, message)

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._sent)
        future.add_done_callback(_log_failure(group))
        return future

    def _sent(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait(self, timeout: float) -> None:
        with self._lock:
            pending = list(self._pending)
        if pending:
            concurrent.futures.wait(pending, timeout=timeout)


def _log_failure(group: str) -> Any:
    def done(future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            # The push is an optimisation: waiters poll the database, pages reload the truth.
            log.warning("approvals: could not publish to %s: %s", group, future.exception())

    return done


_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()


def _group_send(
    group: str, message: dict[str, Any], after: concurrent.futures.Future[Any] | None = None
) -> concurrent.futures.Future[Any] | None:
    global _publisher
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return None
    if isinstance(layer, InMemoryChannelLayer):
        # The in-memory layer lives on the caller's event loop: send there, and wait.
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            log.warning("approvals: could not publish to %s", group, exc_info=True)
        return None
    with _publisher_lock:
        if _publisher is None or not _publisher.thread.is_alive():
            _publisher = _Publisher()
        publisher = _publisher
    return publisher.send(layer, group, message, after=after)


def wait_until_published(timeout: float = 0.5) -> None:
    """Block this thread until the messages this process published so far are sent (at
    most ``timeout`` seconds).

    For work that would compete with the sends for the interpreter: the rows estimate of
    a new request (a SCRAM login and a query on the target) started while its card was
    being published took the send from 0.7 ms to 4-10 ms (docs/performance.md).
    """
    publisher = _publisher
    if publisher is not None:
        publisher.wait(timeout)


def publish_change(request_id: int, status: str, *, created: bool = False) -> None:
    """Tell inbox consumers and, for an outcome, the waiting gateway that a request changed
    (after commit). The outcome goes first: an agent waits on it."""
    first = None
    if status in OUTCOME_STATUSES:
        first = _group_send(request_group(request_id), Outcome(request_id, status).message())
    # After the outcome's send has ended: sent at once, the two shared the publisher's
    # loop (commit to outcome sent: p50 3.3 ms; approve -> result p50 34.6 -> 31.5 ms).
    _group_send(INBOX_GROUP, RequestChanged(request_id, status, created).message(), after=first)
