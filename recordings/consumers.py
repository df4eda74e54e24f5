"""The live session websocket: ``/ws/recordings/<session id>/?after=<seq>``.

Sends ``{"type": "events", "events": [...]}`` (the replay API's event shape) for every event
after ``after`` (what the page already has), then as the writer commits more, and
``{"type": "ended", "status", "reason"}`` once the session is over. Wakes on the writer's
``session.events`` / ``session.ended`` messages (``recordings.live``) and, in case one is
lost, polls the session row every ``RECORDING_LIVE_POLL_SECONDS``. Permission is checked on
connect and again before every send; a person who loses it is told and disconnected.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import parse_qs

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from recordings import access, actions, live
from recordings.models import Session

SEND_BATCH = 1000  # events per websocket message at most

# Close codes (4000-4999 are the application's, RFC 6455 section 7.4.2).
NOT_LOGGED_IN = 4401
FORBIDDEN = 4403


def _fresh_user(user_id: int) -> Any:
    from identity.models import User

    # Roles are read again: a person removed from a role group loses the stream.
    return User.objects.filter(pk=user_id, is_active=True).first()


@database_sync_to_async
def _visible_session(user_id: int, session_id: uuid.UUID) -> Session | None:
    user = _fresh_user(user_id)
    session = Session.objects.filter(pk=session_id).first()
    if user is None or session is None or not access.can_view_session(user, session):
        return None
    return session


@database_sync_to_async
def _record_watch(user_id: int, session: Session, source: str) -> None:
    actions.record_view(_fresh_user(user_id), session, how="live", source_address=source)


@database_sync_to_async
def _events_after(session_id: uuid.UUID, after: int) -> tuple[list[dict[str, Any]], str, str]:
    rows = list(
        Session.objects.get(pk=session_id)
        .events.filter(seq__gt=after)
        .order_by("seq")
        .values_list("seq", "at", "offset_ms", "kind", "payload")[:SEND_BATCH]
    )
    status, reason = Session.objects.filter(pk=session_id).values_list("status", "end_reason").get()
    events = [{"seq": s, "at": at, "offset_ms": o, "kind": k, "payload": p} for s, at, o, k, p in rows]
    return events, status, reason


@database_sync_to_async
def _progress(session_id: uuid.UUID) -> tuple[int, str] | None:
    return Session.objects.filter(pk=session_id).values_list("event_count", "status").first()


class LiveSessionConsumer(AsyncWebsocketConsumer):
    session_id: uuid.UUID
    user_id: int
    cursor: int = 0
    ended: bool = False
    group: str = ""

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_LOGGED_IN)
            return
        self.user_id = user.pk
        session = await _visible_session(self.user_id, self.session_id)
        if session is None:
            await self.close(code=FORBIDDEN)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            self.cursor = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            self.cursor = 0
        self.group = live.events_group(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        client = self.scope.get("client") or ("", 0)
        await _record_watch(self.user_id, session, str(client[0])[:64])
        await self._send_new()
        if not self.ended:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def disconnect(self, code: int) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The stream is one-way; terminating is a POST with its CSRF token (recordings.views).
        return

    # -- channel layer events (recordings.live) ----------------------------------------------

    async def session_events(self, message: dict[str, Any]) -> None:
        if int(message.get("last_seq", 0)) > self.cursor:
            await self._send_new()

    async def session_ended(self, message: dict[str, Any]) -> None:
        await self._send_new()

    # -- sending --------------------------------------------------------------------------

    async def _poll(self) -> None:
        interval = float(settings.RECORDING_LIVE_POLL_SECONDS)
        while not self.ended:
            await asyncio.sleep(interval)
            progress = await _progress(self.session_id)
            if progress is None or progress[0] > self.cursor or progress[1] != Session.Status.LIVE:
                await self._send_new()

    async def _send_new(self) -> None:
        async with self._lock:
            if self.ended:
                return
            if await _visible_session(self.user_id, self.session_id) is None:
                await self.send(text_data=orjson.dumps({"type": "forbidden"}).decode())
                self.ended = True
                await self.close(code=FORBIDDEN)
                return
            while True:
                events, status, reason = await _events_after(self.session_id, self.cursor)
                if events:
                    self.cursor = events[-1]["seq"]
                    await self.send(text_data=orjson.dumps({"type": "events", "events": events}).decode())
                if len(events) < SEND_BATCH:
                    break
            if status != Session.Status.LIVE:
                self.ended = True
                await self.send(
                    text_data=orjson.dumps({"type": "ended", "status": status, "reason": reason}).decode()
                )
