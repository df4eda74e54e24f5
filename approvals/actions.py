"""Every change to approval requests: one function per transition.

Each function locks the request row (``select_for_update``) or makes a conditional
``update()`` and checks the count, writes the audit record, and only after commit
publishes the change on the channel layer and enqueues Celery work. An illegal transition
raises ``IllegalTransition`` and changes nothing; two reviewers deciding at once are
serialised by the row lock, so the request ends in one consistent state (WF-04).

    pending -> approved | rejected | expired | cancelled      do_approve (quorum), do_reject,
                                                              do_expire, do_cancel
    approved -> executed | failed                             do_mark_executed, do_mark_failed

``do_create_request`` makes a pending request; ``do_claim`` marks the one run of an
approved request (so that it runs once, WF-03); ``do_use_grant`` counts a run under a
grant; ``do_record_estimate`` stores the planner's estimate of rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import Count, IntegerField, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals.events import publish_change, wait_until_published
from approvals.models import (
    TRANSITIONS,
    ApprovalDecision,
    ApprovalRequest,
    Status,
    reviewer_role_filter,
)
from audit.actions import record

log = logging.getLogger("airlock.approvals")

MAX_COMMENT = 2000


class ApprovalError(Exception):
    """A change to an approval request that was refused; the message says why."""


class IllegalTransition(ApprovalError):
    """The request is not in a state that allows this change."""


class NotAllowed(ApprovalError):
    """This person may not decide this request."""


class InvalidInput(ApprovalError):
    """A required value is missing or malformed (a rejection without a reason...)."""


class NoEligibleReviewers(ApprovalError):
    """Nobody could ever approve the request: it must be refused, never allowed (WF-01)."""


RequestRef = ApprovalRequest | int


def _pk(request: RequestRef) -> int:
    return request.pk if isinstance(request, ApprovalRequest) else int(request)


def _get(requests: QuerySet[ApprovalRequest], request: RequestRef) -> ApprovalRequest:
    try:
        return requests.get(pk=_pk(request))
    except ApprovalRequest.DoesNotExist:
        raise ApprovalError(f"approval request {_pk(request)} does not exist") from None


def _lock(request: RequestRef) -> ApprovalRequest:
    return _get(ApprovalRequest.objects.select_for_update(), request)


def _to_decide(user: Any) -> QuerySet[ApprovalRequest]:
    """Requests read with what ``may_decide(user)`` asks: whether a reviewer group is
    theirs, the decisions so far."""
    return ApprovalRequest.objects.with_reviewer_check(user).prefetch_related("decisions")


def _lock_to_decide(request: RequestRef, user: Any) -> ApprovalRequest:
    """Lock the request for ``user``'s decision (``_to_decide``). Under the row lock the
    decisions read are all there are: every decision is made holding it."""
    return _get(_to_decide(user).select_for_update(), request)


def _check(req: ApprovalRequest, to: str) -> None:
    if to not in TRANSITIONS.get(req.status, frozenset()):
        raise IllegalTransition(f"approval request {req.pk} is {req.status}: it cannot become {to}")


def _after_commit(
    req_id: int, status: str, *, created: bool = False, work: Iterable[Callable[[], Any]] = ()
) -> None:
    def publish() -> None:
        publish_change(req_id, status, created=created)

    transaction.on_commit(publish)
    if work:
        # Notifications (Celery) after the messages are out: queued alongside, their
        # broker round trips competed with the sends, which the agent and the inboxes wait
        # on (approvals.events.wait_until_published).
        transaction.on_commit(wait_until_published)
    for job in work:
        transaction.on_commit(_safe(job))


def _safe(job: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except Exception:
            # A broker that is down must never undo or block a decision: the periodic sweep
            # catches what a lost task missed, and notifications are best effort.
            log.warning("approvals: could not enqueue follow-up work", exc_info=True)

    return run


def _tasks() -> Any:
    from approvals import tasks

    return tasks


# --- creation ------------------------------------------------------------------------------


def eligible_reviewers(groups: Iterable[Group], exclude: Iterable[int]) -> Any:
    """Active people with the reviewer role in any of ``groups`` (a queryset is used as a
    subquery), minus ``exclude``."""
    from identity.models import User

    return (
        User.objects.filter(
            is_active=True, groups__in=groups if isinstance(groups, QuerySet) else list(groups)
        )
        .filter(reviewer_role_filter())
        .exclude(pk__in=[pk for pk in exclude if pk is not None])
        .distinct()
    )


def capped_timeout(seconds: int | None) -> int:
    """The hold of a request: the rule's timeout (or the default), capped by the setting."""
    wanted = seconds or settings.APPROVALS_DEFAULT_TIMEOUT
    return max(1, min(int(wanted), settings.APPROVALS_MAX_TIMEOUT))


