"""What approvals put on the channel layer, and what the inbox websocket sends browsers.

Two kinds of message, kept apart on purpose:

* Channel-layer messages (``RequestChanged`` to the inbox group, ``Outcome`` to the
  request's own group) carry only an id and a status, never a statement: each inbox
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
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from asgiref.sync import async_to_sync

log = logging.getLogger("airlock.approvals")

INBOX_GROUP = "approvals.inbox"


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


def _in_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _group_send(group: str, message: dict[str, Any]) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        if _in_loop_thread():
            # Called from sync code on a thread that runs an event loop (a test driving a
            # browser, an embedding application): async_to_sync cannot run here, a helper
            # thread can.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(async_to_sync(layer.group_send), group, message).result(timeout=10)
        else:
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        # The push is an optimisation: waiters poll the database and pages reload the truth.
        log.warning("approvals: could not publish to %s", group, exc_info=True)


def publish_change(request_id: int, status: str, *, created: bool = False) -> None:
    """Tell inbox consumers and the waiting gateway that a request changed (after commit)."""
    _group_send(INBOX_GROUP, RequestChanged(request_id, status, created).message())
    _group_send(request_group(request_id), Outcome(request_id, status).message())
