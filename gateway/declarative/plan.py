"""``manage.py apply``: check a desired state against the database, plan, and apply it.

Order of work, all in one transaction: parse and check the file (every problem), check
references against the file and the database (every problem), compute the changes, and
only then make them, each through its action function (so each writes its own audit
record). Nothing that is already as the file says is touched, so a second apply of the
same file writes nothing at all.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from django.db import transaction

from audit.actions import record
from gateway import actions as connection_actions
from gateway import secrets
from gateway.declarative.loader import ConfigError, Problem, line_of, load_yaml
from gateway.declarative.schema import (
    AgentSpec,
    ConnectionSpec,
    DesiredState,
    GroupSpec,
    PolicySpec,
    check_document,
)
from gateway.models import Connection
from identity import actions as identity_actions
from identity.models import Agent, User
from policies import actions as policy_actions
from policies.models import Policy

APPLY_ACTOR = "apply"


@dataclass
class Change:
    """One change apply makes (or, with --dry-run, would make). Never holds a secret."""

    kind: str  # group | policy | connection | agent
    name: str
    op: str  # create | update | delete
    details: list[str]
    path: str  # where in the file (empty for deletions)
    run: Callable[[Any], None] = field(repr=False)

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.op]
        text = f"{sign} {self.kind} {self.name}"
        return f"{text}: {'; '.join(self.details)}" if self.details else text


@dataclass
class ApplyResult:
    changes: list[Change]
    dry_run: bool
    # Not errors, but worth knowing (a reviewer group with nobody in it yet).
    warnings: list[Problem] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        result = {"create": 0, "update": 0, "delete": 0}
        for change in self.changes:
            result[change.op] += 1
        return result


def environment_resolver(environ: Mapping[str, str]) -> Callable[[str], str | None]:
    """Look ``NAME`` up in ``environ``, else read the file named by ``NAME_FILE``."""

    def resolve(name: str) -> str | None:
        if name in environ:
            return environ[name]
        path = environ.get(f"{name}_FILE")
        if not path:
            return None
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{name}_FILE names {path!r}, which cannot be read ({exc.strerror})") from None
        # One trailing newline is the file's, not the secret's.
        return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")

    return resolve


def apply_config(
    text: str,
    *,
    actor: Any = APPLY_ACTOR,
    prune: bool = False,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
    source: str = "",
) -> ApplyResult:
    """Apply the YAML ``text``; raise ConfigError listing every problem (nothing changed)."""
    root = load_yaml(text)
    resolve = environment_resolver(os.environ if environ is None else environ)
    state, problems = check_document(root, resolve)
    with transaction.atomic():
        if db_connection.vendor == "postgresql":
            # Two applies at once would each plan against a state the other is changing.
            with db_connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext('airlock.apply'))")
        # References are checked even when the file has other problems, so that one
        # run lists everything that needs fixing.
        problems = problems + _with_lines(root, check_references(state, prune=prune))
        if problems:
            raise ConfigError(sorted(problems, key=lambda p: (p.line or 10**9, p.path)))
        changes = plan_changes(state, prune=prune)
        warnings = _with_lines(root, reviewer_warnings(state))
        if dry_run:
            return ApplyResult(changes=changes, dry_run=True, warnings=warnings)
        for change in changes:
            try:
                change.run(actor)
            except ValidationError as exc:
                raise ConfigError(
                    [
                        Problem(change.path or change.name, message, line_of(root, change.path))
                        for message in exc.messages
                    ]
                ) from None
            except (policy_actions.PolicyInUse, secrets.SecretDecryptionError) as exc:
                raise ConfigError(
                    [Problem(change.path or f"{change.kind} {change.name}", str(exc))]
                ) from None
        if changes:
            record(
                actor,
                "config.apply",
                None,
                source=source,
                sha256=hashlib.sha256(text.encode()).hexdigest(),
                prune=prune,
                changes=[str(change) for change in changes],
            )
    return ApplyResult(changes=changes, dry_run=False, warnings=warnings)


def _with_lines(root: Any, problems: list[Problem]) -> list[Problem]:
    return [Problem(p.path, p.message, p.line or line_of(root, p.path)) for p in problems]


# --- references ---------------------------------------------------------------------


def check_references(state: DesiredState, *, prune: bool) -> list[Problem]:
    """Every name the file uses must exist, in the file or in the database."""
    problems: list[Problem] = []
    file_groups = {g.name for g in state.groups}
    db_groups = set(Group.objects.values_list("name", flat=True))
    known_groups = file_groups | db_groups
    mentioned_users = {u for g in state.groups for u in (g.members or [])}
    mentioned_users |= {a.on_behalf_of for a in state.agents if a.on_behalf_of}
    mentioned_users |= {a.owner for a in state.agents if a.owner}
    known_users = set(User.objects.filter(username__in=mentioned_users).values_list("username", flat=True))

    def group_refs(names: list[str], path: str) -> None:
        for index, name in enumerate(names):
            if name not in known_groups:
                problems.append(
                    Problem(
                        f"{path}[{index}]", f"unknown group {name!r} (declare it under groups: or create it)"
                    )
                )

    for group in state.groups:
        for index, username in enumerate(group.members or []):
            if username not in known_users:
                problems.append(
                    Problem(f"{group.path}.members[{index}]", f"no person with username {username!r}")
                )

    file_policies = {p.name for p in state.policies}
    pruning_policies = prune and "policies" in state.sections
    db_policies = set(Policy.objects.values_list("name", flat=True))
    usable_policies = file_policies if pruning_policies else file_policies | db_policies
    for policy in state.policies:
        # The engine's own check (every problem by path), with the groups that will exist.
        problems.extend(policy.compile_problems(known_groups))

    for conn in state.connections:
        group_refs(conn.groups, f"{conn.path}.groups")
        if conn.policy and conn.policy not in usable_policies:
            if conn.policy in db_policies:
                message = f"policy {conn.policy!r} is not in the file, and --prune would delete it"
            else:
                message = f"unknown policy {conn.policy!r} (not in the file nor in the database)"
            problems.append(Problem(f"{conn.path}.policy", message))

    for agent in state.agents:
        group_refs(agent.groups, f"{agent.path}.groups")
        for key in ("on_behalf_of", "owner"):
            username = getattr(agent, key)
            if username and username not in known_users:
                problems.append(Problem(f"{agent.path}.{key}", f"no person with username {username!r}"))

    db_connections = set(Connection.objects.values_list("name", flat=True))
    file_connections = {c.name for c in state.connections}
    for masking in state.masking:
        for connection, _group, where in masking.bindings:
            if connection not in file_connections | db_connections:
                problems.append(Problem(where, f"no connection named {connection!r}"))
    if pruning_policies and not (prune and "connections" in state.sections):
        # Connections stay that the file does not describe; they must not lose their policy.
        kept = Connection.objects.exclude(policy=None).exclude(policy__name__in=file_policies)
        for conn_name, policy_name in kept.values_list("name", "policy__name"):
            if conn_name not in {c.name for c in state.connections}:
                problems.append(
                    Problem(
                        "policies",
                        f"--prune would delete policy {policy_name!r}, which connection {conn_name!r} "
                        "(not in the file) uses",
                    )
                )
    return problems


def reviewer_warnings(state: DesiredState) -> list[Problem]:
    """Reviewer groups that will exist but have no active person in them.

    Not an error for ``apply``: membership often arrives later (OIDC logins set groups),
    and the file may be applied before anyone logged in. But until someone is in the
    group, the gateway and the console refuse the policy (a review nobody can approve).
    """
    file_members = {g.name: g.members for g in state.groups if g.members is not None}
    mentioned = {name for members in file_members.values() for name in members}
    active = set(
        User.objects.filter(username__in=mentioned, is_active=True).values_list("username", flat=True)
    )
    staffed = {name for name, members in file_members.items() if active & set(members)}
    db_staffed = set(
        Group.objects.filter(user__is_active=True)
        .exclude(name__in=file_members)
        .values_list("name", flat=True)
    )
    warnings = []
    for policy in state.policies:
        for group, path in policy.reviewer_groups:
            if group not in staffed and group not in db_staffed:
                warnings.append(
                    Problem(
                        path,
                        f"reviewer group {group!r} has no active members yet: the policy is refused "
                        "until someone is in it",
                    )
                )
    return warnings


# --- the plan -----------------------------------------------------------------------


def plan_changes(state: DesiredState, *, prune: bool) -> list[Change]:
    changes: list[Change] = []
    for group in state.groups:
        changes.extend(_plan_group(group))
    for policy in state.policies:
        changes.extend(_plan_policy(policy))
    for conn in state.connections:
        changes.extend(_plan_connection(conn))
    for conn in state.connections:
        changes.extend(_plan_recordings(conn))
    for agent in state.agents:
        changes.extend(_plan_agent(agent))
    changes.extend(_plan_masking(state, prune=prune))
    if prune:
        changes.extend(_plan_prune(state))
    return changes


def _members(group: Group) -> list[str]:
    return sorted(group.user_set.values_list("username", flat=True))


def _plan_group(spec: GroupSpec) -> list[Change]:
    group = Group.objects.filter(name=spec.name).first()
    wanted = sorted(spec.members) if spec.members is not None else None

    def run(actor: Any) -> None:
        target = identity_actions.do_create_group(actor, spec.name)
        if wanted is not None:
            people = list(User.objects.filter(username__in=wanted))
            identity_actions.do_set_group_members(actor, target, people)

    if group is None:
        details = [f"members: {', '.join(wanted)}"] if wanted else []
        return [Change("group", spec.name, "create", details, spec.path, run)]
    if wanted is None:
        return []
    current = _members(group)
    if current == wanted:
        return []
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    details = [f"members +{name}" for name in added] + [f"members -{name}" for name in removed]
    return [Change("group", spec.name, "update", details, spec.path, run)]


def _plan_policy(spec: PolicySpec) -> list[Change]:
    policy = Policy.objects.filter(name=spec.name).first()

    def run(actor: Any) -> None:
        policy_actions.do_save_policy(
            actor, spec.name, spec.spec, description=spec.description, comment="manage.py apply"
        )

    if policy is None:
        return [Change("policy", spec.name, "create", [], spec.path, run)]
    details = []
    if policy_actions.canonical_spec(spec.spec) != policy_actions.canonical_spec(policy.spec):
        details.append(f"rules changed: new version {policy.version + 1}")
    if spec.description != policy.description:
        details.append("description changed")
    return [Change("policy", spec.name, "update", details, spec.path, run)] if details else []


def _plan_masking(state: Any, *, prune: bool) -> list[Change]:
    from policies import masking_actions
    from policies.models import MaskingPolicy

    changes: list[Change] = []
    if prune and "masking" in state.sections:
        keep = {m.name for m in state.masking}
        for policy in MaskingPolicy.objects.exclude(name__in=keep).order_by("name"):
            changes.append(
                Change(
                    "masking",
                    policy.name,
                    "delete",
                    [],
                    "",
                    lambda actor, policy=policy: masking_actions.do_delete_masking_policy(actor, policy),
                )
            )
    for spec in state.masking:
        wanted = sorted(((c, g) for c, g, _ in spec.bindings), key=lambda b: (b[0], b[1] or ""))

        def run(actor: Any, spec: Any = spec, wanted: list[Any] = wanted) -> None:
            masking_actions.do_save_masking_policy(
                actor, spec.name, spec.spec, description=spec.description, bindings=wanted
            )

        policy = MaskingPolicy.objects.filter(name=spec.name).first()
        if policy is None:
            changes.append(Change("masking", spec.name, "create", [], spec.path, run))
            continue
        details = []
        if policy_actions.canonical_spec(spec.spec) != policy_actions.canonical_spec(policy.spec):
            details.append(f"spec changed: new version {policy.version + 1}")
        if spec.description != policy.description:
            details.append("description changed")
        if wanted != masking_actions.bindings_of(policy):
            details.append("connections or groups changed")
        if details:
            changes.append(Change("masking", spec.name, "update", details, spec.path, run))
    # Bindings move between policies: a policy giving a scope up runs before the one taking it.
    return sorted(changes, key=lambda c: c.op != "delete")


def _diff(label: str, old: Any, new: Any) -> str:
    return f"{label}: {old!r} -> {new!r}"


def _plan_connection(spec: ConnectionSpec) -> list[Change]:
    conn = Connection.objects.filter(name=spec.name).select_related("policy").first()
    fields = {
        "kind": spec.kind,
        "description": spec.description,
        "host": spec.host,
        "port": spec.port,
        "database": spec.database,
        "username": spec.username,
        "options": spec.options,
        "enabled": spec.enabled,
    }
    if conn is None:

        def create(actor: Any) -> None:
            connection_actions.do_create_connection(
                actor,
                name=spec.name,
                groups=spec.groups,
                policy=Policy.objects.get(name=spec.policy) if spec.policy else None,
                secret_values={k: v for k, v in spec.secrets.items() if v is not None},
                **fields,
            )

        named = sorted(k for k, v in spec.secrets.items() if v is not None)
        details = [f"secrets set: {', '.join(named)}"] if named else []
        return [Change("connection", spec.name, "create", details, spec.path, create)]

    details = [
        _diff(key, getattr(conn, key), value) for key, value in fields.items() if getattr(conn, key) != value
    ]
    current_groups = sorted(conn.groups.values_list("name", flat=True))
    if current_groups != sorted(spec.groups):
        details.append(_diff("groups", current_groups, sorted(spec.groups)))
    current_policy = conn.policy.name if conn.policy_id else None
    if current_policy != spec.policy:
        details.append(_diff("policy", current_policy, spec.policy))

    secret_values: dict[str, str] = {}
    replace = False
    try:
        stored = secrets.get_secrets(conn)
    except secrets.SecretDecryptionError:
        stored = None
    if stored is None:
        if spec.secrets:
            # The stored secret is lost (its key is gone): the file's secrets replace it.
            replace = True
            secret_values = {k: v for k, v in spec.secrets.items() if v is not None}
            details.append("secrets replaced (the stored secret could not be decrypted)")
    else:
        for key, value in spec.secrets.items():
            if value is None and key in stored:
                secret_values[key] = ""
                details.append(f"{key} cleared")
            elif value is not None and stored.get(key) != value:
                secret_values[key] = value
                details.append(f"{key} {'changed' if key in stored else 'set'}")
    if not details:
        return []

    def update(actor: Any) -> None:
        connection_actions.do_update_connection(
            actor,
            conn,
            groups=spec.groups,
            policy=Policy.objects.get(name=spec.policy) if spec.policy else None,
            secret_values=secret_values or None,
            replace_secrets=replace,
            **fields,
        )

    return [Change("connection", spec.name, "update", details, spec.path, update)]


def _plan_recordings(spec: ConnectionSpec) -> list[Change]:
    """Retention and legal hold of the connection's recordings, through the recordings
    app's actions (each writes its own audit record)."""
    from recordings import actions as recording_actions
    from recordings.models import ConnectionRule

    wanted = spec.recordings
    if wanted is None or not wanted.manages:
        return []
    rule = ConnectionRule.objects.filter(connection_name=spec.name).first()
    days = rule.retention_days if rule else None
    held = rule.legal_hold if rule else False
    reason = rule.hold_reason if rule else ""
    details = []
    set_days = "retention_days" in wanted.manages and wanted.retention_days != days
    if set_days:
        details.append(_diff("retention_days", days, wanted.retention_days))
    set_hold = "legal_hold" in wanted.manages and (
        wanted.legal_hold != held or (wanted.legal_hold and wanted.hold_reason != reason)
    )
    if set_hold:
        details.append(_diff("legal_hold", held, wanted.legal_hold))
        if wanted.legal_hold and wanted.hold_reason != reason:
            details.append("hold_reason changed")
    if not details:
        return []

    def run(actor: Any) -> None:
        if set_days:
            recording_actions.do_set_connection_retention(actor, spec.name, wanted.retention_days)
        if set_hold:
            recording_actions.do_set_connection_hold(actor, spec.name, wanted.legal_hold, wanted.hold_reason)

    return [Change("recordings", spec.name, "update", details, wanted.path, run)]


