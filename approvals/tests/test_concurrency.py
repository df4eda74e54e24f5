"""Two reviewers deciding at the same moment, on separate database connections (WF-04)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import pytest
from django.db import connection

from approvals import actions
from approvals.models import ApprovalRequest, Status
from approvals.tests.factories import make_request, review_decision
from audit.models import AuditRecord

ROUNDS = 8


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run ``calls`` at once, each in its own thread with its own database connection."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=60)
            results[index] = call()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a decision hung"
    return results


def _audits(req: ApprovalRequest, action: str) -> int:
    return AuditRecord.objects.filter(target_id=str(req.pk), action=action).count()


@pytest.mark.django_db(transaction=True)
def test_two_approvals_of_a_one_approval_request_approve_it_once(world, bob):
    for _ in range(ROUNDS):
        req = make_request(world)
        results = _race(
            partial(actions.do_approve, bob, req.pk), partial(actions.do_approve, world.erin, req.pk)
        )
        failures = [r for r in results if isinstance(r, Exception)]
        assert len(failures) == 1 and isinstance(failures[0], actions.IllegalTransition), results
        req.refresh_from_db()
        assert req.status == Status.APPROVED
        assert req.decisions.count() == 1
        assert req.decided_by_name == req.decisions.get().reviewer_name
        assert _audits(req, "approval.approved") == 1


@pytest.mark.django_db(transaction=True)
def test_an_approval_and_a_rejection_at_once_end_in_one_of_them(world, bob):
    outcomes = set()
    for _ in range(ROUNDS):
        req = make_request(world)
        results = _race(
            partial(actions.do_approve, bob, req.pk),
            partial(actions.do_reject, world.erin, req.pk, reason="no"),
        )
        assert sum(isinstance(r, Exception) for r in results) == 1, results
        req.refresh_from_db()
        assert req.status in (Status.APPROVED, Status.REJECTED)
        winner = req.decisions.get()
        assert winner.verdict == ("approve" if req.status == Status.APPROVED else "reject")
        assert _audits(req, "approval.approved") + _audits(req, "approval.rejected") == 1
        outcomes.add(req.status)
    assert outcomes  # either order is fine; what matters is one consistent end


@pytest.mark.django_db(transaction=True)
def test_two_approvals_that_complete_a_quorum_of_two_both_count(world, bob):
    for _ in range(ROUNDS):
        req = make_request(world, decision=review_decision(approvals=2))
        results = _race(
            partial(actions.do_approve, bob, req.pk), partial(actions.do_approve, world.erin, req.pk)
        )
        assert not any(isinstance(r, Exception) for r in results), results
        req.refresh_from_db()
        assert req.status == Status.APPROVED
        assert req.decisions.count() == 2
        assert _audits(req, "approval.approved") == 1 and _audits(req, "approval.approved_partly") == 1


@pytest.mark.django_db(transaction=True)
def test_one_reviewer_approving_twice_at_once_counts_once(world, bob):
    # The decisions are read under the request's lock: the second sees the first.
    for _ in range(ROUNDS):
        req = make_request(world, decision=review_decision(approvals=2))
        results = _race(partial(actions.do_approve, bob, req.pk), partial(actions.do_approve, bob, req.pk))
        failures = [r for r in results if isinstance(r, Exception)]
        assert len(failures) == 1 and isinstance(failures[0], actions.NotAllowed), results
        assert "already decided" in str(failures[0])
        req.refresh_from_db()
        assert req.status == Status.PENDING and req.decisions.count() == 1
        assert _audits(req, "approval.approved_partly") == 1


@pytest.mark.django_db(transaction=True)
def test_an_approval_racing_the_expiry_ends_in_one_state(world, bob):
    from datetime import timedelta

    from django.utils import timezone

    for _ in range(ROUNDS):
        req = make_request(world)
        soon = timezone.now() + timedelta(milliseconds=50)
        ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=soon)
        results = _race(
            partial(actions.do_approve, bob, req.pk), partial(actions.do_expire, req.pk, now=soon)
        )
        req.refresh_from_db()
        if req.status == Status.APPROVED:
            assert results[1] is False
        else:
            assert req.status == Status.EXPIRED and isinstance(results[0], actions.IllegalTransition)
            assert not req.decisions.exists()


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_one_approval_claim_it_once(world, bob):
    for _ in range(ROUNDS):
        req = make_request(world)
        actions.do_approve(bob, req.pk)
        results = _race(partial(actions.do_claim, "a", req.pk), partial(actions.do_claim, "b", req.pk))
        assert sorted(results) == [False, True]


def _beat_elsewhere(pk: int) -> None:
    """The waiting gateway's heartbeat, committed on a connection of its own: a new
    version of the request's row, as another process would write it."""
    from django.utils import timezone

    def beat() -> None:
        try:
            ApprovalRequest.objects.filter(pk=pk).update(waiter_seen_at=timezone.now())
        finally:
            connection.close()

    thread = threading.Thread(target=beat)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("beats", [1, 2])
