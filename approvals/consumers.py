"""The reviewer's live inbox: ``/ws/approvals/``.

Authenticated in ``connect`` (a logged-in reviewer; the origin is checked by the ASGI
stack's ``AllowedHostsOriginValidator``). Every channel-layer event names only a request
id; for each one the consumer re-checks that its person is still logged in and still a
reviewer, loads the request, and sends its card only if that person reviews it. Nothing
about a request reaches a socket whose person may not decide it.

The database work runs on the approvals database threads (``approvals.gateway.on_db_thread``),
not on the single thread that runs the console's synchronous views: a card being rendered
for every open inbox does not hold up a reviewer's approve request, and the reverse.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from approvals.cards import render_card, section_of
from approvals.events import INBOX_GROUP, CardPayload, CountPayload
from approvals.gateway import on_db_thread
from approvals.models import ApprovalRequest

# Close codes (4000-4999 are the application's): not logged in / no longer a reviewer.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class ApprovalInboxConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    user_id: int | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await on_db_thread(self._is_reviewer)(user.pk):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user_id = user.pk
        await self.channel_layer.group_add(INBOX_GROUP, self.channel_name)
        await self.accept()
        count = await on_db_thread(self._count)()
        await self.send_json(CountPayload(count).json())

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(INBOX_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The inbox only listens; decisions go through the HTTP API (CSRF-checked).
        return

    # -- channel-layer events -------------------------------------------------------------------

    async def approvals_changed(self, event: dict[str, Any]) -> None:
        payloads = await on_db_thread(self._payloads)(int(event["id"]), bool(event.get("created")))
        if payloads is None:
            await self.channel_layer.group_discard(INBOX_GROUP, self.channel_name)
            await self.close(code=CLOSE_FORBIDDEN)
            return
        for payload in payloads:
            await self.send_json(payload)

    # -- database work (in a thread) -------------------------------------------------------------

    def _user(self) -> Any:
        from identity.models import User

        user = User.objects.filter(pk=self.user_id, is_active=True).first()
        if user is None or not user.has_role("reviewer"):
            return None
        # A logged-out session no longer holds this socket open (the session row is gone).
        session = self.scope.get("session")
        if session is not None and session.session_key and not session.exists(session.session_key):
            return None
        return user

    @staticmethod
    def _is_reviewer(user_id: int) -> bool:
        from identity.models import User

        user = User.objects.filter(pk=user_id, is_active=True).first()
        return bool(user and user.has_role("reviewer"))

    def _count(self) -> int:
        user = self._user()
        return ApprovalRequest.objects.awaiting(user).count() if user else 0

    def _payloads(self, request_id: int, created: bool) -> list[dict[str, Any]] | None:
        """What this person is sent about request ``request_id``; None: close the socket."""
        user = self._user()
        if user is None:
            return None
        req = (
            ApprovalRequest.objects.for_reviewer(user)
            .filter(pk=request_id)
            .prefetch_related("decisions")
            .first()
        )
        if req is None:
            # Not theirs: say nothing at all, not even that something changed.
            return []
        notify = None
        decide = req.may_decide(user)
        can_decide = decide[0]
        if created and can_decide:
            notify = {
                "title": f"Approval needed: {req.agent_name} on {req.connection_name}",
                "body": f"Request {req.pk}, rule {req.rule or '-'}",
                "url": req.get_absolute_url(),
            }
        card = CardPayload(req.pk, req.status, section_of(req), render_card(req, user, decide), notify)
        count = CountPayload(ApprovalRequest.objects.awaiting(user).count())
        return [card.json(), count.json()]
