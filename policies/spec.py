"""Structural validation of a policy spec (the ``policies:`` entries of ``apply`` YAML).

``validate_policy_spec`` returns every problem as ``(path, message)`` so that a bad file
is refused with all of its problems listed, e.g. ``policies[0].rules[1].action``. It checks
every key and value the engine understands (``policies.engine.compile_policy`` runs it
first); the policy language is described in docs/policies.md.
"""

from __future__ import annotations

import re
from typing import Any

from policies.classification import FACTS, OPERATIONS
from policies.functions import FUNCTION_SETS

ACTIONS = ("allow", "deny", "review", "observe")
DEFAULT_ACTIONS = ("allow", "deny", "review")
PROTOCOLS = ("postgres", "ssh", "kubernetes")
# How the gateway answers a statement held for review (docs/approvals.md): "wait" holds it
# until reviewers decide; "return" refuses it at once naming the approval request, and the
# identical statement sent again once approved runs (for agents that cannot wait). A review
# rule may say it; otherwise the connection's ``approval_mode`` option decides.
APPROVAL_MODES = ("wait", "return")

# Keys of a policy spec. ``name`` and ``description`` belong to the policy object; they are
# accepted here so that a whole ``policies:`` entry can be validated as is.
SPEC_KEYS = (
    "name",
    "description",
    "default",
    "on_parse_error",
    "rules",
    "reviewers",
    "approvals",
    "timeout",
    "trusted_functions",
)
RULE_KEYS = (
    "name",
    "description",
    "match",
    "action",
    "message",
    "reviewers",
    "approvals",
    "timeout",
    "approval_mode",
    "would",
)
MATCH_KEYS = (
    "protocol",
    "connections",
    "agents",
    "groups",
    "operations",
    "tables",
    "functions",
    "regex",
    "no_where",
    "facts",
    "settings",
)
# Match keys whose value is a list of strings (a single string is taken as a list of one).
LIST_MATCH_KEYS = (
    "protocol",
    "connections",
    "agents",
    "groups",
    "operations",
    "tables",
    "functions",
    "facts",
    "settings",
)

MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
MAX_APPROVALS = 100
_DURATION = re.compile(r"^(?:\d+[smhd])+$")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Seconds in ``10m``, ``30s``, ``2h``, ``1d``, ``1h30m`` or a whole number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 10m, 2h or 1d")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, str) and _DURATION.match(value.strip().lower()):
        seconds = sum(
            int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value.strip().lower())
        )
    else:
        raise ValueError("must be a duration such as 30s, 10m, 2h or 1d")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    if seconds > MAX_TIMEOUT_SECONDS:
        raise ValueError("must be at most 30d")
    return seconds


def as_list(value: Any) -> list[Any]:
    """A match value as a list (YAML lets people write ``operations: read``)."""
    return [value] if isinstance(value, str) else list(value)


