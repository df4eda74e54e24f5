from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Lookup
from django.db.models.expressions import Col
from django.db.models.fields.json import KeyTextTransform, KeyTransform, KeyTransformFactory
from django.utils import timezone

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from recordings.chain import VerifyResult


class SessionQuerySet(models.QuerySet["Session"]):
    def live(self) -> SessionQuerySet:
        return self.filter(status=Session.Status.LIVE)

    def ended(self) -> SessionQuerySet:
        return self.exclude(status=Session.Status.LIVE)


class SessionManager(models.Manager.from_queryset(SessionQuerySet)):  # type: ignore[misc]
    def get_queryset(self) -> SessionQuerySet:
        # The search document can reach a megabyte and is only ever read by PostgreSQL.
        return super().get_queryset().defer("search_vector")  # type: ignore[no-any-return]


class Session(models.Model):
    """One agent session through the gateway, on any protocol.

    Names are copied beside the foreign keys so a recording stays readable after the
    agent, person or connection it names is deleted.
    """

    class Status(models.TextChoices):
        LIVE = "live"
        ENDED = "ended"
        TERMINATED = "terminated"
        # The gateway serving it stopped without ending it (killed, its host lost): closed
        # and sealed by another gateway (``recordings.writer.close_abandoned``).
        INTERRUPTED = "interrupted"

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
    # The TLS of the agent's connection to the gateway ("TLSv1.3, SSLRequest"; "TLSv1.3,
    # direct"), empty when it was not encrypted.
    client_tls = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.LIVE, db_index=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # While live: when the gateway serving it last said it still does (each written batch,
    # and a heartbeat while the session is idle). A live session not heard of for
    # ``RECORDING_ABANDONED_SECONDS`` lost its gateway and is closed by another one.
    gateway_seen_at = models.DateTimeField(null=True, blank=True)
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
    # The distinct words of the session's statements and typed input, without positions
    # (PostgreSQL only; see recordings.search): written once, when the session is sealed,
    # from the words its batches added to ``SearchWords`` meanwhile.
    search_vector = SearchVectorField(null=True, blank=True, editable=False)

    objects = SessionManager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["agent_name", "-started_at"]),
            models.Index(fields=["connection_name", "-started_at"]),
            # The sessions page pages by (started_at, id): keyset pagination needs both.
            models.Index(fields=["-started_at", "-id"], name="recordings_session_page"),
            models.Index(fields=["on_behalf_of_name", "-started_at"], name="recordings_session_person"),
            # Retention looks for ended sessions by end time.
            models.Index(fields=["ended_at"], name="recordings_session_ended"),
        ]

    def __str__(self) -> str:
        return f"{self.protocol} {self.agent_name}@{self.connection_name} {self.started_at:%Y-%m-%d %H:%M}"

    def ordered_events(self) -> models.QuerySet[Event]:
        """The session's events in recording order (what replay and verification read)."""
        return self.events.order_by("seq")

    def verify(self, public_keys: Mapping[str, Ed25519PublicKey] | None = None) -> VerifyResult:
        """Check this session's chain, its row's counters and, once ended, its seal.

        ``public_keys`` maps key ids to keys; by default the keys this installation knows
        (``recordings.keys.verification_keys()``). A live session is checked up to the
        events its row already counts, since more may be committed while it is read.
        """
        from recordings import chain

        if public_keys is None:
            from recordings.keys import verification_keys

            public_keys = verification_keys()
        live = self.status == Session.Status.LIVE
        events = self.ordered_events()
        if live:
            events = events.filter(seq__lte=self.event_count)
        rows = events.values_list("seq", "at", "offset_ms", "kind", "payload", "hash", named=True)
        result = chain.verify_chain(self.pk, rows.iterator(chunk_size=2000))
        if not result.ok:
            return result

        def broken(reason: str, seq: int | None = None) -> VerifyResult:
            return chain.VerifyResult(False, seq, reason, result.event_count, result.last_hash)

        if result.event_count < self.event_count:
            return broken(
                f"event {result.event_count + 1} is missing (the session records {self.event_count} events)",
                result.event_count + 1,
            )
        if result.event_count > self.event_count:
            return broken(
                f"event {self.event_count + 1} was added after the session counted {self.event_count} events",
                self.event_count + 1,
            )
        if result.event_count and result.last_hash != self.last_hash:
            return broken("the session's last hash does not match its events")
        mismatch = self._row_mismatch()
        if mismatch is not None:
            return broken(mismatch[1], mismatch[0])
        if live:
            return result
        if not self.seal:
            return broken("the session has ended but is not sealed")
        key = public_keys.get(self.signing_key_id)
        if key is None:
            return broken(f"the seal was made by an unknown key {self.signing_key_id or '(none)'}")
        if not chain.verify_seal(key, self.pk, result.last_hash, result.event_count, self.seal):
            return broken("the seal does not match the session's last hash and event count")
        return result

    def _row_mismatch(self) -> tuple[int, str] | None:
        """The session row is not chained; its session_start and session_end events are.

        A row field that differs from them was edited (or the event was): reported as a
        break of that event.
        """
        first = self.events.filter(seq=1).values("at", "kind", "payload").first()
        if first is not None:
            payload = first["payload"] if isinstance(first["payload"], dict) else {}
            if first["kind"] != Event.Kind.SESSION_START:
                return 1, "event 1 is not the session start"
            for key, attr in _START_FIELDS.items():
                if payload.get(key, "") != getattr(self, attr):
                    return 1, f"the session's {attr} differs from what event 1 recorded"
            if first["at"] != self.started_at:
                return 1, "the session's start time differs from what event 1 recorded"
        if self.status == Session.Status.LIVE:
            return None
        end = self.events.filter(seq=self.event_count).values("kind", "payload").first()
        if end is None or end["kind"] != Event.Kind.SESSION_END:
            # A recording cut short (strict mode failure) ends without session_end; the
            # end reason says so.
            return None
        payload = end["payload"] if isinstance(end["payload"], dict) else {}
        if payload.get("status") != self.status or not self.end_reason.startswith(
            str(payload.get("reason", ""))[:255]
        ):
            return self.event_count, f"the session's end differs from what event {self.event_count} recorded"
        return None


