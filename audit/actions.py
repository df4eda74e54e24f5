"""Writing audit records. Every action function that changes state calls ``record``."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import models, transaction

from audit.models import AuditRecord

SYSTEM = "system"
log = logging.getLogger("airlock.audit")


def actor_fields(actor: Any) -> dict[str, Any]:
    """The actor columns of an audit record for ``actor`` (see ``record``)."""
    from identity.models import Agent

    if actor is None:
        return {"actor_kind": AuditRecord.ActorKind.SYSTEM, "actor": SYSTEM}
    if isinstance(actor, str):
        return {"actor_kind": AuditRecord.ActorKind.SYSTEM, "actor": actor}
    if isinstance(actor, Agent):
        return {"actor_kind": AuditRecord.ActorKind.AGENT, "actor": actor.name}
    if getattr(actor, "is_authenticated", False):
        return {
            "actor_kind": AuditRecord.ActorKind.PERSON,
            "actor": actor.get_username(),
            "actor_user": actor,
        }
    return {"actor_kind": AuditRecord.ActorKind.SYSTEM, "actor": SYSTEM}


def record(
    actor: Any,
    action: str,
    target: models.Model | None = None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    source_address: str = "",
    **detail: Any,
) -> AuditRecord:
    """Write one audit record. ``actor`` is a User, an Agent, a component name or None.

    ``before`` and ``after`` must be snapshots without secrets (models offer
    ``audit_snapshot()`` for that).
    """
    fields = actor_fields(actor)
    if target is not None:
        fields.update(
            target_type=target._meta.label_lower,
            target_id=str(target.pk),
            target_repr=str(target)[:255],
        )
    created = AuditRecord.objects.create(
        action=action,
        before=before,
        after=after,
        detail=detail,
        source_address=source_address,
        **fields,
    )
    forward_after_commit(created.pk)
    return created


def forward_after_commit(record_id: int) -> None:
    """Queue the record for the audit sink once its transaction commits (when a sink is
    configured): for records written by ``record`` and by statements that write their own."""
    if getattr(settings, "AUDIT_FORWARD_URL", ""):
        transaction.on_commit(lambda: _queue_forward(record_id), robust=True)


def _queue_forward(record_id: int) -> None:
    """Hand the record to the forwarding task; a broker that is down costs a log line only."""
    from audit.tasks import forward_record

    try:
        forward_record.apply_async((record_id,), retry=False)
    except Exception as exc:
        log.error("audit record %s not queued for forwarding: %s", record_id, type(exc).__name__)
