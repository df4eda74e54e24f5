from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class SessionQuerySet(models.QuerySet["Session"]):
    def live(self) -> SessionQuerySet:
        return self.filter(status=Session.Status.LIVE)


class Session(models.Model):
    """One agent session through the gateway, on any protocol.

    Names are copied beside the foreign keys so a recording stays readable after the
    agent, person or connection it names is deleted.
    """

    class Status(models.TextChoices):
        LIVE = "live"
        ENDED = "ended"
        TERMINATED = "terminated"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    protocol = models.CharField(max_length=16)
    agent = models.ForeignKey(
        "identity.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    agent_name = models.CharField(max_length=255)
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    on_behalf_of_name = models.CharField(max_length=150, blank=True)
    connection = models.ForeignKey(
        "gateway.Connection", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    connection_name = models.CharField(max_length=63)
    client_address = models.CharField(max_length=64, blank=True)
    application_name = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.LIVE, db_index=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=255, blank=True)
    # Counters kept up to date by the writer, for filters and the dashboard.
    event_count = models.PositiveIntegerField(default=0)
    statement_count = models.PositiveIntegerField(default=0)
    denied_count = models.PositiveIntegerField(default=0)
    review_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    masked_count = models.PositiveIntegerField(default=0)
    dropped_events = models.PositiveIntegerField(default=0)
    # Hash of the last persisted event and, once ended, the Ed25519 seal over it.
    last_hash = models.CharField(max_length=64, blank=True)
    seal = models.TextField(blank=True)
    sealed_at = models.DateTimeField(null=True, blank=True)
    signing_key_id = models.CharField(max_length=64, blank=True)
    legal_hold = models.BooleanField(default=False)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["agent_name", "-started_at"]),
            models.Index(fields=["connection_name", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.protocol} {self.agent_name}@{self.connection_name} {self.started_at:%Y-%m-%d %H:%M}"


class Event(models.Model):
    """One append-only, hash-chained entry of a session's recording."""

    class Kind(models.TextChoices):
        SESSION_START = "session_start"
        STATEMENT = "statement"
        DECISION = "decision"
        RESULT = "result"
        ERROR = "error"
        NOTICE = "notice"
        OUTPUT = "output"
        INPUT = "input"
        APPROVAL = "approval"
        SESSION_END = "session_end"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    at = models.DateTimeField()
    offset_ms = models.FloatField(help_text="Milliseconds since the session started.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    payload = models.JSONField(default=dict)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="event_seq_unique")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.kind}"