def _expected(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


def _check_review(rule: dict[str, Any], path: str, problems: list[tuple[str, str]], needed: bool) -> None:
    reviewers = rule.get("reviewers")
    if needed:
        if (
            not isinstance(reviewers, list)
            or not reviewers
            or not all(isinstance(r, str) and r for r in reviewers)
        ):
            problems.append((f"{path}.reviewers", "a review needs a non-empty list of reviewer groups"))
    if "approvals" in rule:
        approvals = rule["approvals"]
        if isinstance(approvals, bool) or not isinstance(approvals, int):
            problems.append((f"{path}.approvals", "must be a whole number"))
        elif not 1 <= approvals <= MAX_APPROVALS:
            problems.append((f"{path}.approvals", f"must be between 1 and {MAX_APPROVALS}"))
    if "timeout" in rule:
        try:
            parse_duration(rule["timeout"])
        except ValueError as exc:
            problems.append((f"{path}.timeout", str(exc)))


def _check_strings(value: Any, path: str, problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(item path, item)`` of a list of non-empty strings, reporting anything else."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.append((path, "must be a non-empty list of strings"))
        return []
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            problems.append((f"{path}[{index}]", "must be a non-empty string"))
        else:
            items.append((f"{path}[{index}]", item))
    return items


def _check_match(match: Any, path: str, problems: list[tuple[str, str]]) -> None:
    if not isinstance(match, dict):
        problems.append((path, "must be a mapping"))
        return
    for key, value in match.items():
        kpath = f"{path}.{key}"
        if key not in MATCH_KEYS:
            problems.append((kpath, f"unknown match key (expected one of: {_expected(MATCH_KEYS)})"))
            continue
        if key == "no_where":
            if not isinstance(value, bool):
                problems.append((kpath, "must be true or false"))
            continue
        if key == "regex":
            if not isinstance(value, str) or not value:
                problems.append((kpath, "must be a regular expression"))
                continue
            try:
                re.compile(value)
            except re.error as exc:
                problems.append((kpath, f"is not a valid regular expression: {exc}"))
            continue
        for ipath, item in _check_strings(value, kpath, problems):
            if key == "protocol" and item not in PROTOCOLS:
                problems.append(
                    (ipath, f"unknown protocol {item!r} (expected one of: {_expected(PROTOCOLS)})")
                )
            elif key == "operations" and item not in OPERATIONS:
                problems.append(
                    (ipath, f"unknown operation {item!r} (expected one of: {_expected(OPERATIONS)})")
                )
            elif key == "facts" and item not in FACTS:
                problems.append((ipath, f"unknown fact {item!r} (expected one of: {_expected(FACTS)})"))
            elif key == "functions" and item.startswith("@") and item[1:] not in FUNCTION_SETS:
                problems.append(
                    (
                        ipath,
                        f"unknown function set {item!r} "
                        f"(expected one of: {_expected(['@' + s for s in sorted(FUNCTION_SETS)])})",
                    )
                )
            elif key == "tables" and item.count(".") > 1:
                problems.append((ipath, "a table pattern is 'table' or 'schema.table'"))


def validate_policy_spec(spec: Any, path: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        return [(path, "must be a mapping")]
    for key in spec:
        if key not in SPEC_KEYS:
            problems.append((f"{path}.{key}", f"unknown key (expected one of: {_expected(SPEC_KEYS)})"))
    if spec.get("default", "deny") not in DEFAULT_ACTIONS:
        problems.append((f"{path}.default", f"must be one of {', '.join(DEFAULT_ACTIONS)}"))
    if spec.get("on_parse_error", "deny") not in DEFAULT_ACTIONS:
        problems.append((f"{path}.on_parse_error", f"must be one of {', '.join(DEFAULT_ACTIONS)}"))
    policy_reviews = "review" in (spec.get("default"), spec.get("on_parse_error"))
    if policy_reviews or any(k in spec for k in ("reviewers", "approvals", "timeout")):
        _check_review(spec, path, problems, needed=policy_reviews)
    if "trusted_functions" in spec:
        _check_strings(spec["trusted_functions"], f"{path}.trusted_functions", problems)
    rules = spec.get("rules", [])
    if not isinstance(rules, list):
        return [*problems, (f"{path}.rules", "must be a list")]
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        rpath = f"{path}.rules[{index}]"
        if not isinstance(rule, dict):
            problems.append((rpath, "must be a mapping"))
            continue
        for key in rule:
            if key not in RULE_KEYS:
                problems.append((f"{rpath}.{key}", f"unknown key (expected one of: {_expected(RULE_KEYS)})"))
        name = rule.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{rpath}.name", "is required"))
        elif name in seen:
            problems.append((f"{rpath}.name", f"duplicate rule name {name!r}"))
        else:
            seen.add(name)
        action = rule.get("action")
        if action not in ACTIONS:
            problems.append((f"{rpath}.action", f"must be one of {', '.join(ACTIONS)}"))
        _check_match(rule.get("match", {}), f"{rpath}.match", problems)
        if "message" in rule and not isinstance(rule["message"], str):
            problems.append((f"{rpath}.message", "must be a string"))
        if "description" in rule and not isinstance(rule["description"], str):
            problems.append((f"{rpath}.description", "must be a string"))
        would = rule.get("would", "deny")
        if "would" in rule and action != "observe":
            problems.append((f"{rpath}.would", "only observe rules say what they would do"))
        elif would not in DEFAULT_ACTIONS:
            problems.append((f"{rpath}.would", f"must be one of {', '.join(DEFAULT_ACTIONS)}"))
        if action == "review":
            _check_review(rule, rpath, problems, needed=True)
            if "approval_mode" in rule and rule["approval_mode"] not in APPROVAL_MODES:
                problems.append((f"{rpath}.approval_mode", f"must be one of {_expected(APPROVAL_MODES)}"))
        else:
            if "approval_mode" in rule:
                problems.append((f"{rpath}.approval_mode", "only review rules have an approval mode"))
            for key in ("reviewers", "approvals", "timeout"):
                if key in rule:
                    problems.append(
                        (f"{rpath}.{key}", "only review rules have reviewers, approvals and a timeout")
                    )
    return problems
