"""Every change to recordings, and every access worth answering for, goes through here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit import actions as audit
from audit.models import AuditRecord
from recordings import live
from recordings.models import ConnectionRule, Session, TerminationRequest

log = logging.getLogger("airlock.recordings")

# A person reading a replay fetches many pages of events: one audit record per person,
# session and this many minutes says they looked, without a record per page.
VIEW_RECORD_MINUTES = 30
RETENTION_CHUNK = 500  # sessions deleted per transaction (and per audit record)
REASON_MAX = 200


def _clean_reason(reason: str) -> str:
    reason = " ".join((reason or "").split())
    if len(reason) > REASON_MAX:
        raise ValidationError(f"Keep the reason under {REASON_MAX} characters.")
    return reason


# --- access records -----------------------------------------------------------------------


def record_view(
    actor: Any, session: Session, *, how: str, source_address: str = "", once: bool = False
) -> None:
    """Write ``recording.view`` (``how``: page, events, live). ``once``: skip when this
    person already has one for this session in the last ``VIEW_RECORD_MINUTES``."""
    if once:
        since = timezone.now() - timedelta(minutes=VIEW_RECORD_MINUTES)
        if AuditRecord.objects.filter(
            target_type=Session._meta.label_lower,
            target_id=str(session.pk),
            action="recording.view",
            actor_user=actor,
            at__gte=since,
        ).exists():
            return
    audit.record(actor, "recording.view", session, source_address=source_address, how=how)


def record_export(actor: Any, session: Session, *, fmt: str, source_address: str = "") -> None:
    audit.record(
        actor,
        "recording.export",
        session,
        source_address=source_address,
        format=fmt,
        events=session.event_count,
        sealed=bool(session.seal),
    )


# --- termination --------------------------------------------------------------------------


def _publish(group: str, message: dict[str, Any]) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        log.error("no channel layer: %s not sent to %s", message["type"], group)
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        log.exception("%s could not be sent to %s", message["type"], group)


def do_terminate_session(actor: Any, session: Session, reason: str, *, source_address: str = "") -> None:
    """Ask the gateway serving ``session`` to close it now.

    Stores a ``TerminationRequest`` (the first one stands; asking again sends the message
    again), writes ``session.terminate`` to the audit log and, after commit, publishes
    ``recordings.live.terminate_message`` on ``gateway-session-<id>``. The gateway learns of
    it from that message or, within ``RECORDING_TERMINATE_POLL_SECONDS``, from its poll of
    the requests, closes the connection with an error naming who and why, and ends the
    recording with status ``terminated``. Raises ``ValidationError`` when the session is
    not live or the reason is missing.
    """
    reason = _clean_reason(reason)
    if not reason:
        raise ValidationError("Say why the session is terminated.")
    by = actor.get_username()
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        if locked.status != Session.Status.LIVE:
            raise ValidationError("The session is no longer live.")
        request, created = TerminationRequest.objects.get_or_create(
            session=locked, defaults={"requested_by": by, "reason": reason}
        )
        audit.record(
            actor,
            "session.terminate",
            locked,
            source_address=source_address,
            reason=reason,
            by=by,
            **({} if created else {"first_requested_by": request.requested_by}),
        )
        message = live.terminate_message(locked.pk, request.requested_by, request.reason)
        transaction.on_commit(lambda: _publish(live.gateway_group(locked.pk), message))


# --- legal holds --------------------------------------------------------------------------


def do_set_legal_hold(actor: Any, session: Session, hold: bool, reason: str = "") -> Session:
    """Set or clear the legal hold of one session (retention never deletes a held session)."""
    reason = _clean_reason(reason)
    if hold and not reason:
        raise ValidationError("Say why the session is held.")
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        if locked.legal_hold == hold:
            return locked
        Session.objects.filter(pk=locked.pk).update(legal_hold=hold)
        audit.record(
            actor,
            "recording.hold" if hold else "recording.release",
            locked,
            before={"legal_hold": locked.legal_hold},
            after={"legal_hold": hold},
            reason=reason,
        )
        locked.legal_hold = hold
    return locked


def _connection_rule(
    actor: Any, connection_name: str, change: dict[str, Any], action: str, **detail: Any
) -> ConnectionRule:
    from gateway.models import Connection

    connection_name = connection_name.strip()
    if not connection_name:
        raise ValidationError("Name the connection.")
    with transaction.atomic():
        rule, _ = ConnectionRule.objects.select_for_update().get_or_create(connection_name=connection_name)
        before = rule.audit_snapshot()
        for name, value in change.items():
            setattr(rule, name, value)
        if rule.audit_snapshot() == before:
            return rule
        rule.updated_by = getattr(actor, "get_username", lambda: str(actor))()
        rule.updated_at = timezone.now()
        rule.save()
        audit.record(
            actor,
            action,
            Connection.objects.filter(name=connection_name).first() or rule,
            before=before,
            after=rule.audit_snapshot(),
            **detail,
        )
    return rule


def do_set_connection_hold(actor: Any, connection_name: str, hold: bool, reason: str = "") -> ConnectionRule:
    """Hold (or release) every recording of the connection named ``connection_name``."""
    reason = _clean_reason(reason)
    if hold and not reason:
        raise ValidationError("Say why the connection's recordings are held.")
    return _connection_rule(
        actor,
        connection_name,
        {"legal_hold": hold, "hold_reason": reason if hold else ""},
        "recordings.connection_hold" if hold else "recordings.connection_release",
        reason=reason,
    )


def do_set_connection_retention(actor: Any, connection_name: str, days: int | None) -> ConnectionRule:
    """Keep the connection's recordings ``days`` days after a session ends (None: the
    default, 0: for ever)."""
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
        raise ValidationError("Retention is a whole number of days, 0 for ever, or empty for the default.")
    return _connection_rule(
        actor, connection_name, {"retention_days": days}, "recordings.connection_retention"
    )


# --- retention ------------------------------------------------------------------------------


@dataclass
class RetentionRule:
    """Sessions of these connections (all others when ``connections`` is None) are kept
    ``days`` days after they end; 0 keeps them for ever."""

    name: str
    days: int
    connections: frozenset[str] | None = None
    deleted: int = 0
    excluded: frozenset[str] = field(default_factory=frozenset)


def retention_rules() -> list[RetentionRule]:
    """The default rule (``RECORDING_RETENTION_DAYS``) and one per connection with its own."""
    overrides = dict(
        ConnectionRule.objects.filter(retention_days__isnull=False).values_list(
            "connection_name", "retention_days"
        )
    )
    rules = [
        RetentionRule(
            "default",
            int(getattr(settings, "RECORDING_RETENTION_DAYS", 0)),
            None,
            excluded=frozenset(overrides),
        )
    ]
    rules += [
        RetentionRule(f"connection {name}", days, frozenset({name}))
        for name, days in sorted(overrides.items())
    ]
    return rules


def _expired(rule: RetentionRule, cutoff: datetime) -> Any:
    held = ConnectionRule.objects.filter(legal_hold=True).values("connection_name")
    sessions = (
        Session.objects.ended()
        .filter(ended_at__lt=cutoff, legal_hold=False)
        .exclude(connection_name__in=held)
    )
    if rule.connections is not None:
        return sessions.filter(connection_name__in=rule.connections)
    return sessions.exclude(connection_name__in=rule.excluded)


def do_apply_retention(now: datetime | None = None) -> list[RetentionRule]:
    """Delete the recordings every retention rule says are expired, except held ones.

    Each chunk of deleted sessions is one transaction with one ``recording.retention_delete``
    audit record naming the rule, the cut-off and every session it deleted.
    """
    now = now or timezone.now()
    rules = retention_rules()
    for rule in rules:
        if rule.days <= 0:
            continue
        cutoff = now - timedelta(days=rule.days)
        while True:
            with transaction.atomic():
                chunk = list(
                    _expired(rule, cutoff)
                    .select_for_update(skip_locked=True)
                    .order_by("ended_at")
                    .values("pk", "agent_name", "connection_name", "started_at", "ended_at", "event_count")[
                        :RETENTION_CHUNK
                    ]
                )
                if not chunk:
                    break
                Session.objects.filter(pk__in=[row["pk"] for row in chunk]).delete()
                audit.record(
                    "retention",
                    "recording.retention_delete",
                    None,
                    rule=rule.name,
                    retention_days=rule.days,
                    cutoff=cutoff.isoformat(),
                    deleted=len(chunk),
                    sessions=[
                        {
                            "id": str(row["pk"]),
                            "agent": row["agent_name"],
                            "connection": row["connection_name"],
                            "started_at": row["started_at"].isoformat(),
                            "ended_at": row["ended_at"].isoformat(),
                            "events": row["event_count"],
                        }
                        for row in chunk
                    ],
                )
                rule.deleted += len(chunk)
    return rules