def _plan_agent(spec: AgentSpec) -> list[Change]:
    agent = Agent.objects.filter(name=spec.name).select_related("on_behalf_of", "owner").first()

    def users() -> dict[str, User | None]:
        return {
            "on_behalf_of": User.objects.get(username=spec.on_behalf_of) if spec.on_behalf_of else None,
            "owner": User.objects.get(username=spec.owner) if spec.owner else None,
        }

    if agent is None:

        def create(actor: Any) -> None:
            identity_actions.do_create_agent(
                actor,
                spec.name,
                groups=spec.groups,
                description=spec.description,
                enabled=spec.enabled,
                **users(),
            )

        return [Change("agent", spec.name, "create", [], spec.path, create)]

    current = identity_actions.agent_snapshot(agent)
    wanted = {
        "name": spec.name,
        "description": spec.description,
        "groups": sorted(spec.groups),
        "on_behalf_of": spec.on_behalf_of,
        "owner": spec.owner,
        "enabled": spec.enabled,
    }
    details = [_diff(key, current[key], value) for key, value in wanted.items() if current[key] != value]
    if not details:
        return []

    def update(actor: Any) -> None:
        identity_actions.do_update_agent(
            actor, agent, groups=spec.groups, description=spec.description, enabled=spec.enabled, **users()
        )

    return [Change("agent", spec.name, "update", details, spec.path, update)]


def _plan_prune(state: DesiredState) -> list[Change]:
    changes: list[Change] = []
    if "connections" in state.sections:
        keep = {c.name for c in state.connections}
        for conn in Connection.objects.exclude(name__in=keep).order_by("name"):
            changes.append(
                Change(
                    "connection",
                    conn.name,
                    "delete",
                    [],
                    "",
                    lambda actor, conn=conn: connection_actions.do_delete_connection(actor, conn),
                )
            )
    if "agents" in state.sections:
        keep = {a.name for a in state.agents}
        for agent in Agent.objects.exclude(name__in=keep).order_by("name"):
            changes.append(
                Change(
                    "agent",
                    agent.name,
                    "delete",
                    [],
                    "",
                    lambda actor, agent=agent: identity_actions.do_delete_agent(actor, agent),
                )
            )
    if "policies" in state.sections:
        keep = {p.name for p in state.policies}
        for policy in Policy.objects.exclude(name__in=keep).order_by("name"):
            changes.append(
                Change(
                    "policy",
                    policy.name,
                    "delete",
                    [],
                    "",
                    lambda actor, policy=policy: policy_actions.do_delete_policy(actor, policy),
                )
            )
    return changes