@transaction.atomic
def do_create_request(
    *,
    agent: Any,
    agent_name: str,
    connection: Any,
    connection_name: str,
    protocol: str,
    statement: str,
    statement_pretty: str,
    params: list[str | None],
    classification: dict[str, Any],
    rule: str,
    rule_message: str,
    policy_name: str,
    policy_version: int | None,
    reviewer_groups: Iterable[str],
    approvals_needed: int,
    timeout_seconds: int | None,
    binding_hash: str,
    session_id: Any = None,
    agent_waits: bool = True,
    estimate_status: str = "none",
    now: datetime | None = None,
) -> ApprovalRequest:
    """A new pending request. ``statement``, ``statement_pretty`` and ``params`` must be
    masked already; ``binding_hash`` covers the unmasked values (``approvals.binding``).

    Raises ``NoEligibleReviewers`` when the reviewer groups are empty, unknown, or hold
    fewer people who may approve it than it needs: such a request is refused, never
    allowed (WF-01).
    """
    names = sorted({name for name in reviewer_groups if name})
    needed = max(1, int(approvals_needed or 1))
    if not names:
        raise NoEligibleReviewers("the rule names no reviewer group, so nobody can approve this statement")
    on_behalf_of = getattr(agent, "on_behalf_of", None)
    owner = getattr(agent, "owner", None)
    requesting_side = [getattr(on_behalf_of, "pk", None), getattr(owner, "pk", None)]
    # The groups and how many people may approve, in one query (a round trip is a
    # measurable part of the time until the card reaches the reviewers).
    named = Group.objects.filter(name__in=names)
    eligible = (
        eligible_reviewers(named, requesting_side)
        .order_by()
        .values("is_active")
        .annotate(n=Count("pk", distinct=True))
        .values("n")[:1]
    )
    groups = list(
        named.annotate(airlock_eligible=Coalesce(Subquery(eligible, output_field=IntegerField()), 0))
    )
    available = groups[0].airlock_eligible if groups else 0
    if available < needed:
        raise NoEligibleReviewers(
            f"the reviewer groups {', '.join(names)} have {available} member(s) who may approve this "
            f"statement and it needs {needed}: nobody can approve it, so it is refused"
        )
    now = now or timezone.now()
    req = ApprovalRequest.objects.create(
        status=Status.PENDING,
        agent_waits=agent_waits,
        protocol=protocol,
        session_id=session_id,
        agent=agent if getattr(agent, "pk", None) else None,
        agent_name=agent_name,
        on_behalf_of=on_behalf_of,
        on_behalf_of_name=on_behalf_of.get_username() if on_behalf_of else "",
        agent_owner=owner,
        agent_owner_name=owner.get_username() if owner else "",
        connection=connection if getattr(connection, "pk", None) else None,
        connection_name=connection_name,
        statement=statement,
        statement_pretty=statement_pretty,
        params=list(params),
        classification=classification,
        rule=rule or "",
        rule_message=rule_message or "",
        policy_name=policy_name or "",
        policy_version=policy_version,
        reviewer_group_names=names,
        approvals_needed=needed,
        binding_hash=binding_hash,
        created_at=now,
        expires_at=now + timedelta(seconds=capped_timeout(timeout_seconds)),
        waiter_seen_at=now if agent_waits else None,
        estimate_status=estimate_status,
    )
    req.reviewer_groups.add(*groups)  # a new row: no links to compare with (set() would read them)
    record(
        agent if getattr(agent, "pk", None) else agent_name,
        "approval.requested",
        req,
        after=req.audit_snapshot(),
        statement=statement,
    )
    tasks = _tasks()
    _after_commit(
        req.pk,
        req.status,
        created=True,
        work=[
            lambda: tasks.expire_request.apply_async((req.pk,), eta=req.expires_at),
            lambda: tasks.notify_reviewers.delay(req.pk),
        ],
    )
    return req


