"""Every change to masking policies goes through these functions (audit included)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from audit.actions import record
from masking import validate_masking_spec
from policies.models import MaskingBinding, MaskingPolicy

Binding = tuple[str, str | None]  # (connection name, group name or None for every agent)


class MaskingPolicyChanged(Exception):
    """The policy is not at the version the caller edited (someone saved it meanwhile), or
    a new policy's name is taken."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_masking_spec(spec: Any) -> dict[str, Any]:
    problems = validate_masking_spec(spec, "masking")
    if problems:
        raise ValidationError({"spec": [f"{path}: {message}" for path, message in problems]})
    return json.loads(_canonical(spec))  # type: ignore[no-any-return]


def bindings_of(policy: MaskingPolicy) -> list[Binding]:
    return sorted(
        (
            (b.connection.name, b.group.name if b.group_id else None)
            for b in policy.bindings.select_related("connection", "group")
        ),
        key=lambda b: (b[0], b[1] or ""),
    )


@transaction.atomic
def do_save_masking_policy(
    actor: Any,
    name: str,
    spec: dict[str, Any],
    *,
    description: str = "",
    bindings: list[Binding] | None = None,
    expected_version: int | None = None,
) -> MaskingPolicy:
    """Create or update the masking policy ``name``; ``bindings`` (when given) replace its
    bindings. Nothing changed: nothing written.

    ``expected_version`` (the console's editor): the version the person edited, 0 for a
    new policy; anything else raises ``MaskingPolicyChanged`` and saves nothing. Every
    exemption added or removed gets its own audit record with its reason.
    """
    from gateway.models import Connection

    spec = check_masking_spec(spec)
    MaskingPolicy(name=name).full_clean(exclude=["spec"], validate_unique=False)
    policy = MaskingPolicy.objects.select_for_update().filter(name=name).first()
    before = policy.audit_snapshot() if policy is not None else None
    if expected_version is not None and (policy.version if policy is not None else 0) != expected_version:
        raise MaskingPolicyChanged(name)
    old_exemptions = list(policy.spec.get("exempt", [])) if policy is not None else []
    if policy is None:
        policy = MaskingPolicy.objects.create(name=name, description=description, spec=spec)
    else:
        changed = _canonical(spec) != _canonical(policy.spec)
        if changed or description != policy.description:
            policy.description = description
            if changed:
                policy.spec = spec
                policy.version += 1
            policy.save()
    if bindings is not None and sorted(bindings, key=lambda b: (b[0], b[1] or "")) != bindings_of(policy):
        policy.bindings.all().delete()
        for connection_name, group_name in bindings:
            connection = Connection.objects.filter(name=connection_name).first()
            if connection is None:
                raise ValidationError({"bindings": [f"no connection named {connection_name!r}"]})
            group = Group.objects.get_or_create(name=group_name)[0] if group_name else None
            taken = MaskingBinding.objects.filter(connection=connection, group=group).first()
            if taken is not None:
                scope = f"group {group_name!r}" if group_name else "every agent"
                raise ValidationError(
                    {
                        "bindings": [
                            f"connection {connection_name!r} already has masking policy "
                            f"{taken.masking_policy.name!r} for {scope}"
                        ]
                    }
                )
            MaskingBinding.objects.create(masking_policy=policy, connection=connection, group=group)
    after = policy.audit_snapshot()
    if before is None:
        record(actor, "masking_policy.create", policy, after=after)
    elif before != after:
        record(actor, "masking_policy.update", policy, before=before, after=after)
    new_exemptions = list(policy.spec.get("exempt", []))
    for entry in old_exemptions:
        if entry not in new_exemptions:
            record(actor, "masking_policy.exemption_remove", policy, before={"exemption": entry})
    for entry in new_exemptions:
        if entry not in old_exemptions:
            record(
                actor,
                "masking_policy.exemption_add",
                policy,
                after={"exemption": entry},
                reason=str(entry.get("reason", "")),
            )
    return policy


@transaction.atomic
def do_delete_masking_policy(actor: Any, policy: MaskingPolicy) -> None:
    policy = MaskingPolicy.objects.select_for_update().get(pk=policy.pk)
    record(actor, "masking_policy.delete", policy, before=policy.audit_snapshot())
    policy.delete()


def do_record_sample_query(
    actor: Any, policy: MaskingPolicy, *, connection: str, query: str, rows: int, error: str = ""
) -> None:
    """Audit a sample query run from the masking policy page. ``query`` and ``error`` must
    already be masked by the policy: the audit log never holds an unmasked value."""
    record(
        actor,
        "masking_policy.sample_query",
        policy,
        connection=connection,
        query=query,
        rows=rows,
        error=error,
    )
