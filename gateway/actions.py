"""Every change to connections goes through these functions (audit included).

Secrets are write-only: they come in through ``secret_values`` ({"password": ...}), are
encrypted by ``gateway.secrets`` and appear in audit records only as the names of the
fields that are set (``Connection.audit_snapshot``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from audit.actions import record
from gateway.models import Connection
from gateway.secrets import get_secrets, set_secrets

EDITABLE_FIELDS = frozenset(
    {"name", "kind", "description", "host", "port", "database", "username", "options", "policy", "enabled"}
)


def _groups(groups: Iterable[Group | str]) -> list[Group]:
    return [g if isinstance(g, Group) else Group.objects.get_or_create(name=g)[0] for g in groups]


@transaction.atomic
def do_create_connection(
    actor: Any,
    *,
    name: str,
    kind: str,
    host: str,
    port: int | None = None,
    database: str = "",
    username: str = "",
    options: dict[str, Any] | None = None,
    description: str = "",
    groups: Iterable[Group | str] = (),
    policy: Any = None,
    enabled: bool = True,
    secret_values: dict[str, str] | None = None,
) -> Connection:
    connection = Connection(
        name=name,
        kind=kind,
        host=host,
        port=port,
        database=database,
        username=username,
        options=dict(options or {}),
        description=description,
        policy=policy,
        enabled=enabled,
    )
    if secret_values:
        set_secrets(connection, secret_values, replace=True)
    connection.full_clean()
    connection.save()
    connection.groups.set(_groups(groups))
    record(actor, "connection.create", connection, after=connection.audit_snapshot())
    return connection


@transaction.atomic
def do_update_connection(
    actor: Any,
    connection: Connection,
    *,
    groups: Iterable[Group | str] | None = None,
    secret_values: dict[str, str] | None = None,
    **changes: Any,
) -> Connection:
    """Change fields, groups and secrets. In ``secret_values`` an empty value clears a field;
    a field not named keeps its current value."""
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"cannot change connection field(s) {', '.join(sorted(unknown))}")
    connection = Connection.objects.select_for_update().get(pk=connection.pk)
    before = connection.audit_snapshot()
    secrets_before = get_secrets(connection) if secret_values else {}
    for field, value in changes.items():
        setattr(connection, field, value)
    if secret_values:
        set_secrets(connection, secret_values)
    secrets_after = get_secrets(connection) if secret_values else {}
    changed_secrets = sorted(
        key
        for key in set(secrets_before) | set(secrets_after)
        if secrets_before.get(key) != secrets_after.get(key)
    )
    connection.full_clean()
    connection.save()
    if groups is not None:
        connection.groups.set(_groups(groups))
    after = connection.audit_snapshot()
    if after != before:
        extra = {"secrets_changed": changed_secrets} if changed_secrets else {}
        record(actor, "connection.update", connection, before=before, after=after, **extra)
    elif changed_secrets:
        # A replaced secret leaves the snapshot equal (it holds names only) but is a change.
        record(actor, "connection.secrets_update", connection, fields=changed_secrets)
    return connection


@transaction.atomic
def do_delete_connection(actor: Any, connection: Connection) -> None:
    connection = Connection.objects.select_for_update().get(pk=connection.pk)
    before = connection.audit_snapshot()
    record(actor, "connection.delete", connection, before=before)
    connection.delete()
