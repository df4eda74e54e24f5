"""Every change to connections goes through these functions (audit included).

Secrets are write-only: callers pass ``secret_values`` ({"password": "..."}; an empty
value clears that field) and never get them back from here; audit records name the
secret fields that are set or changed, never their values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from audit.actions import record
from gateway import secrets
from gateway.models import Connection
from gateway.options import SECRET_FIELDS, host_problem, option_problems
from policies.models import Policy

EDITABLE_FIELDS = ("kind", "description", "host", "port", "database", "username", "options", "enabled")


def _resolve_groups(groups: Iterable[Group | str]) -> list[Group]:
    resolved: list[Group] = []
    missing: list[str] = []
    for group in groups:
        if isinstance(group, Group):
            resolved.append(group)
            continue
        found = Group.objects.filter(name=group).first()
        if found is None:
            missing.append(group)
        else:
            resolved.append(found)
    if missing:
        raise ValidationError({"groups": [f"unknown group {name!r}" for name in missing]})
    return resolved


def _validate(connection: Connection) -> None:
    errors: dict[str, list[str]] = {}
    try:
        connection.full_clean(exclude=["secret_ciphertext", "policy"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    host_error = host_problem(connection.kind, connection.host)
    if host_error:
        errors.setdefault("host", []).append(host_error)
    if "port" not in errors and connection.port is not None and not 1 <= int(connection.port) <= 65535:
        errors.setdefault("port", []).append("must be between 1 and 65535")
    option_errors = option_problems(connection.kind, connection.options)
    if option_errors:
        errors["options"] = [f"{key}: {message}" if key else message for key, message in option_errors]
    if errors:
        raise ValidationError(errors)


_STORED_FIELDS = ("name", *EDITABLE_FIELDS, "policy_id", "secret_ciphertext")


def _check_secret_fields(kind: str, values: dict[str, str]) -> None:
    allowed = SECRET_FIELDS.get(kind, ())
    unknown = sorted(key for key in values if key not in allowed)
    if unknown:
        raise ValidationError(
            {
                "secret_values": [
                    f"a {kind} connection has no secret {key!r} (known: {', '.join(allowed)})"
                    for key in unknown
                ]
            }
        )


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
    description: str = "",
    options: dict[str, Any] | None = None,
    groups: Iterable[Group | str] = (),
    policy: Policy | None = None,
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
        description=description,
        options=dict(options or {}),
        policy=policy,
        enabled=enabled,
    )
    _validate(connection)
    values = dict(secret_values or {})
    _check_secret_fields(kind, values)
    secrets.set_secrets(connection, values, replace=True)
    group_objects = _resolve_groups(groups)
    connection.save()
    connection.groups.set(group_objects)
    record(actor, "connection.create", connection, after=connection.audit_snapshot())
    return connection


@transaction.atomic
def do_update_connection(
    actor: Any,
    connection: Connection,
    *,
    secret_values: dict[str, str] | None = None,
    replace_secrets: bool = False,
    **changes: Any,
) -> Connection:
    """Change the fields named in ``changes`` (and ``groups``, ``policy``).

    ``secret_values`` are merged into the stored secrets (an empty value clears that
    field); with ``replace_secrets`` they replace them all, which is also the way to
    recover a connection whose stored secret can no longer be decrypted.
    """
    connection = Connection.objects.select_for_update().get(pk=connection.pk)
    before = connection.audit_snapshot()
    stored = {field: getattr(connection, field) for field in _STORED_FIELDS}
    group_names = changes.pop("groups", None)
    if "policy" in changes:
        connection.policy = changes.pop("policy")
    for field, value in changes.items():
        # Renaming is allowed: agents use the new name from then on.
        if field != "name" and field not in EDITABLE_FIELDS:
            raise ValueError(f"cannot change connection field {field!r}")
        setattr(connection, field, value)
    _validate(connection)

    secrets_changed: list[str] = []
    if secret_values is not None:
        values = dict(secret_values)
        _check_secret_fields(connection.kind, values)
        original = connection.secret_ciphertext
        try:
            old = secrets.get_secrets(connection)
        except secrets.SecretDecryptionError:
            if not replace_secrets:
                raise
            old = {}
        secrets.set_secrets(connection, values, replace=replace_secrets)
        new = secrets.get_secrets(connection)
        secrets_changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        if not secrets_changed and old:
            # Same values: keep the stored ciphertext rather than churn it.
            connection.secret_ciphertext = original

    # A new kind must not keep secrets it has no use for (an SSH key on a PostgreSQL target).
    if connection.kind != stored["kind"]:
        _check_secret_fields(connection.kind, secrets.get_secrets(connection))

    # Saved only when something changed, so that an update to the same values (a
    # repeated apply) leaves the row exactly as it was, updated_at included.
    if any(getattr(connection, field) != value for field, value in stored.items()):
        connection.save()
    if group_names is not None:
        wanted = _resolve_groups(group_names)
        if {g.pk for g in wanted} != set(connection.groups.values_list("pk", flat=True)):
            connection.groups.set(wanted)
    after = connection.audit_snapshot()
    if after != before or secrets_changed:
        detail = {"secrets_changed": secrets_changed} if secrets_changed else {}
        record(actor, "connection.update", connection, before=before, after=after, **detail)
    return connection


@transaction.atomic
def do_delete_connection(actor: Any, connection: Connection) -> None:
    connection = Connection.objects.select_for_update().get(pk=connection.pk)
    before = connection.audit_snapshot()
    record(actor, "connection.delete", connection, before=before)
    connection.delete()


@dataclass(frozen=True)
class RotationResult:
    rotated: int  # secrets re-encrypted under the first key
    current: int  # secrets that were already under the first key


@transaction.atomic
def do_rotate_secrets(actor: Any) -> RotationResult:
    """Re-encrypt every connection secret under the first key of AIRLOCK_SECRET_KEYS.

    All or nothing: a secret that no configured key decrypts stops the rotation (naming
    the connection) and nothing is changed, so an old key is never dropped too early.
    """
    rotated = current = 0
    undecryptable: list[str] = []
    connections = list(Connection.objects.select_for_update().exclude(secret_ciphertext="").order_by("pk"))
    for connection in connections:
        if secrets.is_current(connection.secret_ciphertext):
            current += 1
            continue
        try:
            connection.secret_ciphertext = secrets.rotate_ciphertext(connection.secret_ciphertext)
        except secrets.SecretDecryptionError:
            undecryptable.append(connection.name)
            continue
        # update() rather than save(): only the ciphertext changes, updated_at stays.
        Connection.objects.filter(pk=connection.pk).update(secret_ciphertext=connection.secret_ciphertext)
        rotated += 1
    if undecryptable:
        raise secrets.SecretDecryptionError(
            "no configured key decrypts the stored secret of connection(s) "
            f"{', '.join(undecryptable)}; nothing was re-encrypted"
        )
    record(actor, "secrets.rotate", None, rotated=rotated, already_current=current)
    return RotationResult(rotated=rotated, current=current)
