"""The request's states and every transition: legal ones happen, illegal ones change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import actions
from approvals.models import TRANSITIONS, ApprovalRequest, Status
from approvals.tests.factories import DELETE, make_request, review_decision, reviewer
from audit.models import AuditRecord


def _audit_actions(req: ApprovalRequest) -> list[str]:
    return list(
        AuditRecord.objects.filter(target_type="approvals.approvalrequest", target_id=str(req.pk))
        .order_by("at", "id")
        .values_list("action", flat=True)
    )


def test_a_new_request_holds_everything_a_reviewer_needs(world, bob):
    req = make_request(world, session_id="8a0b5d8c-0f43-4c7f-9a8e-0d7c7b3f9c11")
    assert req.status == Status.PENDING
    assert (req.agent, req.agent_name) == (world.agent, "billing-bot")
    assert (req.on_behalf_of, req.on_behalf_of_name) == (world.dave, "dave")
    assert (req.agent_owner, req.connection) == (world.olivia, world.connection)
    assert req.statement == DELETE and req.params == ["42"]
    assert req.statement_pretty == "DELETE FROM orders\nWHERE id = $1"
    assert (req.rule, req.policy_name, req.policy_version) == ("writes", "agents", 3)
    assert req.reviewer_group_names == ["dba"] and list(
        req.reviewer_groups.values_list("name", flat=True)
    ) == ["dba"]
    assert req.approvals_needed == 1
    assert req.expires_at - req.created_at == timedelta(seconds=600)
    assert len(req.binding_hash) == 64
    assert str(req.session_id) == "8a0b5d8c-0f43-4c7f-9a8e-0d7c7b3f9c11"
    # The engine's classification repeats the statement's text: it is not kept.
    assert "text" not in req.classification["statements"][0]
    assert req.classification["tables_written"] == ["public.orders"]
    assert _audit_actions(req) == ["approval.requested"]


def test_the_hold_is_the_rules_timeout_capped_by_the_setting(world, settings):
    settings.APPROVALS_MAX_TIMEOUT = 120
    req = make_request(world, decision=review_decision(timeout=3600))
    assert req.expires_at - req.created_at == timedelta(seconds=120)
    settings.APPROVALS_DEFAULT_TIMEOUT = 90
    req = make_request(world, decision=review_decision(timeout=None))
    assert req.expires_at - req.created_at == timedelta(seconds=90)


def _overdue(req: ApprovalRequest) -> None:
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def _in_state(world, bob, state: str) -> ApprovalRequest:
    """A request driven to ``state`` through the action functions."""
    req = make_request(world)
    if state == Status.PENDING:
        return req
    if state == Status.REJECTED:
        actions.do_reject(bob, req, reason="not today")
    elif state == Status.EXPIRED:
        _overdue(req)
        assert actions.do_expire(req)
    elif state == Status.CANCELLED:
        assert actions.do_cancel("billing-bot", req, reason="client disconnected")
    else:
        actions.do_approve(bob, req)
        if state in (Status.EXECUTED, Status.FAILED):
            assert actions.do_claim("billing-bot", req)
            if state == Status.EXECUTED:
                actions.do_mark_executed("gateway", req, result="DELETE 1")
            else:
                actions.do_mark_failed("gateway", req, error="ERROR 23503")
    req.refresh_from_db()
    assert req.status == state
    return req


LEGAL = [
    (Status.PENDING, "approve", Status.APPROVED),
    (Status.PENDING, "reject", Status.REJECTED),
    (Status.PENDING, "expire", Status.EXPIRED),
    (Status.PENDING, "cancel", Status.CANCELLED),
    (Status.APPROVED, "execute", Status.EXECUTED),
    (Status.APPROVED, "fail", Status.FAILED),
]
VERBS = ("approve", "reject", "expire", "cancel", "execute", "fail")


def _apply(verb: str, req: ApprovalRequest, who) -> object:
    if verb == "approve":
        return actions.do_approve(who, req)
    if verb == "reject":
        return actions.do_reject(who, req, reason="no")
    if verb == "expire":
        _overdue(req)
        return actions.do_expire(req)
    if verb == "cancel":
        return actions.do_cancel("billing-bot", req, reason="gone")
    if verb == "execute":
        actions.do_claim("billing-bot", req)
        return actions.do_mark_executed("gateway", req, result="DELETE 1")
    return actions.do_mark_failed("gateway", req, error="failed")


@pytest.mark.parametrize(("start", "verb", "end"), LEGAL)
def test_every_legal_transition_happens_and_is_audited(world, bob, start, verb, end):
    req = _in_state(world, bob, start)
    _apply(verb, req, world.erin)
    req.refresh_from_db()
    assert req.status == end
    assert (
        _audit_actions(req)[-1]
        == {
            "approve": "approval.approved",
            "reject": "approval.rejected",
            "expire": "approval.expired",
            "cancel": "approval.cancelled",
            "execute": "approval.executed",
            "fail": "approval.failed",
        }[verb]
    )


def test_the_legal_transitions_are_exactly_the_documented_ones():
    table = {(start, end) for start, ends in TRANSITIONS.items() for end in ends}
    assert table == {(start, end) for start, _, end in LEGAL}


ILLEGAL = [
    (state, verb)
    for state in Status.values
    for verb in VERBS
    if (state, verb) not in {(start, v) for start, v, _ in LEGAL}
]


@pytest.mark.parametrize(("start", "verb"), ILLEGAL)
def test_every_illegal_transition_is_refused_and_changes_nothing(world, bob, start, verb):
    req = _in_state(world, bob, start)
    before = ApprovalRequest.objects.filter(pk=req.pk).values().get()
    audits = _audit_actions(req)
    if verb in ("expire", "cancel"):
        # Idempotent by design (the task, the sweep and the gateway may all try): a no-op.
        assert _apply(verb, req, world.erin) is False
    else:
        with pytest.raises(actions.ApprovalError):
            _apply(verb, req, world.erin)
    after = ApprovalRequest.objects.filter(pk=req.pk).values().get()
    if verb == "expire":
        before.pop("expires_at"), after.pop("expires_at")
    assert after == before
    assert _audit_actions(req) == audits


def test_an_approved_request_is_not_executed_without_being_claimed(world, bob):
    req = _in_state(world, bob, Status.APPROVED)
    with pytest.raises(actions.IllegalTransition, match="not claimed"):
        actions.do_mark_executed("gateway", req, result="DELETE 1")


def test_a_run_is_claimed_exactly_once(world, bob):
    req = _in_state(world, bob, Status.APPROVED)
    assert actions.do_claim("billing-bot", req) is True
    assert actions.do_claim("billing-bot", req) is False


@pytest.mark.parametrize("one_statement", [True, False], ids=["one-statement", "transaction"])
def test_the_claim_writes_the_audit_record_that_record_would(world, bob, monkeypatch, one_statement):
    # On PostgreSQL the claim and its record are one statement; the record must be what
    # audit.actions.record writes for the claimed row (the transaction is what SQLite does).
    from django.db import connection

    if one_statement and connection.vendor != "postgresql":
        pytest.skip("the one-statement claim is PostgreSQL's (a data-modifying WITH)")
    monkeypatch.setattr(actions, "_writes_in_one_statement", lambda: one_statement)
    req = _in_state(world, bob, Status.APPROVED)
    before = AuditRecord.objects.count()
    claimed = actions.do_claim_and_read(world.agent, req.pk, session_id="5e2c")
    assert claimed is not None and claimed.pk == req.pk and claimed.claimed_at is not None
    assert claimed.status == Status.APPROVED and claimed.statement == req.statement
    row = AuditRecord.objects.get(action="approval.claimed", target_id=str(req.pk))
    assert (row.actor_kind, row.actor, row.actor_user) == ("agent", "billing-bot", None)
    assert (row.target_type, row.target_repr) == ("approvals.approvalrequest", str(claimed))
    assert (row.before, row.after, row.detail, row.source_address) == (None, None, {"session": "5e2c"}, "")
    assert timedelta(0) <= row.at - claimed.claimed_at < timedelta(seconds=5)
    # A second claim changes nothing and records nothing.
    assert actions.do_claim_and_read(bob, req.pk) is None
    assert AuditRecord.objects.count() == before + 1
    assert _audit_actions(req)[-2:] == ["approval.approved", "approval.claimed"]


def test_a_claim_by_a_person_names_them_in_its_record(world, bob):
    req = _in_state(world, bob, Status.APPROVED)
    assert actions.do_claim(bob, req)
    row = AuditRecord.objects.get(action="approval.claimed", target_id=str(req.pk))
    assert (row.actor_kind, row.actor, row.actor_user) == ("person", bob.username, bob)
    assert row.detail == {"session": ""}


def test_an_approval_not_run_in_time_can_no_longer_be_claimed(world, bob):
    req = _in_state(world, bob, Status.APPROVED)
    ApprovalRequest.objects.filter(pk=req.pk).update(claim_by=timezone.now() - timedelta(seconds=1))
    assert actions.do_claim("billing-bot", req) is False


# --- deciding ---------------------------------------------------------------------------------


def test_a_rejection_needs_a_reason(world, bob):
    req = make_request(world)
    for reason in ("", "   "):
        with pytest.raises(actions.InvalidInput, match="reason"):
            actions.do_reject(bob, req, reason=reason)
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


def test_the_decision_records_who_when_and_why(world, bob):
    req = make_request(world)
    actions.do_reject(bob, req, reason="this deletes live orders")
    req.refresh_from_db()
    assert (req.decided_by, req.decided_by_name, req.reason) == (bob, "bob", "this deletes live orders")
    decision = req.decisions.get()
    assert (decision.reviewer, decision.verdict, decision.comment) == (
        bob,
        "reject",
        "this deletes live orders",
    )
    assert req.decided_at == decision.at


def test_a_request_past_its_deadline_cannot_be_approved(world, bob):
    req = make_request(world)
    _overdue(req)
    with pytest.raises(actions.IllegalTransition, match="expired"):
        actions.do_approve(bob, req)
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


def test_quorum_needs_n_approvals_from_the_reviewer_groups(world, bob):
    req = make_request(world, decision=review_decision(approvals=2))
    actions.do_approve(bob, req, comment="looks right")
    req.refresh_from_db()
    assert req.status == Status.PENDING and req.approvals_count() == 1
    assert _audit_actions(req)[-1] == "approval.approved_partly"
    with pytest.raises(actions.NotAllowed, match="already decided"):
        actions.do_approve(bob, req)
    actions.do_approve(world.erin, req)
    req.refresh_from_db()
    assert req.status == Status.APPROVED and req.decided_by_name == "erin"
    assert [d.reviewer_name for d in req.decisions.all()] == ["bob", "erin"]


def test_any_rejection_rejects_even_after_approvals(world, bob):
    req = make_request(world, decision=review_decision(approvals=2))
    actions.do_approve(bob, req)
    actions.do_reject(world.erin, req, reason="wrong table")
    req.refresh_from_db()
    assert req.status == Status.REJECTED and req.decided_by_name == "erin"


def test_nobody_approves_a_request_made_by_an_agent_acting_for_them(world, bob):
    # WF-02: dave is a reviewer in dba, and billing-bot acts for him.
    req = make_request(world)
    with pytest.raises(actions.NotAllowed, match="acting for you"):
        actions.do_approve(world.dave, req)
    with pytest.raises(actions.NotAllowed, match="acting for you"):
        actions.do_reject(world.dave, req, reason="fine, I'll stop it")
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


def test_nobody_approves_a_request_of_an_agent_they_own(world, bob):
    reviewer("olivia")
    req = make_request(world)
    with pytest.raises(actions.NotAllowed, match="owned by you"):
        actions.do_approve(world.olivia, req)


def test_only_reviewers_of_the_named_groups_may_decide(world, bob, alice, carol, mallory):
    finance_reviewer = reviewer("frank", "finance")
    req = make_request(world)
    for person in (finance_reviewer, alice, carol, mallory):
        with pytest.raises(actions.NotAllowed):
            actions.do_approve(person, req)
    # A member of dba without the reviewer role is not a reviewer either.
    from approvals.tests.factories import person as make_person

    with pytest.raises(actions.NotAllowed, match="not a reviewer"):
        actions.do_approve(make_person("gina", "dba"), req)
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_may_decide_says_the_same_of_a_request_read_for_the_reviewer(world, bob, alice, carol, mallory):
    # A request read through for_reviewer(person) skips the reviewer-group query: the
    # answer must be the one the query gives, for every person and state, and a row read
    # for one person must not answer for another.
    from approvals.tests.factories import person as make_person

    people = [bob, world.erin, world.dave, world.olivia, alice, carol, mallory]
    people += [reviewer("frank", "finance"), make_person("gina", "dba")]
    pending = make_request(world)
    voted = make_request(world, params=("2",), decision=review_decision(approvals=2))
    actions.do_approve(bob, voted)
    approved = make_request(world, params=("3",))
    actions.do_approve(world.erin, approved)
    rejected = make_request(world, params=("4",))
    actions.do_reject(bob, rejected, reason="no")
    chosen_somewhere = 0
    for req in (pending, voted, approved, rejected):
        for person in people:
            plain = ApprovalRequest.objects.get(pk=req.pk).may_decide(person)
            chosen = ApprovalRequest.objects.for_reviewer(person).filter(pk=req.pk).first()
            if chosen is not None:
                chosen_somewhere += 1
                assert chosen.may_decide(person) == plain, (req.pk, person.username)
            for_bob = ApprovalRequest.objects.for_reviewer(bob).filter(pk=req.pk).first()
            assert for_bob is not None and for_bob.may_decide(person) == plain, (req.pk, person.username)
    assert chosen_somewhere == 4 * 2  # bob and erin review each of them


def test_the_grant_is_given_when_every_approval_asks_for_one(world, bob):
    req = make_request(world, decision=review_decision(approvals=2))
    actions.do_approve(bob, req, grant_minutes=30)
    actions.do_approve(world.erin, req, grant_minutes="10")
    req.refresh_from_db()
    assert timedelta(minutes=9) < req.grant_until - req.decided_at <= timedelta(minutes=10)
    other = make_request(world, decision=review_decision(approvals=2), params=("7",))
    actions.do_approve(bob, other, grant_minutes=30)
    actions.do_approve(world.erin, other)
    other.refresh_from_db()
    assert other.grant_until is None


def test_a_grant_longer_than_the_setting_is_refused(world, bob, settings):
    settings.APPROVALS_MAX_GRANT_MINUTES = 15
    req = make_request(world)
    for bad in (16, -1, "ten", True):
        with pytest.raises(actions.InvalidInput):
            actions.do_approve(bob, req, grant_minutes=bad)
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


# --- WF-01: a review nobody can approve is refused ------------------------------------------------


@pytest.mark.parametrize(
    "reviewers",
    [(), ("",), ("no-such-group",), ("empty",), ("only-dave",)],
    ids=["none", "blank", "unknown", "no-members", "only-the-requester"],
)
def test_a_review_nobody_can_approve_is_refused_never_allowed(world, bob, reviewers):
    from django.contrib.auth.models import Group

    Group.objects.create(name="empty")
    world.dave.groups.add(Group.objects.create(name="only-dave"))
    with pytest.raises(actions.NoEligibleReviewers, match="nobody can approve"):
        make_request(world, decision=review_decision(reviewers=reviewers))
    assert not ApprovalRequest.objects.exists()


def test_a_quorum_larger_than_the_eligible_reviewers_is_refused(world, bob):
    # bob and erin may approve (dave is the requester): three approvals can never happen.
    with pytest.raises(actions.NoEligibleReviewers, match="2 member"):
        make_request(world, decision=review_decision(approvals=3))


def test_inactive_people_do_not_count_as_reviewers(world, bob):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="night-shift")
    night = reviewer("nora", "night-shift")
    night.is_active = False
    night.save()
    with pytest.raises(actions.NoEligibleReviewers):
        make_request(world, decision=review_decision(reviewers=("night-shift",)))
    assert group.user_set.count() == 1


def _decision_rows(req: ApprovalRequest) -> dict[str, object]:
    """What a decision left in the database, without its ids and clocks."""
    req.refresh_from_db()
    records = AuditRecord.objects.filter(
        target_type="approvals.approvalrequest", target_id=str(req.pk)
    ).order_by("at", "id")

    def snapshot(value: dict[str, object] | None) -> dict[str, object] | None:
        # The request's own deadline (each request has its own) stands as a marker.
        if value and value.get("expires_at") == req.expires_at.isoformat():
            return {**value, "expires_at": "<the request's>"}
        return value

    return {
        "request": (req.status, req.decided_by_name, req.reason, req.claim_by is not None, req.grant_until),
        "decisions": list(req.decisions.values_list("reviewer_name", "verdict", "comment", "grant_minutes")),
        "audit": [
            (r.action, r.actor_kind, r.actor, r.actor_user_id, r.target_type, r.target_repr)
            + (snapshot(r.before), snapshot(r.after), r.detail)
            for r in records
        ],
    }


@pytest.mark.parametrize("case", ["approve", "approve-partly", "reject", "quorum-with-grants"])
def test_a_decision_written_in_one_statement_writes_what_the_locked_transaction_does(
    world, bob, monkeypatch, case
):
    # On PostgreSQL a decision is first written in one statement (the decision, the
    # request's update, the audit record); the locked transaction is its fallback and
    # SQLite's way. Both must leave the same rows.
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the one-statement decision is PostgreSQL's (a data-modifying WITH)")
    erin = world.erin
    found = {}
    for one_statement in (True, False):
        monkeypatch.setattr(actions, "_writes_in_one_statement", lambda one=one_statement: one)
        approvals = 2 if case in ("approve-partly", "quorum-with-grants") else 1
        req = make_request(world, decision=review_decision(approvals=approvals))
        if case == "reject":
            decided = actions.do_reject(bob, req.pk, reason="not during the freeze")
        elif case == "quorum-with-grants":
            actions.do_approve(bob, req.pk, comment="ok", grant_minutes=30)
            decided = actions.do_approve(erin, req.pk, grant_minutes=10)
        else:
            decided = actions.do_approve(bob, req.pk, comment="looks right")
        # The returned request is the decided one, its decisions read afresh.
        assert decided.pk == req.pk and decided.status == req.__class__.objects.get(pk=req.pk).status
        assert len(decided.decisions.all()) == (2 if case == "quorum-with-grants" else 1)
        rows = _decision_rows(req)
        rows["audit"] = [
            (*r[:5], r[5].replace(f"request {req.pk} ", "request N "), *r[6:]) for r in rows["audit"]
        ]
        grant_until = rows["request"][4]
        rows["request"] = (
            *rows["request"][:4],
            None if grant_until is None else round((grant_until - req.created_at).total_seconds() / 60),
        )
        found[one_statement] = rows
    assert found[True] == found[False]
    expected_status = {"approve": "approved", "approve-partly": "pending", "reject": "rejected"}.get(
        case, "approved"
    )
    assert found[True]["request"][0] == expected_status
    if case == "quorum-with-grants":
        assert found[True]["request"][4] == 10  # the shortest grant asked for


def test_a_second_decision_by_the_same_reviewer_in_one_statement_is_refused_by_the_constraint(
    world, bob, monkeypatch
):
    # may_decide refuses a reviewer who already decided; the unique constraint stands
    # behind it when the decisions read are stale (here: not read at all).
    req = make_request(world, decision=review_decision(approvals=2))
    actions.do_approve(bob, req.pk)
    monkeypatch.setattr(ApprovalRequest, "may_decide", lambda self, user: (True, ""))
    with pytest.raises(actions.NotAllowed, match="already decided"):
        actions.do_approve(bob, req.pk)
