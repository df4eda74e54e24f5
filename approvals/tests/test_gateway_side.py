"""The gateway's side: holding, waiting (channel layer and database poll), binding, grants,
agents that cannot wait, cancellation and the sweep."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import actions, events, gateway
from approvals.gateway import ReviewGate, wait_for_decision
from approvals.models import ApprovalRequest, Status
from approvals.tests.factories import DELETE, in_db, make_request, review_decision, statement_request
from audit.models import AuditRecord
from policies.types import Action

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 10  # seconds: any wait in these tests that could hang


@pytest.fixture(autouse=True)
async def _listener_closed():  # type: ignore[no-untyped-def]
    # The test's approvals listener is closed in its own loop (as the gateway's shutdown
    # does): the loop's closing cancels a leftover task only once, which a channel-layer
    # receive can swallow (test_channel_layer_cancel.py).
    yield
    await gateway.close_listener()


def _gate(world, **options) -> ReviewGate:
    options.setdefault("estimate", False)
    return ReviewGate(agent_id=world.agent.pk, connection_id=world.connection.pk, **options)


async def _approve_when_created(bob, count: int = 1, **kwargs) -> int:
    """Approve the newest pending request as soon as it exists (a reviewer in another process)."""

    def newest():
        return ApprovalRequest.objects.pending().order_by("-id").values_list("pk", flat=True).first()

    deadline = asyncio.get_running_loop().time() + LIMIT
    while (pk := await in_db(newest)) is None:
        assert asyncio.get_running_loop().time() < deadline, "no request was created"
        await asyncio.sleep(0.02)
    await in_db(actions.do_approve, bob, pk, **kwargs)
    return pk


# --- waiting -----------------------------------------------------------------------------------


async def test_the_waiting_gateway_is_woken_by_the_channel_layer(world, bob, settings):
    settings.APPROVALS_POLL_SECONDS = 30  # so only the channel message can wake it in time
    req = await in_db(make_request, world)
    waiter = asyncio.create_task(wait_for_decision(req.pk))
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await in_db(actions.do_approve, bob, req.pk)
    outcome = await asyncio.wait_for(waiter, LIMIT)
    assert outcome.status == Status.APPROVED and outcome.decided_by == "bob"
    assert asyncio.get_running_loop().time() - started < 5


async def test_the_waiting_gateway_is_woken_while_the_session_watches_for_termination(world, bob, settings):
    # A recorded gateway session also listens on the channel layer (for a terminate from
    # the console), on the same event loop and the same layer: both listeners must get
    # their messages. With Redis, a process's channels share one list that whichever
    # listener holds the receive lock reads for all of them.
    from recordings.live import close_termination_listener, stop_watching, watch_for_termination

    settings.APPROVALS_POLL_SECONDS = 30  # so only the channel message can wake it in time
    session = uuid.uuid4()
    assert await watch_for_termination(session, lambda by, reason: None)
    try:
        for _ in range(3):
            req = await in_db(make_request, world)
            waiter = asyncio.create_task(wait_for_decision(req.pk))
            await asyncio.sleep(0.2)
            started = asyncio.get_running_loop().time()
            await in_db(actions.do_approve, bob, req.pk)
            outcome = await asyncio.wait_for(waiter, LIMIT)
            assert outcome.status == Status.APPROVED
            assert asyncio.get_running_loop().time() - started < 4
    finally:
        await stop_watching(session)
        await close_termination_listener()


async def test_only_an_outcome_wakes_the_waiting_gateway(world, bob, settings, monkeypatch):
    # A vote short of the quorum and the rows estimate change the request but leave it
    # pending: they reach the inboxes, and the waiter is not made to read the database.
    settings.APPROVALS_POLL_SECONDS = 30  # so no poll happens during the test
    reads: list[int] = []
    poll = gateway._poll

    def counted(request_id, **kwargs):
        reads.append(request_id)
        return poll(request_id, **kwargs)

    monkeypatch.setattr(gateway, "_poll", counted)
    sent: list[tuple[str, str]] = []
    group_send = events._group_send

    def recorded(group, message, after=None):
        sent.append((group, message["status"]))
        return group_send(group, message, after=after)

    monkeypatch.setattr(events, "_group_send", recorded)
    req = await in_db(make_request, world, decision=review_decision(approvals=2))
    waiter = asyncio.create_task(wait_for_decision(req.pk))
    while not reads:
        await asyncio.sleep(0.01)
    await in_db(actions.do_approve, bob, req.pk)
    await in_db(actions.do_record_estimate, req.pk, rows=1)
    await asyncio.sleep(0.5)
    assert reads == [req.pk] and not waiter.done()
    await in_db(actions.do_approve, world.erin, req.pk)
    outcome = await asyncio.wait_for(waiter, LIMIT)
    assert outcome.status == Status.APPROVED and reads == [req.pk, req.pk]
    mine = events.request_group(req.pk)
    assert [status for group, status in sent if group == mine] == [Status.APPROVED]
    assert [status for group, status in sent if group == events.INBOX_GROUP] == ["pending"] * 3 + ["approved"]


@pytest.mark.parametrize("woken", [True, False])
def test_a_woken_waiter_takes_the_approved_run_without_reading_the_request_first(
    world, bob, woken, django_assert_num_queries
):
    # Woken (by an outcome), the claim comes first: one statement, its update answering
    # with the row it changed and writing the audit record (PostgreSQL). A poll that was
    # not woken reads the request first, then claims.
    from django.db import connection

    req = make_request(world)
    actions.do_approve(bob, req)
    # Elsewhere (SQLite) the claim is a transaction: savepoint, update, record, release.
    claim = 1 if connection.vendor == "postgresql" else 4
    with django_assert_num_queries(claim if woken else claim + 1):
        outcome, _ = gateway._poll(req.pk, heartbeat=False, claim_for=("billing-bot", None), woken=woken)
    assert outcome.approved and outcome.claimed is True and outcome.decided_by == "bob"
    assert AuditRecord.objects.filter(action="approval.claimed", target_id=str(req.pk)).count() == 1
    # Claimed already (another run took it): the woken waiter reads it and is told so.
    outcome, _ = gateway._poll(req.pk, heartbeat=False, claim_for=("billing-bot", None), woken=True)
    assert outcome.approved and outcome.claimed is False


def test_a_woken_waiter_reads_a_rejection_as_it_is(world, bob):
    req = make_request(world)
    actions.do_reject(bob, req, reason="no")
    outcome, _ = gateway._poll(req.pk, heartbeat=False, claim_for=("billing-bot", None), woken=True)
    assert outcome.status == Status.REJECTED and outcome.claimed is None


async def test_the_listener_closes_cleanly_and_a_later_wait_starts_another(world, bob, settings):
    # Gateway shutdown: its receive ends and its connections close while the loop runs.
    settings.APPROVALS_POLL_SECONDS = 30  # so only the channel message can wake it in time
    req = await in_db(make_request, world)
    assert (await wait_for_decision(req.pk, max_wait=0.1)).status == Status.PENDING
    listener = gateway._listener()
    assert listener is not None and listener.task is not None
    receiving = listener.task
    await asyncio.wait_for(gateway.close_listener(), LIMIT)
    assert receiving.done() and listener.task is None
    waiter = asyncio.create_task(wait_for_decision(req.pk))
    await asyncio.sleep(0.2)
    await in_db(actions.do_approve, bob, req.pk)
    assert (await asyncio.wait_for(waiter, LIMIT)).status == Status.APPROVED
    assert gateway._listener() is not listener
    await asyncio.wait_for(gateway.close_listener(), LIMIT)


async def test_a_lost_channel_message_does_not_strand_the_session(world, bob, settings, monkeypatch):
    settings.APPROVALS_POLL_SECONDS = 0.2
    monkeypatch.setattr("approvals.events._group_send", lambda group, message, after=None: None)
    req = await in_db(make_request, world)
    waiter = asyncio.create_task(wait_for_decision(req.pk))
    await in_db(actions.do_reject, bob, req.pk, reason="not in business hours")
    outcome = await asyncio.wait_for(waiter, LIMIT)
    assert outcome.status == Status.REJECTED
    assert outcome.message() == f"approval request {req.pk} was rejected by bob: not in business hours"


async def test_the_waiting_gateway_expires_the_request_at_its_deadline(world, settings):
    settings.APPROVALS_POLL_SECONDS = 30
    req = await in_db(make_request, world, decision=review_decision(timeout=1))
    outcome = await asyncio.wait_for(wait_for_decision(req.pk), LIMIT)
    assert outcome.status == Status.EXPIRED
    assert "no reviewer decided" in outcome.message()
    assert await in_db(AuditRecord.objects.filter(action="approval.expired").count) == 1


async def test_a_bounded_wait_returns_the_request_still_pending(world):
    req = await in_db(make_request, world)
    outcome = await asyncio.wait_for(wait_for_decision(req.pk, max_wait=0.3), LIMIT)
    assert outcome.status == Status.PENDING
    assert (await in_db(ApprovalRequest.objects.get, pk=req.pk)).status == Status.PENDING


async def test_waiting_refreshes_the_holds_heartbeat(world, settings):
    settings.APPROVALS_POLL_SECONDS = 0.1
    req = await in_db(make_request, world)
    await in_db(
        ApprovalRequest.objects.filter(pk=req.pk).update, waiter_seen_at=timezone.now() - timedelta(minutes=5)
    )
    await wait_for_decision(req.pk, max_wait=0.35)
    seen = (await in_db(ApprovalRequest.objects.get, pk=req.pk)).waiter_seen_at
    assert timezone.now() - seen < timedelta(seconds=5)


async def test_a_waiter_that_just_created_its_request_does_not_refresh_its_heartbeat_at_once(
    world, settings, monkeypatch
):
    # The request was written with its heartbeat a moment ago: the first read alone, then
    # one refresh per poll interval as usual.
    settings.APPROVALS_POLL_SECONDS = 0.2
    beats: list[int] = []
    heartbeat = actions.heartbeat
    monkeypatch.setattr(actions, "heartbeat", lambda pk, **kw: beats.append(pk) or heartbeat(pk, **kw))
    req = await in_db(make_request, world)
    await wait_for_decision(req.pk, max_wait=0.05, created_here=True)
    assert beats == []
    await wait_for_decision(req.pk, max_wait=0.05)
    assert beats == [req.pk]
    beats.clear()
    await wait_for_decision(req.pk, max_wait=0.5, created_here=True)
    assert beats == [req.pk, req.pk]  # after 0.2 s and 0.4 s


# --- the gate ----------------------------------------------------------------------------------


async def test_an_approved_statement_runs_once_and_its_run_is_recorded(world, bob):
    notices: list[str] = []
    gate = _gate(world, session_id=uuid.uuid4())
    approver = asyncio.create_task(_approve_when_created(bob))
    review = await asyncio.wait_for(
        gate.review(statement_request(), review_decision(), notice=notices.append), LIMIT
    )
    pk = await approver
    assert review.decision.action is Action.ALLOW and review.request_id == pk
    assert review.decision.rule == "writes"
    assert notices == [f"waiting for approval {pk}: http://127.0.0.1:8000/approvals/{pk}/"]
    req = await in_db(ApprovalRequest.objects.get, pk=pk)
    assert req.claimed_at is not None
    await gate.finished(review, ok=True, detail="DELETE 1")
    req = await in_db(ApprovalRequest.objects.get, pk=pk)
    assert (req.status, req.result) == (Status.EXECUTED, "DELETE 1")


async def test_a_failed_run_is_recorded_as_failed(world, bob):
    gate = _gate(world)
    approver = asyncio.create_task(_approve_when_created(bob))
    review = await asyncio.wait_for(gate.review(statement_request(), review_decision()), LIMIT)
    await approver
    await gate.finished(review, ok=False, detail="ERROR 23503 foreign key violation")
    req = await in_db(ApprovalRequest.objects.get, pk=review.request_id)
    assert req.status == Status.FAILED and "23503" in req.reason


async def test_a_rejection_is_refused_with_the_request_the_reviewer_and_the_reason(world, bob):
    gate = _gate(world)

    async def reject():
        pk = None
        while pk is None:
            pk = await in_db(lambda: ApprovalRequest.objects.pending().values_list("pk", flat=True).first())
            await asyncio.sleep(0.02)
        await in_db(actions.do_reject, bob, pk, reason="use the archive job")
        return pk

    rejecter = asyncio.create_task(reject())
    review = await asyncio.wait_for(gate.review(statement_request(), review_decision()), LIMIT)
    pk = await asyncio.wait_for(rejecter, LIMIT)
    assert review.decision.action is Action.DENY
    assert review.decision.message == f"approval request {pk} was rejected by bob: use the archive job"


async def test_an_expired_hold_is_refused_naming_the_request(world):
    review = await asyncio.wait_for(
        _gate(world).review(statement_request(), review_decision(timeout=1)), LIMIT
    )
    assert review.decision.action is Action.DENY
    assert review.decision.message.startswith(f"approval request {review.request_id} expired")


async def test_a_client_that_goes_away_cancels_its_request(world):
    gate = _gate(world)
    task = asyncio.create_task(gate.review(statement_request(), review_decision()))
    deadline = asyncio.get_running_loop().time() + LIMIT
    while not await in_db(ApprovalRequest.objects.exists):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, LIMIT)
    req = await in_db(ApprovalRequest.objects.get)
    assert req.status == Status.CANCELLED and "disconnected" in req.reason


async def test_a_review_nobody_can_approve_is_refused_at_once(world):
    review = await asyncio.wait_for(
        _gate(world).review(statement_request(), review_decision(reviewers=("nobody",))), LIMIT
    )
    assert review.decision.action is Action.DENY and "nobody can approve" in review.decision.message
    assert review.request_id is None


# --- binding (WF-03), agents that cannot wait, grants ---------------------------------------------


async def _approved_deferred(world, bob, gate: ReviewGate, params=("42",), **approve):
    first = await gate.review(statement_request(params=params), review_decision())
    assert first.decision.action is Action.DENY
    await in_db(actions.do_approve, bob, first.request_id, **approve)
    return first.request_id


async def test_an_agent_that_cannot_wait_is_told_the_request_at_once(world):
    gate = _gate(world, agent_waits=False)
    notices: list[str] = []
    review = await asyncio.wait_for(
        gate.review(statement_request(), review_decision(), notice=notices.append), 2
    )
    assert review.decision.action is Action.DENY
    assert review.decision.message.startswith(f"waiting for approval {review.request_id}: http")
    assert "send the same statement again once it is approved" in review.decision.message
    assert notices and notices[0].startswith(f"waiting for approval {review.request_id}")
    again = await gate.review(statement_request(), review_decision())
    assert again.request_id == review.request_id  # asking again does not make a second request
    assert await in_db(ApprovalRequest.objects.count) == 1


async def test_after_approval_the_identical_statement_runs_once(world, bob):
    gate = _gate(world, agent_waits=False)
    pk = await _approved_deferred(world, bob, gate)
    resent = await gate.review(statement_request(), review_decision())
    assert resent.decision.action is Action.ALLOW and resent.request_id == pk
    await gate.finished(resent, ok=True, detail="DELETE 1")
    replayed = await gate.review(statement_request(), review_decision())
    assert replayed.decision.action is Action.DENY and replayed.request_id != pk


@pytest.mark.parametrize(
    "other",
    [
        statement_request(params=("43",)),
        statement_request(statement="DELETE FROM orders WHERE id = $1 OR true"),
        statement_request(statement=DELETE.lower()),
        statement_request(params=("42", "1")),
        statement_request(params=(None,)),
    ],
    ids=["other-params", "other-statement", "other-spelling", "extra-param", "null-param"],
)
async def test_an_approval_does_not_let_another_statement_run(world, bob, other):
    gate = _gate(world, agent_waits=False)
    pk = await _approved_deferred(world, bob, gate)
    review = await gate.review(other, review_decision())
    assert review.decision.action is Action.DENY and review.request_id != pk
    assert (await in_db(ApprovalRequest.objects.get, pk=pk)).claimed_at is None


async def test_an_approval_is_bound_to_the_agent_and_the_connection(world, bob):
    from console.tests.factories import make_agent, make_connection

    pk = await _approved_deferred(world, bob, _gate(world, agent_waits=False))
    other_agent = await in_db(make_agent, "report-bot")
    other_conn = await in_db(make_connection, "shop-replica")
    for agent_id, conn_id, conn_name, agent_name in (
        (other_agent.pk, world.connection.pk, "shop", "report-bot"),
        (world.agent.pk, other_conn.pk, "shop-replica", "billing-bot"),
    ):
        gate = ReviewGate(agent_id=agent_id, connection_id=conn_id, agent_waits=False, estimate=False)
        review = await gate.review(
            statement_request(agent=agent_name, connection=conn_name), review_decision()
        )
        assert review.decision.action is Action.DENY and review.request_id != pk


async def test_a_held_prepared_statement_approved_once_does_not_run_again(world, bob):
    # The gateway asks again for every execution of a prepared statement: the second
    # execution needs its own approval.
    gate = _gate(world)
    approver = asyncio.create_task(_approve_when_created(bob))
    first = await asyncio.wait_for(gate.review(statement_request(), review_decision()), LIMIT)
    await approver
    await gate.finished(first, ok=True, detail="DELETE 1")
    second = await asyncio.wait_for(
        _gate(world, agent_waits=False).review(statement_request(), review_decision()), LIMIT
    )
    assert second.decision.action is Action.DENY and second.request_id != first.request_id


async def test_a_grant_allows_identical_statements_from_this_agent_until_it_ends(world, bob):
    gate = _gate(world, agent_waits=False)
    pk = await _approved_deferred(world, bob, gate, grant_minutes=5)
    runs = [await gate.review(statement_request(), review_decision()) for _ in range(3)]
    assert [r.decision.action for r in runs] == [Action.ALLOW] * 3
    assert {r.request_id for r in runs} == {pk}
    # The first run is the approved one; the grant covers the ones after it.
    assert [r.granted for r in runs] == [False, True, True]
    await gate.finished(runs[0], ok=True, detail="DELETE 1")
    req = await in_db(ApprovalRequest.objects.get, pk=pk)
    assert (req.status, req.grant_uses) == (Status.EXECUTED, 2)
    assert (await gate.review(statement_request(), review_decision())).granted
    other = await gate.review(statement_request(params=("7",)), review_decision())
    assert other.decision.action is Action.DENY
    await in_db(ApprovalRequest.objects.filter(pk=pk).update, grant_until=timezone.now())
    after = await gate.review(statement_request(), review_decision())
    assert after.decision.action is Action.DENY


# --- masking seam --------------------------------------------------------------------------------


async def test_a_parameter_shown_in_hex_is_stored_masked_in_its_bytes(world):
    def mask(text: str) -> str:
        return text.replace("alice@example.com", "<EMAIL>")

    gate = _gate(world, agent_waits=False, mask_text=mask)
    statement = "UPDATE users SET tags = $1"
    review = await gate.review(
        statement_request(statement=statement, params=("\\x" + b"\x01alice@example.com".hex(),)),
        review_decision(statement=statement),
    )
    req = await in_db(ApprovalRequest.objects.get, pk=review.request_id)
    # Masked, and shown as it was read: the control byte as a space.
    assert req.params == ["\\x" + b" <EMAIL>".hex()]


async def test_the_statement_and_parameters_are_stored_masked_and_bound_unmasked(world, bob):
    def mask(text: str) -> str:
        return text.replace("alice@example.com", "<EMAIL>")

    gate = _gate(world, agent_waits=False, mask_text=mask)
    statement = "DELETE FROM users WHERE email = 'alice@example.com' OR email = $1"
    review = await gate.review(
        statement_request(statement=statement, params=("alice@example.com",)),
        review_decision(statement=statement),
    )
    req = await in_db(ApprovalRequest.objects.get, pk=review.request_id)
    assert "alice@example.com" not in req.statement + req.statement_pretty + str(req.params) + str(
        req.classification
    )
    assert req.params == ["<EMAIL>"] and "<EMAIL>" in req.statement
    assert "alice@example.com" not in str(
        await in_db(list, AuditRecord.objects.values_list("detail", "after"))
    )
    # The binding is of what the agent sent: a statement that differs only in the masked
    # value does not match it.
    await in_db(actions.do_approve, bob, req.pk)
    other = await gate.review(
        statement_request(statement=statement, params=("bob@example.com",)),
        review_decision(statement=statement),
    )
    assert other.decision.action is Action.DENY
    same = await gate.review(
        statement_request(statement=statement, params=("alice@example.com",)),
        review_decision(statement=statement),
    )
    assert same.decision.action is Action.ALLOW


async def test_a_masking_failure_stores_nothing(world):
    def broken(text: str) -> str:
        raise RuntimeError("masking failed")

    with pytest.raises(RuntimeError):
        await _gate(world, mask_text=broken).review(statement_request(), review_decision())
    assert not await in_db(ApprovalRequest.objects.exists)


# --- the sweep -----------------------------------------------------------------------------------


def test_the_sweep_settles_what_nobody_else_will(world, bob, settings):
    from recordings.models import Session

    now = timezone.now()
    overdue = make_request(world)
    ApprovalRequest.objects.filter(pk=overdue.pk).update(expires_at=now - timedelta(seconds=1))
    abandoned = make_request(world, params=("1",))
    ApprovalRequest.objects.filter(pk=abandoned.pk).update(
        waiter_seen_at=now - timedelta(seconds=settings.APPROVALS_WAITER_STALE + 1)
    )
    session = Session.objects.create(
        protocol="postgres", agent_name="billing-bot", connection_name="shop", status=Session.Status.ENDED
    )
    ended = make_request(world, params=("2",), session_id=session.pk)
    live = Session.objects.create(protocol="postgres", agent_name="billing-bot", connection_name="shop")
    waiting = make_request(world, params=("3",), session_id=live.pk)
    deferred = make_request(world, params=("4",), agent_waits=False)
    unclaimed = make_request(world, params=("5",))
    actions.do_approve(bob, unclaimed)
    ApprovalRequest.objects.filter(pk=unclaimed.pk).update(claim_by=now - timedelta(seconds=1))

    assert gateway.sweep() == {"expired": 1, "cancelled": 2, "failed": 1}
    status = dict(ApprovalRequest.objects.values_list("pk", "status"))
    assert status[overdue.pk] == Status.EXPIRED
    assert status[abandoned.pk] == Status.CANCELLED and status[ended.pk] == Status.CANCELLED
    assert status[waiting.pk] == Status.PENDING and status[deferred.pk] == Status.PENDING
    assert status[unclaimed.pk] == Status.FAILED
    # Idempotent: a second sweep (or the expiry task) finds nothing left to do.
    assert gateway.sweep() == {"expired": 0, "cancelled": 0, "failed": 0}
    assert AuditRecord.objects.filter(action="approval.expired").count() == 1


class _ConvertingLayer:
    """Stands in for channels_redis over redis-py (socket_timeout set), which turns a
    cancellation arriving during a read into ``redis.exceptions.TimeoutError`` (seen with
    the real library in about a quarter of cancelled receives); here it happens every time,
    on every call, so the test is deterministic."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def _hang(self) -> None:
        import redis.exceptions

        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379") from None

    async def new_channel(self, prefix: str) -> str:
        return prefix + "x"

    async def receive(self, channel: str) -> dict:
        await self._hang()
        return {}

    async def group_add(self, group: str, channel: str) -> None:
        await self._hang()

    async def group_discard(self, group: str, channel: str) -> None:
        return None