# --- reviewers' decisions --------------------------------------------------------------------


def _clean_text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"the {what} must be text")
    value = value.strip()
    if len(value) > MAX_COMMENT:
        raise InvalidInput(f"the {what} is longer than {MAX_COMMENT} characters")
    return value


def _clean_grant(value: Any) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        minutes = int(value)
    except (TypeError, ValueError):
        raise InvalidInput("the grant must be a whole number of minutes") from None
    if isinstance(value, bool) or minutes < 0:
        raise InvalidInput("the grant must be a whole number of minutes")
    if minutes > settings.APPROVALS_MAX_GRANT_MINUTES:
        raise InvalidInput(f"a grant lasts at most {settings.APPROVALS_MAX_GRANT_MINUTES} minutes")
    return minutes or None


def _decide_checks(req: ApprovalRequest, user: Any, now: datetime) -> None:
    if req.status != Status.PENDING:
        raise IllegalTransition(f"approval request {req.pk} is {req.status}: it can no longer be decided")
    if req.expires_at <= now:
        raise IllegalTransition(f"approval request {req.pk} has expired")
    allowed, why = req.may_decide(user)
    if not allowed:
        raise NotAllowed(why)


@contextmanager
def _one_decision_per_reviewer() -> Iterator[None]:
    """A decision written inside is refused (NotAllowed) when the reviewer has one already:
    the unique constraint stands behind may_decide's check of the decisions read."""
    try:
        yield
    except IntegrityError:
        raise NotAllowed("you have already decided this request") from None


def _add_decision(decision: ApprovalDecision) -> None:
    """Save a planned decision (its request locked by ``_lock_to_decide``)."""
    # No savepoint: a failure here fails the whole action, whose transaction (or
    # savepoint, when nested) is rolled back as the exception leaves it.
    with _one_decision_per_reviewer():
        decision.save(force_insert=True)


def do_approve(
    user: Any, request: RequestRef, *, comment: str = "", grant_minutes: Any = None
) -> ApprovalRequest:
    """Record ``user``'s approval; with enough approvals (quorum) the request is approved.

    ``grant_minutes`` asks for "allow identical statements from this agent for N minutes";
    the grant is given when every approval asks for one (the shortest wins).
    """
    comment = _clean_text(comment, "comment")
    grant = _clean_grant(grant_minutes)
    return _decide(user, request, ApprovalDecision.Verdict.APPROVE, comment, grant)


def do_reject(user: Any, request: RequestRef, *, reason: str) -> ApprovalRequest:
    """Reject (a reason is required): any one rejection rejects the request."""
    reason = _clean_text(reason, "reason")
    if not reason:
        raise InvalidInput("a rejection needs a reason")
    return _decide(user, request, ApprovalDecision.Verdict.REJECT, reason, None)


# --- a reviewer's decision ------------------------------------------------------------------
#
# A decision is planned the same way everywhere (``_plan_decision``: the checks, the new
# decision, the request's new state and the audit record's contents) and written one of
# two ways. On PostgreSQL, first optimistically: the request and its decisions are read
# without a lock, and the decision, the request's update and the audit record are one
# statement whose update applies only if the request's row is the version read (its
# ``xmin``); three round trips where a locked transaction takes seven (BEGIN, the lock,
# the decisions, three writes, COMMIT), on the way from a reviewer's click to the held
# statement's run. A row changed meanwhile (another decision, the expiry, the waiting
# gateway's heartbeat) makes the statement write nothing; the decision is then planned
# again from a fresh read, and after ``OPTIMISTIC_ATTEMPTS`` such misses made under the
# request's lock, as it is everywhere else (SQLite).

OPTIMISTIC_ATTEMPTS = 2


@dataclass
class _Decision:
    """What a decision writes: the new decision, the request's changed fields (none for an
    approval short of the quorum), and the audit record (action, before, after, detail)."""

    decision: ApprovalDecision
    fields: list[str]
    action: str
    before: dict[str, Any]
    after: dict[str, Any]
    detail: dict[str, Any]
    final: bool  # the request is decided: the requester's owner is told