def test_a_request_changed_between_the_read_and_the_write_is_decided_again(world, bob, monkeypatch, beats):
    # On PostgreSQL a decision is written in one statement only if the request's row is
    # still the version read; otherwise nothing is written and the decision is planned
    # again, from a fresh read, and after two misses under the request's lock.
    if connection.vendor != "postgresql":
        pytest.skip("the optimistic write is PostgreSQL's")
    plan, write = actions._plan_decision, actions._write_unless_changed
    planned: list[str] = []
    written: list[bool] = []

    def plan_then_beat(req, *args):  # type: ignore[no-untyped-def]
        planned.append(req.status)
        result = plan(req, *args)
        if len(planned) <= beats:
            _beat_elsewhere(req.pk)
        return result

    def counted_write(*args):  # type: ignore[no-untyped-def]
        written.append(write(*args))
        return written[-1]

    monkeypatch.setattr(actions, "_plan_decision", plan_then_beat)
    monkeypatch.setattr(actions, "_write_unless_changed", counted_write)
    req = make_request(world, decision=review_decision(approvals=2))
    decided = actions.do_approve(bob, req.pk, comment="first of two")
    assert decided.status == Status.PENDING
    if beats == 1:
        assert written == [False, True] and len(planned) == 2
    else:
        assert written == [False, False] and len(planned) == 3  # the third under the lock
    req.refresh_from_db()
    assert req.status == Status.PENDING and req.waiter_seen_at is not None
    assert list(req.decisions.values_list("reviewer_name", "comment")) == [("bob", "first of two")]
    assert _audits(req, "approval.approved_partly") == 1
    # The second approval completes the quorum as usual.
    monkeypatch.setattr(actions, "_plan_decision", plan)
    assert actions.do_approve(world.erin, req.pk).status == Status.APPROVED
    assert _audits(req, "approval.approved") == 1


@pytest.mark.django_db(transaction=True)
def test_an_optimistic_approval_racing_a_locked_one_still_counts_both(world, bob, monkeypatch):
    # A partial approval made under the lock (the fallback) writes a new row version too,
    # so an optimistic approval planned from the row before it writes nothing and counts
    # it when planned again: the quorum of two is reached, not missed.
    if connection.vendor != "postgresql":
        pytest.skip("the optimistic write is PostgreSQL's")
    for _ in range(ROUNDS):
        req = make_request(world, decision=review_decision(approvals=2))
        optimistic = partial(actions.do_approve, bob, req.pk)

        locked = partial(actions._decide_locked, world.erin, req.pk, "approve", "", None)
        results = _race(optimistic, locked)
        assert not any(isinstance(r, Exception) for r in results), results
        req.refresh_from_db()
        assert req.status == Status.APPROVED and req.decisions.count() == 2
        assert _audits(req, "approval.approved") == 1 and _audits(req, "approval.approved_partly") == 1
