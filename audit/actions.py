"""Writing audit records. Every action function that changes state calls ``record``."""

from __future__ import annotations

from typing import Any

from django.db import models

from audit.models import AuditRecord

SYSTEM = "system"


def _actor_fields(actor: Any) -> dict[str, Any]:
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
    fields = _actor_fields(actor)
    if target is not None:
        fields.update(
            target_type=target._meta.label_lower,
            target_id=str(target.pk),
            target_repr=str(target)[:255],
        )
    return AuditRecord.objects.create(
        action=action,
        before=before,
        after=after,
        detail=detail,
        source_address=source_address,
        **fields,
    )