async def test_a_cancelled_waiter_stops_even_when_the_channel_layer_turns_the_cancel_into_an_error(world):
    layer = _ConvertingLayer()
    # Not through __init__: with a Redis channel layer it would make a real one of its own.
    listener = gateway._Listener.__new__(gateway._Listener)
    listener.shared, listener.layer, listener.channel = layer, layer, ""
    listener.waiters, listener.task, listener.ready = {}, None, asyncio.Lock()
    watching = asyncio.create_task(listener.watch(12345))
    await asyncio.wait_for(layer.entered.wait(), LIMIT)
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(watching, LIMIT)
    assert listener.waiters == {}
    # The receive loop (started by watch) ends when cancelled, too: an event loop that
    # closes cancels it and waits for it.
    assert listener.task is not None
    listener.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(listener.task, LIMIT)


def test_a_request_is_opened_in_seven_statements(world, monkeypatch, django_assert_num_queries):
    # The agent with the people on its side and whether the connection exists; the
    # reviewer groups with how many may approve; the request, its groups, its audit record;
    # the savepoint around them and its release. One more is a regression to explain.
    from approvals import tasks

    # The notifications' own work (run at once in tests) is not counted here.
    monkeypatch.setattr(tasks.notify_reviewers, "delay", lambda *args: None)
    monkeypatch.setattr(tasks.expire_request, "apply_async", lambda *args, **kwargs: None)
    with django_assert_num_queries(7):
        held = gateway.open_request(
            review_decision(),
            statement_request(DELETE, ("42",)),
            agent_id=world.agent.pk,
            connection_id=world.connection.pk,
            estimate=False,
        )
    req = ApprovalRequest.objects.get(pk=held.id)
    assert req.connection_id == world.connection.pk and req.agent_id == world.agent.pk
    assert list(req.reviewer_groups.values_list("name", flat=True)) == ["dba"]


def test_a_request_on_a_connection_deleted_meanwhile_is_opened_without_it(world):
    connection_id = world.connection.pk
    world.connection.delete()
    held = gateway.open_request(
        review_decision(),
        statement_request(DELETE, ("42",)),
        agent_id=world.agent.pk,
        connection_id=connection_id,
        estimate=False,
    )
    req = ApprovalRequest.objects.get(pk=held.id)
    assert req.connection_id is None and req.connection_name == "shop"