def _plan_decision(
    req: ApprovalRequest, user: Any, verdict: str, text: str, grant: int | None, now: datetime
) -> _Decision:
    """Check ``user``'s decision against ``req`` (read with its decisions and the reviewer
    check) and plan it, setting the request's new state on ``req``."""
    _decide_checks(req, user, now)
    before = req.audit_snapshot()
    decision = ApprovalDecision(
        request=req, reviewer=user, reviewer_name=user.get_username(), verdict=verdict,
        comment=text, grant_minutes=grant, at=now,
    )  # fmt: skip
    if verdict == ApprovalDecision.Verdict.REJECT:
        _check(req, Status.REJECTED)
        _set_decided(req, Status.REJECTED, user, now)
        req.reason = text
        fields = ["status", "decided_at", "decided_by", "decided_by_name", "reason"]
        return _Decision(
            decision, fields, "approval.rejected", before, req.audit_snapshot(), {"reason": text}, True
        )
    approvals = [d for d in req.decisions.all() if d.verdict == ApprovalDecision.Verdict.APPROVE]
    approvals.append(decision)
    if len(approvals) < req.approvals_needed:
        detail = {"approvals": len(approvals), "needed": req.approvals_needed, "comment": text}
        return _Decision(
            decision, [], "approval.approved_partly", before, req.audit_snapshot(), detail, False
        )
    _check(req, Status.APPROVED)
    grants = [a.grant_minutes for a in approvals]
    _set_decided(req, Status.APPROVED, user, now)
    req.claim_by = now + timedelta(seconds=settings.APPROVALS_CLAIM_SECONDS)
    if all(grants):
        req.grant_until = now + timedelta(minutes=min(g for g in grants if g))
    fields = ["status", "decided_at", "decided_by", "decided_by_name", "claim_by", "grant_until"]
    detail = {"comment": text, "approvers": [a.reviewer_name for a in approvals]}
    return _Decision(decision, fields, "approval.approved", before, req.audit_snapshot(), detail, True)


def _set_decided(req: ApprovalRequest, status: str, user: Any, now: datetime) -> None:
    req.status = status
    req.decided_at = now
    req.decided_by = user
    req.decided_by_name = user.get_username()


def _decide(user: Any, request: RequestRef, verdict: str, text: str, grant: int | None) -> ApprovalRequest:
    if _writes_in_one_statement():
        for _ in range(OPTIMISTIC_ATTEMPTS):
            now = timezone.now()
            req = _read_to_decide(request, user)
            plan = _plan_decision(req, user, verdict, text, grant, now)
            if _write_unless_changed(req, user, plan):
                _decided(req, plan)
                return req
    return _decide_locked(user, request, verdict, text, grant)


def _decide_locked(
    user: Any, request: RequestRef, verdict: str, text: str, grant: int | None
) -> ApprovalRequest:
    """The decision under the request's row lock, in a transaction."""
    with transaction.atomic():
        now = timezone.now()
        req = _lock_to_decide(request, user)
        plan = _plan_decision(req, user, verdict, text, grant, now)
        _add_decision(plan.decision)
        # Short of the quorum too: a new row version, so that a decision written
        # optimistically from an earlier read (``_write_unless_changed``) writes nothing.
        req.save(update_fields=plan.fields or ["status"])
        record(user, plan.action, req, before=plan.before, after=plan.after, **plan.detail)
        _decided(req, plan)
        return req


def _decided(req: ApprovalRequest, plan: _Decision) -> None:
    req.refresh_from_db(fields=["decisions"])  # forgets the decisions read (no query)
    if not plan.final:
        _after_commit(req.pk, req.status)
        return
    tasks = _tasks()
    _after_commit(req.pk, req.status, work=[lambda: tasks.notify_decision.delay(req.pk)])


def _read_to_decide(request: RequestRef, user: Any) -> ApprovalRequest:
    """The request, unlocked, with its row version (``xmin``) and what ``_to_decide``
    reads (two statements)."""
    # The table name from the model's metadata, quoted: no value in the SQL.
    version = RawSQL(f"{_sql_names(ApprovalRequest)[0]}.xmin::text", ())  # noqa: S611
    return _get(_to_decide(user).annotate(row_version=version), request)