class _AsJsonb(models.Func):
    """A ``json`` column read as ``jsonb`` (PostgreSQL): what lookups compare with."""

    output_field = models.JSONField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        sql, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            return f"({sql})::jsonb", params
        return sql, params


class _PayloadKey(KeyTransformFactory):
    def __call__(self, *args: Any, **kwargs: Any) -> KeyTransform:
        lhs, *rest = args
        return KeyTransform(self.key_name, _AsJsonb(lhs), *rest, **kwargs)


@functools.cache
def _as_jsonb_lookup(lookup: type[Lookup]) -> type[Lookup]:
    """``lookup`` comparing the ``json`` column read as ``jsonb`` (PostgreSQL)."""

    def process_lhs(self: Lookup, compiler: Any, connection: Any, lhs: Any = None) -> tuple[str, Any]:
        return lookup.process_lhs(self, compiler, connection, _AsJsonb(self.lhs if lhs is None else lhs))

    return type(lookup.__name__, (lookup,), {"process_lhs": process_lhs})


class PayloadField(models.JSONField):
    """An event's payload: JSON stored as written, in a ``json`` column on PostgreSQL.

    ``jsonb`` parses every value into its binary form on the way in: a fifth of what the
    recording database spent per recorded statement (docs/performance-log.md, "Recording's
    cost split three ways"). Events are written once, in bulk, and read back whole far
    more often than they are searched, so the text is kept as the writer sent it (the
    canonical JSON the chain hashes). Lookups (``payload__text="..."``,
    ``payload__result__masked__gt=0``, ``payload__contains={...}``) read the column as
    ``jsonb`` in that query, so they behave as on any ``JSONField``;
    ``KeyTextTransform("by", "payload")`` (``->>``) reads ``json`` directly, which is what
    the approval index is built on. Other databases keep Django's own type.
    """

    def db_type(self, connection: Any) -> str | None:
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def get_transform(self, name: str) -> Any:
        transform = super().get_transform(name)
        if isinstance(transform, KeyTransformFactory):
            return _PayloadKey(name)
        return transform

    def get_lookup(self, lookup_name: str) -> Any:
        lookup = super().get_lookup(lookup_name)
        if lookup is None:
            return None
        return _as_jsonb_lookup(lookup)  # payload__contains={...}, payload__has_key="by"...

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(expression, Col) and not isinstance(value, str) and connection.vendor == "postgresql":
            return value  # psycopg decodes json itself (Django has it read jsonb as text)
        return super().from_db_value(value, expression, connection)


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
        DROPPED = "dropped"
        SESSION_END = "session_end"

    # No index of its own: the unique (session, seq) index serves every lookup by session,
    # and a second one would cost every recorded event one more index insertion. No
    # foreign key in the database either: triggers keep the reference, checking a batch's
    # rows once per statement instead of one query per row (``recordings.integrity``).
    session = models.ForeignKey(
        Session, on_delete=models.CASCADE, related_name="events", db_index=False, db_constraint=False
    )
    seq = models.PositiveIntegerField()
    at = models.DateTimeField()
    offset_ms = models.FloatField(help_text="Milliseconds since the session started.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    payload = PayloadField(default=dict)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="event_seq_unique")]
        indexes = [
            # Who decided a held statement: reviewers may see the sessions they decided in.
            models.Index(
                KeyTextTransform("by", "payload"),
                "session",
                condition=models.Q(kind="approval"),
                name="recordings_event_approval_by",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq} {self.kind}"


class SearchWords(models.Model):
    """The searchable words of one written batch of a session not merged yet (PostgreSQL
    only; see ``recordings.search``): a row per batch, so that writing a batch costs what
    its own words cost, however long the session already is. Sealing the session folds
    its rows into ``Session.search_vector`` and deletes them."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="+")
    words = SearchVectorField()

    def __str__(self) -> str:
        return f"words of {self.session_id}"


def masked_by_entity(
    session_ids: Iterable[uuid.UUID], since: datetime | None = None
) -> dict[uuid.UUID, dict[str, int]]:
    """Values masked per entity in each session, from the ``masked_entities`` of its
    results (``result`` events, and statement events with their result joined), optionally
    only the events at or after ``since``; sessions that masked nothing are absent.
    Entities are ordered by count, highest first."""
    events = Event.objects.filter(
        models.Q(kind=Event.Kind.RESULT, payload__masked__gt=0)
        | models.Q(kind=Event.Kind.STATEMENT, payload__result__masked__gt=0),
        session_id__in=list(session_ids),
    )
    if since is not None:
        events = events.filter(at__gte=since)
    found: dict[uuid.UUID, dict[str, int]] = {}
    rows = events.values_list("session_id", "payload__masked_entities", "payload__result__masked_entities")
    for session_id, own, joined in rows.iterator(chunk_size=2000):
        entities = own if own is not None else joined
        if not isinstance(entities, dict):
            continue
        counts = found.setdefault(session_id, {})
        for entity, count in entities.items():
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                counts[str(entity)] = counts.get(str(entity), 0) + count
    return {
        session_id: dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        for session_id, counts in found.items()
        if counts
    }


def total_by_entity(per_session: Mapping[uuid.UUID, Mapping[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for counts in per_session.values():
        for entity, count in counts.items():
            totals[entity] = totals.get(entity, 0) + count
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


_START_FIELDS = {
    "protocol": "protocol",
    "agent": "agent_name",
    "connection": "connection_name",
    "on_behalf_of": "on_behalf_of_name",
    "client_address": "client_address",
    "application_name": "application_name",
    "client_tls": "client_tls",
}


class TerminationRequest(models.Model):
    """A person asked for a live session to be terminated (``do_terminate_session``).

    The gateway serving the session learns of it from the channel layer at once, or, when
    that message cannot reach it (no shared channel layer, as in the embedded default; a
    lost message), from its poll of this table (``recordings.live``). The first request
    wins: its person and reason end the recording.
    """

    session = models.OneToOneField(
        Session, primary_key=True, on_delete=models.CASCADE, related_name="termination_request"
    )
    requested_by = models.CharField(max_length=150)
    reason = models.CharField(max_length=255, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"terminate {self.session_id} ({self.requested_by})"


class ConnectionRule(models.Model):
    """Retention and legal hold for the recordings of one connection.

    Keyed by the connection's name, as sessions are, so the rule outlives the connection.
    ``retention_days`` None follows ``RECORDING_RETENTION_DAYS``; 0 keeps them for ever. A
    legal hold stops retention from deleting any of them.
    """

    connection_name = models.CharField(max_length=63, unique=True)
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    legal_hold = models.BooleanField(default=False)
    hold_reason = models.CharField(max_length=255, blank=True)
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["connection_name"]

    def __str__(self) -> str:
        return f"recordings of {self.connection_name}"

    def audit_snapshot(self) -> dict[str, object]:
        return {
            "connection": self.connection_name,
            "retention_days": self.retention_days,
            "legal_hold": self.legal_hold,
            "hold_reason": self.hold_reason,
        }
