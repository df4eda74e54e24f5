"""Policies as YAML: the canonical text of a spec, one-policy export, and version diffs.

The canonical YAML puts keys in the order people read them (a rule's name, then what it
matches, then what it does) rather than alphabetically, and is the same for two specs
that are the same policy, so a diff between versions shows only what changed.
Exports are ``manage.py apply`` documents (a ``policies:`` section with one entry).

Pure: no Django, no I/O.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml

from policies.spec import MATCH_KEYS, RULE_KEYS, SPEC_KEYS

__all__ = ["DiffLine", "canonical_yaml", "ordered_spec", "policy_document_yaml", "spec_diff"]


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    known = [key for key in order if key in mapping]
    rest = sorted((key for key in mapping if key not in order), key=str)
    return {key: mapping[key] for key in known + rest}


def ordered_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with its keys, its rules' keys and their match keys in canonical order."""
    result = _ordered(spec, SPEC_KEYS)
    rules = result.get("rules")
    if isinstance(rules, list):
        ordered_rules = []
        for rule in rules:
            if isinstance(rule, dict):
                rule = _ordered(rule, RULE_KEYS)
                if isinstance(rule.get("match"), dict):
                    rule["match"] = _ordered(rule["match"], MATCH_KEYS)
            ordered_rules.append(rule)
        # Rules last: the policy's own settings read first, then its rules in order.
        del result["rules"]
        result["rules"] = ordered_rules
    return result


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    # Lists of names read best on one line: operations: [read, write]
    flow = bool(data) and all(isinstance(item, str | int | float | bool) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)


def _dump(data: Any) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )


def canonical_yaml(spec: dict[str, Any]) -> str:
    """The canonical YAML text of a policy spec."""
    return _dump(ordered_spec(spec))


def policy_document_yaml(name: str, description: str, spec: dict[str, Any], *, header: str = "") -> str:
    """One policy as an ``apply`` document: ``policies:`` with a single entry."""
    entry: dict[str, Any] = {"name": name}
    if description:
        entry["description"] = description
    entry.update((key, value) for key, value in ordered_spec(spec).items() if key not in entry)
    body = _dump({"policies": [entry]})
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join([*lines, body]) if lines else body


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff: ``kind`` is ``add``, ``remove``, ``context`` or ``hunk``."""

    kind: str
    text: str


_KINDS = {"+": "add", "-": "remove", " ": "context", "@": "hunk"}


def spec_diff(
    old: dict[str, Any] | None, new: dict[str, Any], old_label: str, new_label: str, context: int = 3
) -> list[DiffLine]:
    """The unified diff of two specs' canonical YAML (``old`` None: everything is added)."""
    before = canonical_yaml(old).splitlines() if old is not None else []
    after = canonical_yaml(new).splitlines()
    raw = list(difflib.unified_diff(before, after, old_label, new_label, n=context, lineterm=""))
    # The first two lines name the files (--- old, +++ new); a changed line never does.
    return [DiffLine(_KINDS.get(line[:1], "context"), line) for line in raw[2:]]
