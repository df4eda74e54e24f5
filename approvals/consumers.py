"""The reviewer's live inbox: ``/ws/approvals/``.

Authenticated in ``connect`` (a logged-in reviewer; the origin is checked by the ASGI
stack's ``AllowedHostsOriginValidator``). Every channel-layer event names only a request
id; for each one the consumer re-checks that its person is still logged in and still a
reviewer, loads the request, and sends its card only if that person reviews it. Nothing
about a request reaches a socket whose person may not decide it.

The database work runs on the approvals database threads (``approvals.gateway.on_db_thread``),
not on the single thread that runs the console's synchronous views: a card being rendered
for every open inbox does not hold up a reviewer's approve request, and the reverse.

The two queries of the re-check (the person; the request as this person may see it) are
built by the ORM once per socket and their SQL run again for each event: building them
cost about 8 ms of CPU per event and open inbox, ten times what the database took to answer
them, and every inbox renders every event, the one just approved included. They are run
afresh each time (nothing read is kept), so the check is the same as the ORM's.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db.models import Exists, IntegerField, QuerySet, Subquery

from approvals.cards import render_card, section_of
from approvals.events import INBOX_GROUP, CardPayload, CountPayload
from approvals.gateway import on_db_thread
from approvals.models import ApprovalDecision, ApprovalRequest, Status
from console.prebuilt import BuiltQuery

# Close codes (4000-4999 are the application's): not logged in / no longer a reviewer.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403

# Stands for the request id in the SQL built once per socket: no request has this id.
_ANY_REQUEST = -7_300_917_411


class ApprovalInboxConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    user_id: int | None = None
    # This socket's two per-event queries, built on first use (see the module docstring).
    _person_query: BuiltQuery | None = None
    _request_query: BuiltQuery | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        count = await on_db_thread(self._count)()
        if count is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(INBOX_GROUP, self.channel_name)
        await self.accept()
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
        """The person, if still active, a reviewer and logged in: one query for all three."""
        from django.contrib.sessions.backends.db import SessionStore as DatabaseSession
        from django.contrib.sessions.models import Session

        # A logged-out session no longer holds this socket open (the session row is gone).
        session = self.scope.get("session")
        key = session.session_key if session is not None else None
        # Channels hands the session over wrapped in a LazyObject (resolved by now: the key
        # was read): the store's own type says whether its row can be checked in the query.
        store = getattr(session, "_wrapped", session)
        in_query = bool(key) and isinstance(store, DatabaseSession) and store.get_model_class() is Session
        if self._person_query is None:
            self._person_query = BuiltQuery.of(self._people(key if in_query else None))
        user = next(iter(self._person_query.run()), None)
        if user is None or not user.has_role("reviewer"):
            return None
        if key and not (user.airlock_session_open if in_query else session.exists(key)):
            return None
        return user

    def _people(self, session_key: str | None) -> QuerySet[Any]:
        """The person if still active, with their roles, and whether ``session_key`` (a
        database session) is still there."""
        from django.contrib.sessions.models import Session

        from identity.models import User, with_roles

        people = with_roles(User.objects.filter(pk=self.user_id, is_active=True))
        if session_key:
            people = people.annotate(
                airlock_session_open=Exists(Session.objects.filter(session_key=session_key))
            )
        return people.order_by()[:1]

    def _requests(self, user: Any) -> QuerySet[Any]:
        """The request ``_ANY_REQUEST`` if ``user`` reviews it, with their count of requests
        awaiting them."""
        awaiting = ApprovalRequest.objects.awaiting(user).order_by().values("pk")
        return (
            ApprovalRequest.objects.for_reviewer(user)
            .filter(pk=_ANY_REQUEST)
            .annotate(awaiting_count=_Count(awaiting))
            .order_by()
        )

    def _count(self) -> int | None:
        """How many requests this person may decide now; None: close the socket."""
        user = self._user()
        return ApprovalRequest.objects.awaiting(user).count() if user else None

    def _payloads(self, request_id: int, created: bool) -> list[dict[str, Any]] | None:
        """What this person is sent about request ``request_id``; None: close the socket.

        Three queries: the person (still a logged-in reviewer), the request if they review
        it with their count of requests awaiting them, and its decisions (none to read for
        the event of a request just created).
        """
        user = self._user()
        if user is None:
            return None
        if self._request_query is None:
            # Built for a person who is a reviewer now (``for_reviewer`` asks); whether they
            # still are is checked by ``_user()`` above on every event.
            self._request_query = BuiltQuery.of(self._requests(user), _ANY_REQUEST)
        req = next(iter(self._request_query.run(request_id)), None)
        if req is None:
            # Not theirs: say nothing at all, not even that something changed.
            return []
        # A request just created has no decisions: one query less before its card goes
        # out (a decision made meanwhile publishes a change, and its card, of its own).
        _prefetch_decisions(req, none=created and req.status == Status.PENDING)
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
        count = CountPayload(req.awaiting_count)
        return [card.json(), count.json()]


def _prefetch_decisions(req: ApprovalRequest, *, none: bool = False) -> None:
    """``req.decisions.all()`` read in one query and kept, as ``prefetch_related`` would:
    Django's prefetching of a raw query's rows cost more CPU than the other two queries of
    an event together. ``none``: the request has none yet (no query)."""
    decisions = req.decisions.all()
    decisions._result_cache = [] if none else list(ApprovalDecision.objects.filter(request_id=req.pk))
    decisions._prefetch_done = True
    req._prefetched_objects_cache = {"decisions": decisions}


class _Count(Subquery):  # type: ignore[misc]
    """The number of rows of a subquery, read as a column of the outer query."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) AS counted)"
    output_field = IntegerField()
