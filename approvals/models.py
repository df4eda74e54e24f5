"""Approval requests: a held statement waiting for people to decide, and their decisions.

A request is a database row first (so any web node can decide it and any gateway node can
learn of the outcome). Its states::

    pending -> approved | rejected | expired | cancelled
    approved -> executed | failed

Every change goes through ``approvals.actions``; nothing else writes these rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Status(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTED = "executed"
    FAILED = "failed"


# The only legal transitions; ``approvals.actions`` refuses every other one.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.APPROVED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED}),
    Status.APPROVED: frozenset({Status.EXECUTED, Status.FAILED}),
}
DECIDED = frozenset(set(Status.values) - {Status.PENDING})


def reviewer_role_filter() -> Q:
    """People who hold the reviewer role (superusers hold every role)."""
    return Q(is_superuser=True) | Q(groups__name=settings.AIRLOCK_ROLE_GROUPS["reviewer"])


def _in_reviewer_groups_of(user: Any) -> models.Exists:
    """One of the request's reviewer groups is one of ``user``'s groups (a subquery)."""
    mine = ApprovalRequest.reviewer_groups.through.objects.filter(
        approvalrequest_id=models.OuterRef("pk"), group__in=user.groups.all()
    )
    return models.Exists(mine)


class ApprovalRequestQuerySet(models.QuerySet["ApprovalRequest"]):
    def pending(self) -> ApprovalRequestQuerySet:
        return self.filter(status=Status.PENDING)

    def decided(self) -> ApprovalRequestQuerySet:
        return self.exclude(status=Status.PENDING)

    def overdue(self, now: datetime | None = None) -> ApprovalRequestQuerySet:
        return self.pending().filter(expires_at__lte=now or timezone.now())

    def for_reviewer(self, user: Any) -> ApprovalRequestQuerySet:
        """Requests ``user`` reviews: one of its reviewer groups is theirs, and they are not
        on the requesting side (the person the agent acts for, the agent's owner)."""
        if not (user.is_authenticated and user.is_active and user.has_role("reviewer")):
            return self.none()
        return (
            self.filter(_in_reviewer_groups_of(user))
            .exclude(on_behalf_of=user)
            .exclude(agent_owner=user)
            .annotate(
                reviewer_groups_checked_for=models.Value(user.pk), in_reviewer_groups=models.Value(True)
            )
        )

    def with_reviewer_check(self, user: Any) -> ApprovalRequestQuerySet:
        """Each request read with whether one of its reviewer groups is ``user``'s, so that
        ``may_decide(user)`` asks the database nothing more about it."""
        return self.annotate(
            reviewer_groups_checked_for=models.Value(user.pk), in_reviewer_groups=_in_reviewer_groups_of(user)
        )

    def visible_to(self, user: Any) -> ApprovalRequestQuerySet:
        """What ``user`` may look at: admins and auditors everything, reviewers their own
        groups' requests and those made for them."""
        if not (user.is_authenticated and user.is_active):
            return self.none()
        if user.has_role("admin", "auditor"):
            return self.all()
        if not user.has_role("reviewer"):
            return self.none()
        return self.filter(_in_reviewer_groups_of(user) | Q(on_behalf_of=user) | Q(agent_owner=user))

    def awaiting(self, user: Any) -> ApprovalRequestQuerySet:
        """Pending requests ``user`` may still decide (not yet decided by them)."""
        return self.for_reviewer(user).pending().exclude(decisions__reviewer=user)


class ApprovalRequest(models.Model):
    """A statement held at the gateway until reviewers decide.

    ``statement`` and ``params`` are stored masked (the gateway masks them before the row
    is written); ``binding_hash`` is an HMAC of the connection and the *unmasked* text and
    parameters, so what runs is exactly what was approved. Names are copied beside the
    foreign keys so that a request stays readable after the agent, person or connection
    it names is deleted.
    """

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    # False for agents that cannot wait: the agent is answered at once and sends the same
    # statement again once it is approved.
    agent_waits = models.BooleanField(default=True)
    protocol = models.CharField(max_length=16)
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    agent = models.ForeignKey(
        "identity.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="approval_requests"
    )
    agent_name = models.CharField(max_length=63)
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    on_behalf_of_name = models.CharField(max_length=150, blank=True)
    agent_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_owner_name = models.CharField(max_length=150, blank=True)
    connection = models.ForeignKey(
        "gateway.Connection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="approval_requests",
    )
    connection_name = models.CharField(max_length=63)
    statement = models.TextField()
    statement_pretty = models.TextField(blank=True)
    params = models.JSONField(default=list, blank=True)
    classification = models.JSONField(default=dict, blank=True)
    rule = models.CharField(max_length=200, blank=True)
    rule_message = models.TextField(blank=True)
    policy_name = models.CharField(max_length=200, blank=True)
    policy_version = models.PositiveIntegerField(null=True, blank=True)
    reviewer_groups = models.ManyToManyField(Group, blank=True, related_name="+")
    reviewer_group_names = models.JSONField(default=list, blank=True)
    approvals_needed = models.PositiveSmallIntegerField(default=1)
    binding_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_by_name = models.CharField(max_length=150, blank=True)
    # Why it was rejected, expired, cancelled or failed.
    reason = models.TextField(blank=True)
    # Approved requests: the run must start before ``claim_by``; ``claimed_at`` is set by
    # the one gateway that runs it (a conditional update, so it runs once).
    claim_by = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.TextField(blank=True)
    # "Allow identical statements from this agent until ..." (chosen by the approvers).
    grant_until = models.DateTimeField(null=True, blank=True)
    grant_uses = models.PositiveIntegerField(default=0)
    # The waiting gateway's heartbeat: a hold nobody waits on any more is cancelled.
    waiter_seen_at = models.DateTimeField(null=True, blank=True)
    # The planner's estimate of rows an UPDATE or DELETE touches (EXPLAIN, never ANALYZE).
    estimate_status = models.CharField(max_length=12, default="none")  # none | pending | ok | unknown
    estimated_rows = models.BigIntegerField(null=True, blank=True)
    estimate_note = models.CharField(max_length=255, blank=True)

    objects = ApprovalRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="approval_status_expiry"),
            models.Index(fields=["agent", "connection", "binding_hash"], name="approval_binding"),
        ]

    def __str__(self) -> str:
        return f"approval request {self.pk} ({self.agent_name}@{self.connection_name}, {self.status})"

    def get_absolute_url(self) -> str:
        return reverse("approvals:detail", kwargs={"pk": self.pk})

    # -- rules about one request ------------------------------------------------------------

    def is_pending(self) -> bool:
        return self.status == Status.PENDING

    def is_overdue(self, now: datetime | None = None) -> bool:
        return self.is_pending() and self.expires_at <= (now or timezone.now())

    def seconds_left(self, now: datetime | None = None) -> int:
        if not self.is_pending():
            return 0
        return max(0, int((self.expires_at - (now or timezone.now())).total_seconds()))

    def requesting_side_ids(self) -> set[int]:
        return {pk for pk in (self.on_behalf_of_id, self.agent_owner_id) if pk is not None}

    def may_decide(self, user: Any) -> tuple[bool, str]:
        """Whether ``user`` may approve or reject this request now, and if not, why."""
        if not (user.is_authenticated and user.is_active):
            return False, "you are not logged in"
        if not user.has_role("reviewer"):
            return False, "you are not a reviewer"
        if user.pk in self.requesting_side_ids():
            # WF-02: nobody approves a request made by an agent acting for them (or their own).
            return False, "you cannot decide a request made by an agent acting for you or owned by you"
        if not self.in_reviewer_groups_of(user):
            return False, f"only members of {', '.join(self.reviewer_group_names) or 'no group'} may decide"
        if not self.is_pending():
            return False, f"the request is {self.status}"
        # Through ``decisions.all()``: one query, or none when the caller prefetched them.
        if any(d.reviewer_id == user.pk for d in self.decisions.all()):
            return False, "you have already decided this request"
        return True, ""

    def in_reviewer_groups_of(self, user: Any) -> bool:
        """Whether one of this request's reviewer groups is ``user``'s."""
        if user.pk is not None and getattr(self, "reviewer_groups_checked_for", None) == user.pk:
            # Read with the answer (``for_reviewer(user)``, ``with_reviewer_check(user)``).
            return bool(self.in_reviewer_groups)
        return bool(self.reviewer_groups.filter(pk__in=user.groups.all()).exists())

    def approvals_count(self) -> int:
        return self.decisions.filter(verdict=ApprovalDecision.Verdict.APPROVE).count()

    def public_url(self) -> str:
        return settings.AIRLOCK_PUBLIC_URL + self.get_absolute_url()

    def operations(self) -> list[str]:
        return list(self.classification.get("operations") or [])

    def tables(self) -> list[str]:
        written = self.classification.get("tables_written") or []
        read = self.classification.get("tables_read") or []
        return sorted(set(written) | set(read))

    def audit_snapshot(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "agent": self.agent_name,
            "on_behalf_of": self.on_behalf_of_name,
            "connection": self.connection_name,
            "rule": self.rule,
            "policy": self.policy_name,
            "policy_version": self.policy_version,
            "reviewer_groups": self.reviewer_group_names,
            "approvals_needed": self.approvals_needed,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "binding": self.binding_hash[:16],
            "reason": self.reason,
        }


class ApprovalDecision(models.Model):
    """One reviewer's approval or rejection of a request (one per reviewer and request)."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewer_name = models.CharField(max_length=150)
    verdict = models.CharField(max_length=8, choices=Verdict.choices)
    # An approval's optional comment, or a rejection's (required) reason.
    comment = models.TextField(blank=True)
    grant_minutes = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "reviewer"], name="approval_one_decision_per_reviewer")
        ]

    def __str__(self) -> str:
        return f"{self.reviewer_name} {self.verdict}d request {self.request_id}"
