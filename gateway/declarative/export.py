"""``manage.py export``: the current state as ``apply`` YAML, without any secret.

Each stored secret is written as a ``${NAME_FIELD}`` placeholder (``${SHOP_PASSWORD}``)
so that export -> apply round-trips once those variables are set. Agents' tokens are
never exported (they exist only as hashes anyway). Fields at their default are left
out, which ``apply`` reads back as the same default.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from django.contrib.auth.models import Group

from gateway import secrets
from gateway.models import Connection
from identity.actions import agent_snapshot
from identity.models import Agent
from policies.models import Policy


class ExportError(Exception):
    pass


def secret_variable(connection_name: str, field: str, taken: set[str]) -> str:
    """The environment variable name an exported secret refers to (unique in ``taken``)."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", f"{connection_name}_{field}").strip("_").upper()
    if base[:1].isdigit():
        base = f"CONN_{base}"
    name, counter = base, 2
    while name in taken:
        name, counter = f"{base}_{counter}", counter + 1
    taken.add(name)
    return name


def export_state(*, members: bool = True) -> tuple[dict[str, Any], list[str]]:
    """The state as a plain dict, and the environment variables its secrets refer to."""
    taken: set[str] = set()
    variables: list[str] = []
    groups = []
    for group in Group.objects.order_by("name").prefetch_related("user_set"):
        entry: dict[str, Any] = {"name": group.name}
        if members:
            entry["members"] = sorted(user.username for user in group.user_set.all())
        groups.append(entry)

    from recordings.models import ConnectionRule

    rules = {rule.connection_name: rule for rule in ConnectionRule.objects.all()}
    connections = []
    undecryptable = []
    for conn in Connection.objects.order_by("name").select_related("policy").prefetch_related("groups"):
        entry = {"name": conn.name, "kind": conn.kind}
        if conn.description:
            entry["description"] = conn.description
        entry["host"] = conn.host
        if conn.port is not None:
            entry["port"] = conn.port
        for key in ("database", "username"):
            if getattr(conn, key):
                entry[key] = getattr(conn, key)
        if conn.options:
            entry["options"] = dict(sorted(conn.options.items()))
        try:
            stored = secrets.get_secrets(conn)
        except secrets.SecretDecryptionError:
            undecryptable.append(conn.name)
            stored = {}
        for field in sorted(stored):
            variable = secret_variable(conn.name, field, taken)
            variables.append(variable)
            entry[field] = f"${{{variable}}}"
        entry["groups"] = sorted(g.name for g in conn.groups.all())
        if conn.policy_id:
            entry["policy"] = conn.policy.name  # type: ignore[union-attr]
        if not conn.enabled:
            entry["enabled"] = False
        rule = rules.get(conn.name)
        if rule is not None and (rule.retention_days is not None or rule.legal_hold):
            recordings: dict[str, Any] = {}
            if rule.retention_days is not None:
                recordings["retention_days"] = rule.retention_days
            if rule.legal_hold:
                recordings["legal_hold"] = True
                recordings["hold_reason"] = rule.hold_reason
            entry["recordings"] = recordings
        connections.append(entry)
    if undecryptable:
        raise ExportError(
            "no key in AIRLOCK_SECRET_KEYS decrypts the stored secret of connection(s) "
            f"{', '.join(undecryptable)}, so which secret fields they have is unknown"
        )

    agents = []
    for agent in (
        Agent.objects.order_by("name").select_related("on_behalf_of", "owner").prefetch_related("groups")
    ):
        snapshot = agent_snapshot(agent)
        entry = {"name": agent.name}
        if snapshot["description"]:
            entry["description"] = snapshot["description"]
        entry["groups"] = snapshot["groups"]
        for key in ("on_behalf_of", "owner"):
            if snapshot[key]:
                entry[key] = snapshot[key]
        if not snapshot["enabled"]:
            entry["enabled"] = False
        agents.append(entry)

    policies = []
    for policy in Policy.objects.order_by("name"):
        entry = {"name": policy.name}
        if policy.description:
            entry["description"] = policy.description
        entry.update(policy.spec)
        policies.append(entry)

    from policies.masking_actions import bindings_of
    from policies.models import MaskingPolicy

    masking = []
    for masking_policy in MaskingPolicy.objects.order_by("name"):
        entry = {"name": masking_policy.name}
        if masking_policy.description:
            entry["description"] = masking_policy.description
        bound = bindings_of(masking_policy)
        defaults = [c for c, g in bound if g is None]
        if defaults:
            entry["connections"] = defaults
        by_group: dict[str, list[str]] = {}
        for connection, group in bound:
            if group is not None:
                by_group.setdefault(group, []).append(connection)
        if by_group:
            entry["groups"] = [{"group": g, "connections": c} for g, c in sorted(by_group.items())]
        entry.update(masking_policy.spec)
        masking.append(entry)

    state = {
        "groups": groups,
        "connections": connections,
        "agents": agents,
        "policies": policies,
        "masking": masking,
    }
    return state, variables


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    # Short lists of names read best on one line: groups: [agents, dba]
    flow = all(isinstance(item, str | int | float | bool) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def export_yaml(*, members: bool = True) -> str:
    state, variables = export_state(members=members)
    header = ["# Airlock configuration (manage.py export). Apply it with: manage.py apply -f FILE"]
    if variables:
        header.append("# Secrets are not exported; set these environment variables before applying:")
        header.extend(f"#   {name}" for name in variables)
    body = yaml.dump(
        state, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )
    return "\n".join(header) + "\n" + body
