"""The gateway's side of approvals, for every protocol.

A protocol handler whose statement got a ``review`` decision calls ``ReviewGate.review``:

    >>> gate = ReviewGate(agent_id=agent.pk, connection_id=conn.pk, session_id=session.pk,
    ...                   mask_text=masker.mask)                                # doctest: +SKIP
    >>> review = await gate.review(request, decision, notice=send_notice)       # doctest: +SKIP
    >>> review.decision.action        # ALLOW (run exactly this, once) or DENY (its message says why)
    >>> await gate.finished(review, ok=True, detail="DELETE 3")                 # doctest: +SKIP

``review`` first looks for what already allows this exact statement (same agent,
connection, statement and parameters: the binding hash): a live grant, or an approved
request nobody has run yet (an agent that cannot wait sends the statement again after
approval). Otherwise it creates a request, calls ``notice("waiting for approval <id>:
<url>")`` at once and waits: on the channel layer (the request's group), with a database
poll as the fallback so that a lost message never strands a session, until the request is
decided or its deadline passes (then it expires it itself). Cancelling the awaiting task
(client disconnect, CancelRequest) cancels the request. Agents that cannot wait get the
refusal naming the request at once: the review rule's ``approval_mode`` says whether the
agent waits (``decision.approval_mode``), and when the rule says nothing the connection's
option does (``agent_waits``).

The lower-level functions (``open_request``, ``wait_for_decision``, ``cancel``,
``finish``, ``sweep``) are what ``ReviewGate`` is made of; synchronous ones touch the
database and are called through ``sync_to_async`` from the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from django.db.models import Exists, Q
from django.utils import timezone

from approvals import actions
from approvals.binding import binding_hash
from approvals.estimate import estimate_in_background, wants_estimate
from approvals.events import OUTCOME_STATUSES, request_group
from approvals.events import Outcome as OutcomeMessage
from approvals.models import ApprovalRequest, Status
from gateway.postgres.values import mask_param
from policies.types import Action, Decision, Request

log = logging.getLogger("airlock.approvals")

MaskText = Callable[[str], str]


@dataclass(frozen=True)
class Held:
    """A request created for a held statement."""

    id: int
    url: str
    expires_at: datetime
    agent_waits: bool


@dataclass(frozen=True)
class Outcome:
    """Where a request stands, in the words the agent is told."""

    request_id: int
    status: str
    url: str
    decided_by: str = ""
    reason: str = ""
    grant_until: datetime | None = None
    # Whether the waiter took the approved request's one run (``do_claim``) in the same
    # database call that read the approval; None when it did not try.
    claimed: bool | None = None

    @property
    def approved(self) -> bool:
        return self.status == Status.APPROVED

    @property
    def final(self) -> bool:
        return self.status != Status.PENDING

    def message(self) -> str:
        who = f" by {self.decided_by}" if self.decided_by else ""
        why = f": {self.reason}" if self.reason else ""
        if self.status == Status.PENDING:
            return f"approval request {self.request_id} is still waiting for review: {self.url}"
        if self.status == Status.APPROVED:
            return f"approval request {self.request_id} was approved{who}"
        if self.status == Status.REJECTED:
            return f"approval request {self.request_id} was rejected{who}{why}"
        if self.status == Status.EXPIRED:
            return f"approval request {self.request_id} expired{why}"
        if self.status == Status.CANCELLED:
            return f"approval request {self.request_id} was cancelled{why}"
        return f"approval request {self.request_id} was already used ({self.status})"


@dataclass(frozen=True)
class Review:
    """The final decision for a held statement, and the request to report the run to."""

    decision: Decision
    request_id: int | None = None
    # True when the statement runs under an earlier approval's grant (nothing to report).
    granted: bool = False


# --- creating and finding requests (synchronous: the database) -------------------------------


def _strip_texts(classification: dict[str, Any]) -> dict[str, Any]:
    # The engine's classification repeats each statement's text: unmasked. Keep the facts.
    statements = [
        {key: value for key, value in item.items() if key != "text"}
        for item in classification.get("statements") or []
    ]
    return {**classification, "statements": statements}


def _pretty(statement: str, protocol: str) -> str:
    if protocol != "postgres":
        return statement
    try:
        from pglast import prettify

        return str(prettify(statement))
    except Exception:
        return statement


def _binding_of(request: Request) -> str:
    return binding_hash(
        protocol=request.protocol,
        connection=request.connection,
        statement=request.statement,
        params=request.params,
        kind=request.kind,
    )


def open_request(
    decision: Decision,
    request: Request,
    *,
    agent_id: int | None,
    connection_id: int | None,
    session_id: Any = None,
    agent_waits: bool = True,
    mask_text: MaskText | None = None,
    estimate: bool = True,
) -> Held:
    """Create the approval request for ``request`` held by ``decision`` (a review).

    ``mask_text`` masks the statement and each parameter before anything is stored (a
    masking failure raises: nothing unmasked is written). Raises
    ``actions.NoEligibleReviewers`` when nobody could approve it.
    """
    from gateway.models import Connection
    from identity.models import Agent

    mask = mask_text or (lambda text: text)
    pretty = _pretty(request.statement, request.protocol)
    # A value shown in hex is masked in the bytes it stands for (gateway.postgres.values).
    masked_params = [None if value is None else mask_param(value, mask) for value in request.params]
    # The agent, the people on its side, and whether the connection still exists: one
    # query (each round trip is a measurable part of the time to the reviewers' card).
    agent = (
        Agent.objects.select_related("on_behalf_of", "owner")
        .filter(pk=agent_id)
        .annotate(airlock_connection=Exists(Connection.objects.filter(pk=connection_id or 0)))
        .first()
        if agent_id
        else None
    )
    connection: Connection | None = None
    if agent is not None:
        if connection_id and agent.airlock_connection:
            connection = Connection(pk=connection_id)  # only its key is used below
    elif connection_id:
        connection = Connection.objects.filter(pk=connection_id).first()
    classification = _strip_texts(decision.classification)
    estimated = estimate and connection is not None and wants_estimate(request.protocol, classification)
    req = actions.do_create_request(
        agent=agent,
        agent_name=request.agent,
        connection=connection,
        connection_name=request.connection,
        protocol=request.protocol,
        statement=mask(request.statement),
        statement_pretty=mask(pretty),
        params=masked_params,
        classification=classification,
        rule=decision.rule or "",
        rule_message=decision.message,
        policy_name=decision.policy or "",
        policy_version=decision.policy_version,
        reviewer_groups=decision.reviewers,
        approvals_needed=decision.approvals_needed,
        timeout_seconds=decision.timeout_seconds,
        binding_hash=_binding_of(request),
        session_id=session_id,
        agent_waits=agent_waits,
        estimate_status="pending" if estimated else "none",
    )
    if estimated and connection is not None:
        estimate_in_background(
            req.pk,
            connection.pk,
            request.statement,
            request.params,
            timeout=settings.APPROVALS_ESTIMATE_TIMEOUT,
        )
    return Held(req.pk, req.public_url(), req.expires_at, agent_waits)


def _matching(agent_id: int | None, connection_id: int | None, binding: str) -> Any:
    return ApprovalRequest.objects.filter(
        agent_id=agent_id, connection_id=connection_id, binding_hash=binding
    )


def find_preapproved(
    *,
    agent_id: int | None,
    connection_id: int | None,
    binding: str,
    actor: Any = None,
    session_id: Any = None,
) -> Review | None:
    """What already lets this exact statement run: a live grant, or an approved request
    nobody has run (claimed for this run, so it runs once)."""
    if agent_id is None:
        return None
    now = timezone.now()
    unrun = Q(status=Status.APPROVED, claimed_at__isnull=True, claim_by__gt=now)
    granting = Q(grant_until__gt=now)
    # One read for both kinds (usually there is neither); each is then taken by its own
    # conditional update, which re-checks it.
    rows = list(
        _matching(agent_id, connection_id, binding)
        .filter(unrun | granting)
        .values_list("pk", "status", "claimed_at", "claim_by", "decided_at", "grant_until")[:50]
    )
    # An approval nobody has run yet is used first: its run is the approved one, and a
    # grant it carries then covers the identical statements after it.
    candidates = sorted(
        (r for r in rows if r[1] == Status.APPROVED and r[2] is None and r[3] is not None and r[3] > now),
        key=lambda r: r[4] or now,
    )
    for pk, *_ in candidates[:3]:
        if actions.do_claim(actor, pk, session_id=session_id):
            return Review(Decision(action=Action.ALLOW), pk)
    grants = sorted((r for r in rows if r[5] is not None and r[5] > now), key=lambda r: r[5], reverse=True)
    for pk, *_ in grants[:3]:
        if actions.do_use_grant(actor, pk, now=now):
            return Review(Decision(action=Action.ALLOW), pk, granted=True)
    return None


def _preapproved_or_open(
    preapproved: Callable[[], Review | None], opening: Callable[..., Held]
) -> Review | Held:
    """``preapproved()`` (a grant or an approval not run yet), else a new request that the
    agent waits for (``opening``)."""
    return preapproved() or opening(agent_waits=True)


def find_pending(*, agent_id: int | None, connection_id: int | None, binding: str) -> Held | None:
    """A pending request for this exact statement (an agent that cannot wait asking again)."""
    if agent_id is None:
        return None
    req = _matching(agent_id, connection_id, binding).pending().filter(expires_at__gt=timezone.now()).first()
    return Held(req.pk, req.public_url(), req.expires_at, req.agent_waits) if req else None


def _outcome(req: ApprovalRequest) -> Outcome:
    return Outcome(
        request_id=req.pk,
        status=req.status,
        url=req.public_url(),
        decided_by=req.decided_by_name,
        reason=req.reason,
        grant_until=req.grant_until,
    )


def outcome_of(request_id: int) -> Outcome:
    return _outcome(ApprovalRequest.objects.get(pk=request_id))


def _poll(
    request_id: int,
    *,
    heartbeat: bool = True,
    claim_for: tuple[Any, Any] | None = None,
    woken: bool = False,
) -> tuple[Outcome, datetime]:
    """Read where the request stands; refresh the hold's heartbeat first (``heartbeat``),
    and when it is approved take its run at once for ``claim_for`` (actor, session id), so
    that a woken waiter needs one trip to the database thread, not two.

    A waiter ``woken`` by an outcome tries the claim before anything else: an approval is
    what wakes it most, and the row the claim changed (``do_claim_and_read``) is then the
    outcome (no read before it on the way from the approval to the statement's run)."""
    if heartbeat:
        actions.heartbeat(request_id)
    if woken and claim_for is not None:
        actor, session_id = claim_for
        taken = actions.do_claim_and_read(actor, request_id, session_id=session_id)
        if taken is not None:
            return replace(_outcome(taken), claimed=True), taken.expires_at
    req = ApprovalRequest.objects.filter(pk=request_id).first()
    if req is None:
        raise actions.ApprovalError(f"approval request {request_id} does not exist")
    outcome = _outcome(req)
    if claim_for is not None and outcome.approved:
        # Not claimed above: not woken, or approved between the claim and this read (or
        # already run by someone else, and then this claim fails too).
        actor, session_id = claim_for
        outcome = replace(outcome, claimed=actions.do_claim(actor, request_id, session_id=session_id))
    return outcome, req.expires_at


def cancel(request_id: int, reason: str, *, actor: Any = "gateway") -> bool:
    return actions.do_cancel(actor, request_id, reason=reason)


def finish(request_id: int, *, ok: bool, detail: str = "", actor: Any = "gateway") -> None:
    """Report the run of an approved (claimed) request: executed, or failed with ``detail``."""
    try:
        if ok:
            actions.do_mark_executed(actor, request_id, result=detail)
        else:
            actions.do_mark_failed(actor, request_id, error=detail or "the statement failed")
    except actions.IllegalTransition:
        log.warning("approvals: request %s was already finished", request_id)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Settle what no one else will (idempotent; the beat task and gateway start-up run it):

    * pending past the deadline -> expired (the expiry task's message may have been lost);
    * pending holds whose gateway stopped waiting (no heartbeat for ``APPROVALS_WAITER_STALE``
      seconds: a restart or a crash), or whose session has ended -> cancelled;
    * approved but not run before ``claim_by`` -> failed;
    * claimed but never reported within ``APPROVALS_REPORT_SECONDS`` -> failed.
    """
    from recordings.models import Session

    now = now or timezone.now()
    counts = {"expired": 0, "cancelled": 0, "failed": 0}
    for pk in ApprovalRequest.objects.overdue(now).values_list("pk", flat=True):
        counts["expired"] += actions.do_expire(pk, now=now)
    holds = ApprovalRequest.objects.pending().filter(agent_waits=True, expires_at__gt=now)
    stale = now - timedelta(seconds=settings.APPROVALS_WAITER_STALE)
    for pk in holds.filter(waiter_seen_at__lt=stale).values_list("pk", flat=True):
        counts["cancelled"] += actions.do_cancel(
            None, pk, reason="the gateway stopped waiting for it (restarted or lost the session)"
        )
    ended = Session.objects.filter(pk__in=holds.values("session_id")).exclude(status=Session.Status.LIVE)
    for pk in holds.filter(session_id__in=ended.values("pk")).values_list("pk", flat=True):
        counts["cancelled"] += actions.do_cancel(None, pk, reason="the agent's session ended")
    unclaimed = ApprovalRequest.objects.filter(
        status=Status.APPROVED, claimed_at__isnull=True, claim_by__lte=now
    )
    for pk in unclaimed.values_list("pk", flat=True):
        with contextlib.suppress(actions.IllegalTransition):
            actions.do_mark_failed(None, pk, error="approved, but the statement was not run in time")
            counts["failed"] += 1
    lost = ApprovalRequest.objects.filter(
        status=Status.APPROVED,
        claimed_at__lte=now - timedelta(seconds=settings.APPROVALS_REPORT_SECONDS),
    )
    for pk in lost.values_list("pk", flat=True):
        with contextlib.suppress(actions.IllegalTransition):
            actions.do_mark_failed(None, pk, error="the gateway never reported the outcome of the run")
            counts["failed"] += 1
    return counts


# --- waiting -----------------------------------------------------------------------------------


def _cancelled_meanwhile() -> bool:
    """Whether the running task was cancelled while it awaited the channel layer.

    redis-py turns a cancellation that arrives during a read with a timeout (every command
    here: the channel layer's hosts set ``socket_timeout``) into its own ``TimeoutError``;
    a handler of ``Exception`` around a channel-layer call must not swallow it, or a
    cancelled waiter goes on waiting (a CancelRequest ignored, a loop that never closes).
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Listener:
    """One channel per event loop, joined to the group of every request waited on here.

    The receive loop is never cancelled (channels_redis can lose a message when a receive
    is cancelled); each waiter just gets its ``asyncio.Event`` set.
    """

    def __init__(self, layer: Any) -> None:
        self.shared = layer
        self.layer = _own_layer(layer)
        self.channel = ""
        self.waiters: dict[int, set[asyncio.Event]] = {}
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Lock()

    async def start(self) -> None:
        async with self.ready:
            if self.task is None:
                self.channel = await self.layer.new_channel("approvals-wait.")
                self.task = asyncio.get_running_loop().create_task(self._run(), name="approvals-listener")

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if _cancelled_meanwhile():
                # A cancellation the channel layer swallowed (it returned or failed instead).
                raise asyncio.CancelledError
            try:
                message = await self.layer.receive(self.channel)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                if _cancelled_meanwhile():
                    raise asyncio.CancelledError from None
                log.warning(
                    "approvals: the channel layer failed; waiting on the database poll", exc_info=True
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            # Only an outcome wakes a waiter (a wake-up costs it a database read).
            if message.get("type") == OutcomeMessage.type and message.get("status") in OUTCOME_STATUSES:
                for event in self.waiters.get(int(message.get("id", 0)), ()):
                    event.set()

    async def watch(self, request_id: int) -> asyncio.Event:
        await self.start()
        event = asyncio.Event()
        first = request_id not in self.waiters
        self.waiters.setdefault(request_id, set()).add(event)
        if first:
            try:
                await self.layer.group_add(request_group(request_id), self.channel)
            except Exception:
                if _cancelled_meanwhile():
                    self._forget(request_id, event)
                    raise asyncio.CancelledError from None
                log.warning(
                    "approvals: could not join %s; polling only", request_group(request_id), exc_info=True
                )
        return event

    def _forget(self, request_id: int, event: asyncio.Event) -> None:
        events = self.waiters.get(request_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiters[request_id]

    async def unwatch(self, request_id: int, event: asyncio.Event) -> None:
        events = self.waiters.get(request_id)
        if events is None:
            return
        events.discard(event)
        if not events:
            del self.waiters[request_id]
            # Bounded: a channel layer that does not answer must not delay what follows
            # (cancelling the request when the agent went away); the membership expires.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self.layer.group_discard(request_group(request_id), self.channel)

    async def close(self) -> None:
        """Stop receiving, leave the groups still joined and close the layer's connections
        when it is the listener's own (bounded: a Redis that does not answer must not hold
        up the gateway's shutdown; group memberships expire by themselves)."""
        task, self.task = self.task, None
        if task is not None:
            await _cancel_until_done(task, within=2.0)
        groups = [request_group(request_id) for request_id in self.waiters]
        self.waiters.clear()
        if self.layer is self.shared:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                for group in groups:
                    await self.layer.group_discard(group, self.channel)
                await self.layer.close_pools()


async def _cancel_until_done(task: asyncio.Task[Any], within: float) -> None:
    """Cancel ``task`` again and again until it ends (at most ``within`` seconds).

    One cancellation is not always enough for a channel-layer receive: channels_redis over
    redis-py sometimes swallows it (redis-py turns a cancellation that arrives during a read
    into its own TimeoutError) and then waits on its own locks or the next BZPOPMIN, where
    a second cancellation ends it. A task left running would hold up the loop's closing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.1, max(0.0, deadline - loop.time())))


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener] = weakref.WeakKeyDictionary()


async def close_listener() -> None:
    """Stop this loop's approvals listener (gateway shutdown, after its sessions ended)."""
    listener = _listeners.pop(asyncio.get_running_loop(), None)
    if listener is not None:
        await listener.close()


def _own_layer(layer: Any) -> Any:
    """The layer the listener receives on: with Redis, an instance of its own.

    channels_redis has one receive lock per layer instance, and the receiver holding it
    reads only the Redis list of its own channel's prefix: sharing the process's instance
    with the session.terminate listener (every recorded session, on the same loop), the
    approvals listener waited behind that receive and heard no decision (only the database
    poll, 2 s, woke the gateway). Its own instance has its own lock and connections; groups
    live in Redis, so what is published to them reaches it. The in-memory layer keeps its
    groups in the instance: it is shared as it is.
    """
    from channels.layers import InMemoryChannelLayer, channel_layers

    if isinstance(layer, InMemoryChannelLayer):
        return layer
    from channels import DEFAULT_CHANNEL_LAYER

    return channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)


def _listener() -> _Listener | None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return None
    loop = asyncio.get_running_loop()
    listener = _listeners.get(loop)
    if listener is None or listener.shared is not layer:
        listener = _Listener(layer)
        _listeners[loop] = listener
    return listener


# Database work of the gateway's side runs on a few threads of its own whose connections
# stay open between calls (a new PostgreSQL connection per call would cost more than the
# work); ``close_db_threads()`` closes them (gateway shutdown, tests).
DB_THREADS = 4
_executor: ThreadPoolExecutor | None = None
_thread_connections: list[Any] = []
_executor_lock = threading.Lock()


def keep_thread_connection() -> None:
    """Keep this thread's database connection open between calls; ``close_db_threads()``
    closes it, from another thread (the approvals database threads and the estimates')."""
    conn = connections["default"]
    if not getattr(conn, "_airlock_approvals_thread", False):
        conn.inc_thread_sharing()
        conn._airlock_approvals_thread = True
        with _executor_lock:
            _thread_connections.append(conn)


def _in_db_thread(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    keep_thread_connection()
    close_old_connections()
    try:
        return fn(*args, **kwargs)
    except Exception:
        close_old_connections()
        raise


def _db(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` on one of the approvals database threads."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        global _executor
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="approvals-db")
            executor = _executor
        return await asyncio.get_running_loop().run_in_executor(executor, _in_db_thread, fn, args, kwargs)

    return call


# The same threads serve the console's inbox websockets (``approvals.consumers``).
on_db_thread = _db


def close_db_threads() -> None:
    """Stop the approvals database threads and close their connections (estimates still
    running are waited for first)."""
    global _executor
    from approvals.estimate import wait_for_estimates

    wait_for_estimates()
    with _executor_lock:
        executor, _executor = _executor, None
        opened = list(_thread_connections)
        _thread_connections.clear()
    if executor is not None:
        executor.shutdown(wait=True)
    for conn in opened:
        with contextlib.suppress(Exception):
            conn.close()


async def wait_for_decision(
    request_id: int,
    max_wait: float | None = None,
    *,
    claim_for: tuple[Any, Any] | None = None,
    created_here: bool = False,
) -> Outcome:
    """Wait until request ``request_id`` leaves ``pending`` and return its outcome.

    Woken by the channel layer; polls the database every ``APPROVALS_POLL_SECONDS`` as
    well (refreshing the hold's heartbeat; a wake-up only reads). At the request's deadline
    it expires the request itself, so the agent is told at once even with no worker
    running. ``max_wait`` (seconds) bounds the wait further: when it passes first the
    outcome is returned still pending and the request is left as it is. With ``claim_for``
    (actor, session id), an approval read here is claimed in the same database call
    (``Outcome.claimed``). ``created_here``: the request was just created by this waiter,
    its heartbeat with it, so the first read does not refresh it (two statements fewer at
    the moment reviewers open the new card).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    listener = _listener()
    # Joined before the first read, so that a decision made in between is not missed.
    event = await listener.watch(request_id) if listener is not None else asyncio.Event()
    try:
        poll = float(settings.APPROVALS_POLL_SECONDS)
        woken = False
        beat_at = loop.time() if created_here else -poll
        while True:
            event.clear()
            # The heartbeat is refreshed once per poll interval (a wake-up or the end of a
            # shorter ``max_wait`` reads only).
            beat = loop.time() - beat_at >= poll
            if beat:
                beat_at = loop.time()
            outcome, expires_at = await _db(_poll)(
                request_id, heartbeat=beat, claim_for=claim_for, woken=woken
            )
            if outcome.final:
                return outcome
            left = (expires_at - timezone.now()).total_seconds()
            if left <= 0:
                await _db(actions.do_expire)(request_id)
                return await _db(outcome_of)(request_id)
            wait = min(poll, left)
            if max_wait is not None:
                remaining = max_wait - (loop.time() - started)
                if remaining <= 0:
                    return outcome
                wait = min(wait, remaining)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can turn a cancellation
            # that arrives as its timeout fires into TimeoutError, and the agent's cancel
            # (or disconnect) would be taken for a poll interval passing.
            try:
                async with asyncio.timeout(wait):
                    await event.wait()
                woken = True
            except TimeoutError:
                if _cancelled_meanwhile():
                    raise asyncio.CancelledError from None
                woken = False
    finally:
        if listener is not None:
            await listener.unwatch(request_id, event)


# --- the gate a protocol handler uses ----------------------------------------------------------


class ReviewGate:
    """Approvals for one gateway session (any protocol).

    >>> gate = ReviewGate(agent_id=7, connection_id=3, session_id=session_uuid)  # doctest: +SKIP
    >>> review = await gate.review(request, decision, notice=print)            # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        agent_id: int | None,
        connection_id: int | None,
        session_id: Any = None,
        agent_waits: bool = True,
        mask_text: MaskText | None = None,
        estimate: bool = True,
    ) -> None:
        self.agent_id = agent_id
        self.connection_id = connection_id
        self.session_id = session_id
        self.agent_waits = agent_waits
        self.mask_text = mask_text
        self.estimate = estimate

    def waits_for(self, decision: Decision) -> bool:
        """Whether the agent waits for this held statement: the rule's mode, else the connection's."""
        if decision.approval_mode is not None:
            return decision.approval_mode != "return"
        return self.agent_waits

    @staticmethod
    def _final(decision: Decision, action: Action, message: str) -> Decision:
        return replace(decision, action=action, message=message)

    def _allowed(self, pre: Review, decision: Decision) -> Review:
        """The statement runs under ``pre``: an approval not run yet, or a grant."""
        how = "a grant of" if pre.granted else "approved"
        return replace(
            pre, decision=self._final(decision, Action.ALLOW, f"{how} approval request {pre.request_id}")
        )

    async def review(
        self, request: Request, decision: Decision, *, notice: Callable[[str], Any] | None = None
    ) -> Review:
        """The final decision (allow or deny) for a statement ``decision`` holds for review."""
        binding = _binding_of(request)
        preapproved = functools.partial(
            find_preapproved,
            agent_id=self.agent_id,
            connection_id=self.connection_id,
            binding=binding,
            actor=request.agent,
            session_id=self.session_id,
        )
        opening = functools.partial(
            open_request,
            decision,
            request,
            agent_id=self.agent_id,
            connection_id=self.connection_id,
            session_id=self.session_id,
            mask_text=self.mask_text,
            estimate=self.estimate,
        )
        if self.waits_for(decision):
            # What already lets it run, else a new request: one call on a database thread
            # (a thread hop less before the reviewers' card is published).
            creating = asyncio.ensure_future(_db(_preapproved_or_open)(preapproved, opening))
        else:
            pre = await _db(preapproved)()
            if pre is not None:
                return self._allowed(pre, decision)
            existing = await _db(find_pending)(
                agent_id=self.agent_id, connection_id=self.connection_id, binding=binding
            )
            if existing is not None:
                return Review(self._final(decision, Action.DENY, _deferred_message(existing)), existing.id)
            creating = asyncio.ensure_future(_db(opening)(agent_waits=False))
        try:
            found = await asyncio.shield(creating)
        except actions.NoEligibleReviewers as exc:
            return Review(self._final(decision, Action.DENY, str(exc)))
        except asyncio.CancelledError:
            # The row is written in a thread that a cancellation cannot stop: once it is,
            # cancel it, so that a client gone during creation leaves no pending request.
            with contextlib.suppress(Exception):
                created = await creating
                if isinstance(created, Held):
                    await _db(cancel)(created.id, "the agent disconnected or cancelled the statement")
            raise
        if isinstance(found, Review):
            return self._allowed(found, decision)
        held = found
        if notice is not None:
            notice(f"waiting for approval {held.id}: {held.url}")
        if not held.agent_waits:
            return Review(self._final(decision, Action.DENY, _deferred_message(held)), held.id)
        try:
            outcome = await wait_for_decision(
                held.id, claim_for=(request.agent, self.session_id), created_here=True
            )
        except asyncio.CancelledError:
            # The client went away or cancelled: the request must not stay pending (WF-05).
            await asyncio.shield(_db(cancel)(held.id, "the agent disconnected or cancelled the statement"))
            raise
        if outcome.approved:
            claimed = outcome.claimed
            if claimed is None:
                claimed = await _db(actions.do_claim)(request.agent, held.id, session_id=self.session_id)
            if claimed:
                return Review(self._final(decision, Action.ALLOW, outcome.message()), held.id)
            outcome = replace(outcome, status="used")
        return Review(self._final(decision, Action.DENY, outcome.message()), held.id)

    async def finished(self, review: Review, *, ok: bool, detail: str = "") -> None:
        """Report how the approved statement's one run went (nothing to do for a grant)."""
        if review.request_id is None or review.granted or review.decision.action is not Action.ALLOW:
            return
        await _db(finish)(review.request_id, ok=ok, detail=detail)

    async def cancel(self, request_id: int, reason: str) -> bool:
        result: bool = await _db(cancel)(request_id, reason)
        return result


def _deferred_message(held: Held) -> str:
    return (
        f"waiting for approval {held.id}: {held.url} (send the same statement again once it is approved; "
        f"the request expires at {held.expires_at:%Y-%m-%d %H:%M:%S} UTC)"
    )