def _write_unless_changed(req: ApprovalRequest, user: Any, plan: _Decision) -> bool:
    """PostgreSQL: the decision, the request's update and the audit record in one statement,
    written only if the request's row is still the version read (False: nothing written).
    A second decision by the same reviewer fails on the unique constraint (NotAllowed)."""
    from django.db import connections

    from audit.actions import forward_after_commit
    from audit.models import AuditRecord

    table, column = _sql_names(ApprovalRequest)
    decision_table, decision_column = _sql_names(ApprovalDecision)
    audit_table, audit_column = _sql_names(AuditRecord)
    connection = connections[ApprovalRequest.objects.db]
    sets, values = [], []
    for name in plan.fields or ["status"]:  # short of the quorum: a new row version all the same
        field = ApprovalRequest._meta.get_field(name)
        sets.append(f"{column(name)} = %s")
        values.append(field.get_db_prep_save(getattr(req, field.attname), connection))
    decision = plan.decision
    decision_names = ["request", "reviewer", "reviewer_name", "verdict", "comment", "grant_minutes", "at"]
    actor_kind, actor, actor_user = _audit_actor(user)
    sql = (
        f"WITH u AS (UPDATE {table} SET {', '.join(sets)} "  # noqa: S608 - names from the models' metadata
        f"WHERE {column('id')} = %s AND xmin::text = %s AND {column('status')} = %s RETURNING {column('id')}), "
        f"d AS (INSERT INTO {decision_table} ({', '.join(decision_column(n) for n in decision_names)}) "
        f"SELECT u.{column('id')}, %s, %s, %s, %s, %s, %s FROM u RETURNING {decision_column('id')}), "
        f"a AS (INSERT INTO {audit_table} ({', '.join(audit_column(n) for n in _AUDIT_COLUMNS)}) "
        "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, '' FROM u "
        f"RETURNING {audit_column('id')}) "
        f"SELECT d.{decision_column('id')}, a.{audit_column('id')} FROM d, a"
    )
    params = [
        *values, req.pk, req.row_version, str(Status.PENDING),
        user.pk, decision.reviewer_name, decision.verdict, decision.comment, decision.grant_minutes, decision.at,
        timezone.now(), actor_kind, actor, actor_user,
        plan.action, req._meta.label_lower, str(req.pk), str(req)[:255],
        json.dumps(plan.before), json.dumps(plan.after), json.dumps(plan.detail),
    ]  # fmt: skip
    with _one_decision_per_reviewer(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    decision.pk = row[0]
    forward_after_commit(row[1])
    return True


# --- the clock and the agent's side ----------------------------------------------------------


@transaction.atomic
def do_expire(request: RequestRef, *, now: datetime | None = None) -> bool:
    """Expire the request if it is still pending and its deadline has passed (idempotent).

    Returns whether it changed: the expiry task, the periodic sweep and the waiting gateway
    may all try, and exactly one of them does it.
    """
    now = now or timezone.now()
    req = _lock(request)
    if req.status != Status.PENDING or req.expires_at > now:
        return False
    before = req.audit_snapshot()
    req.status = Status.EXPIRED
    req.decided_at = now
    approvals = req.approvals_count()
    req.reason = (
        f"no decision within the time allowed ({approvals} of {req.approvals_needed} approvals)"
        if approvals
        else "no reviewer decided within the time allowed"
    )
    req.save(update_fields=["status", "decided_at", "reason"])
    record(None, "approval.expired", req, before=before, after=req.audit_snapshot())
    tasks = _tasks()
    _after_commit(req.pk, req.status, work=[lambda: tasks.notify_decision.delay(req.pk)])
    return True


@transaction.atomic
def do_cancel(actor: Any, request: RequestRef, *, reason: str) -> bool:
    """Cancel a pending request (the agent went away or cancelled). Idempotent: returns
    whether it changed; a request already decided is left as it is."""
    req = _lock(request)
    if req.status != Status.PENDING:
        return False
    before = req.audit_snapshot()
    req.status = Status.CANCELLED
    req.decided_at = timezone.now()
    req.reason = reason[:MAX_COMMENT]
    req.save(update_fields=["status", "decided_at", "reason"])
    record(actor, "approval.cancelled", req, before=before, after=req.audit_snapshot())
    _after_commit(req.pk, req.status)
    return True


def do_claim(actor: Any, request: RequestRef, *, session_id: Any = None) -> bool:
    """Take the one run of an approved request. True for exactly one caller, ever (WF-03):
    a conditional update on ``claimed_at``, so two gateways (or a resend racing the
    waiting session) cannot both run it."""
    return do_claim_and_read(actor, request, session_id=session_id) is not None


def do_claim_and_read(actor: Any, request: RequestRef, *, session_id: Any = None) -> ApprovalRequest | None:
    """``do_claim``, answering with the request as the claim left it (None: not claimed),
    for a caller that needs both: the row the claim changed is its answer.

    On PostgreSQL the claim and its audit record are one statement (a data-modifying
    ``WITH``; atomic on its own): one round trip on the way from an approval to the
    statement's run, where a transaction of its own took four. Elsewhere (SQLite) the
    conditional update and the record in one transaction."""
    pk = _pk(request)
    now = timezone.now()
    detail = {"session": str(session_id) if session_id else ""}
    if _writes_in_one_statement():
        return _claim_and_record(actor, pk, now, detail)
    with transaction.atomic():
        req = _claim_returning(pk, now)
        if req is not None:
            record(actor, "approval.claimed", req, **detail)
        return req


def _writes_in_one_statement() -> bool:
    from django.db import connections

    return connections[ApprovalRequest.objects.db].vendor == "postgresql"


def _claim_condition(column: Callable[[str], str]) -> str:
    return (
        f"{column('id')} = %s AND {column('status')} = %s "
        f"AND {column('claimed_at')} IS NULL AND {column('claim_by')} > %s"
    )


def _claim_returning(pk: int, now: datetime) -> ApprovalRequest | None:
    """The claim's conditional update, answering with the row it changed: ``UPDATE ...
    RETURNING`` (PostgreSQL; SQLite since 3.35), one statement where ``update()`` and a read
    after it are two, on the way from an approval to the statement's run."""
    table, column = _sql_names(ApprovalRequest)
    # Names from the model's own metadata, every value a parameter.
    sql = (
        f"UPDATE {table} SET {column('claimed_at')} = %s "  # noqa: S608
        f"WHERE {_claim_condition(column)} RETURNING *"
    )
    # raw() adapts the datetimes as the ORM stores them (naive UTC on SQLite).
    return next(iter(ApprovalRequest.objects.raw(sql, [now, pk, str(Status.APPROVED), now])), None)


def _claim_and_record(actor: Any, pk: int, now: datetime, detail: dict[str, Any]) -> ApprovalRequest | None:
    """PostgreSQL: the claim's update and its ``approval.claimed`` audit record (written
    only when the update changed the row) in one statement. The record holds what
    ``audit.actions.record`` would write for the claimed row; ``target_repr`` is the
    request's ``__str__`` spelt in SQL (a test compares the two)."""
    from audit.actions import forward_after_commit
    from audit.models import AuditRecord

    table, column = _sql_names(ApprovalRequest)
    audit_table, audit_column = _sql_names(AuditRecord)
    actor_kind, name, user_pk = _audit_actor(actor)
    shown = (
        f"'approval request ' || c.{column('id')} || ' (' || c.{column('agent_name')} || '@' || "
        f"c.{column('connection_name')} || ', ' || c.{column('status')} || ')'"
    )
    sql = (
        f"WITH c AS (UPDATE {table} SET {column('claimed_at')} = %s "  # noqa: S608
        f"WHERE {_claim_condition(column)} RETURNING *), "
        f"a AS (INSERT INTO {audit_table} ({', '.join(audit_column(n) for n in _AUDIT_COLUMNS)}) "
        f"SELECT %s, %s, %s, %s, 'approval.claimed', %s, c.{column('id')}::text, left({shown}, 255), "
        "NULL, NULL, %s::jsonb, '' FROM c "
        f"RETURNING {audit_column('id')}) "
        f"SELECT c.*, a.{audit_column('id')} AS audit_record_id FROM c, a"
    )
    params = [
        now, pk, str(Status.APPROVED), now,
        now, actor_kind, name, user_pk,
        ApprovalRequest._meta.label_lower, json.dumps(detail),
    ]  # fmt: skip
    req = next(iter(ApprovalRequest.objects.raw(sql, params)), None)
    if req is not None:
        forward_after_commit(req.audit_record_id)
    return req


# The columns of an audit record written by a statement of its own (the claim, a
# decision), in the order their values are given.
_AUDIT_COLUMNS = (
    "at", "actor_kind", "actor", "actor_user", "action", "target_type", "target_id",
    "target_repr", "before", "after", "detail", "source_address",
)  # fmt: skip


def _audit_actor(actor: Any) -> tuple[str, str, int | None]:
    """The actor columns ``audit.actions.record`` writes for ``actor``: kind, name, person."""
    from audit.actions import actor_fields

    who = actor_fields(actor)
    person = who.get("actor_user")
    return str(who["actor_kind"]), who["actor"], person.pk if person is not None else None


def _sql_names(model: Any) -> tuple[str, Callable[[str], str]]:
    """The quoted table name of ``model`` and a function quoting the column of a field."""
    from django.db import connections

    meta = model._meta
    quote = connections[model.objects.db].ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    return quote(meta.db_table), column


@transaction.atomic
def do_mark_executed(actor: Any, request: RequestRef, *, result: str = "") -> ApprovalRequest:
    """The approved statement ran (``result``: its command tag or a short summary)."""
    req = _lock(request)
    _check(req, Status.EXECUTED)
    if req.claimed_at is None:
        raise IllegalTransition(f"approval request {req.pk} was not claimed by a run")
    before = req.audit_snapshot()
    req.status = Status.EXECUTED
    req.finished_at = timezone.now()
    req.result = result[:MAX_COMMENT]
    req.save(update_fields=["status", "finished_at", "result"])
    record(actor, "approval.executed", req, before=before, after=req.audit_snapshot(), result=req.result)
    _after_commit(req.pk, req.status)
    return req


@transaction.atomic
def do_mark_failed(actor: Any, request: RequestRef, *, error: str) -> ApprovalRequest:
    """The approved statement failed, or could not run (never claimed in time...)."""
    req = _lock(request)
    _check(req, Status.FAILED)
    before = req.audit_snapshot()
    req.status = Status.FAILED
    req.finished_at = timezone.now()
    req.reason = error[:MAX_COMMENT]
    req.save(update_fields=["status", "finished_at", "reason"])
    record(actor, "approval.failed", req, before=before, after=req.audit_snapshot())
    _after_commit(req.pk, req.status)
    return req


@transaction.atomic
def do_use_grant(actor: Any, request: RequestRef, *, now: datetime | None = None) -> bool:
    """Count one run of an identical statement under the request's grant, if it still holds."""
    now = now or timezone.now()
    from django.db.models import F

    changed = ApprovalRequest.objects.filter(
        pk=_pk(request), status__in=[Status.APPROVED, Status.EXECUTED], grant_until__gt=now
    ).update(grant_uses=F("grant_uses") + 1)
    if changed:
        req = ApprovalRequest.objects.get(pk=_pk(request))
        record(actor, "approval.grant_used", req, uses=req.grant_uses)
    return bool(changed)


@transaction.atomic
def do_record_estimate(request: RequestRef, *, rows: int | None, note: str = "") -> None:
    """Store the planner's estimate of rows (``rows=None``: unknown, ``note`` says why).

    The estimate often lands while a reviewer decides: the request's row is locked for the
    last statement before the commit only (read, audit record, then the update), so that
    a decision waiting for the lock waits one round trip, not the whole transaction. Only
    this action writes these fields, and no decision reads them.
    """
    try:
        req = ApprovalRequest.objects.get(pk=_pk(request))
    except ApprovalRequest.DoesNotExist:
        raise ApprovalError(f"approval request {_pk(request)} does not exist") from None
    req.estimated_rows = rows
    req.estimate_status = "ok" if rows is not None else "unknown"
    req.estimate_note = note[:255]
    record("gateway", "approval.estimated", req, rows=rows, note=req.estimate_note)
    ApprovalRequest.objects.filter(pk=req.pk).update(
        estimated_rows=req.estimated_rows,
        estimate_status=req.estimate_status,
        estimate_note=req.estimate_note,
    )
    _after_commit(req.pk, req.status)


def heartbeat(request: RequestRef, *, now: datetime | None = None) -> str | None:
    """The waiting gateway is still there: refresh ``waiter_seen_at``; return the status.

    Not an audited change: it only keeps a live hold from being swept as abandoned.
    """
    now = now or timezone.now()
    ApprovalRequest.objects.filter(pk=_pk(request), status=Status.PENDING).update(waiter_seen_at=now)
    return ApprovalRequest.objects.filter(pk=_pk(request)).values_list("status", flat=True).first()
