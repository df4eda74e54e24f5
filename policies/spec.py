"""Structural validation of a policy spec (the ``policies:`` entries of ``apply`` YAML).

``validate_policy_spec`` returns every problem as ``(path, message)`` so that a bad file
is refused with all of its problems listed, e.g. ``policies[0].rules[1].action``.
"""

from __future__ import annotations

from typing import Any

ACTIONS = ("allow", "deny", "review", "observe")
DEFAULT_ACTIONS = ("allow", "deny", "review")


def validate_policy_spec(spec: Any, path: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        return [(path, "must be a mapping")]
    if spec.get("default", "deny") not in DEFAULT_ACTIONS:
        problems.append((f"{path}.default", f"must be one of {', '.join(DEFAULT_ACTIONS)}"))
    if spec.get("on_parse_error", "deny") not in DEFAULT_ACTIONS:
        problems.append((f"{path}.on_parse_error", f"must be one of {', '.join(DEFAULT_ACTIONS)}"))
    rules = spec.get("rules", [])
    if not isinstance(rules, list):
        return [*problems, (f"{path}.rules", "must be a list")]
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        rpath = f"{path}.rules[{index}]"
        if not isinstance(rule, dict):
            problems.append((rpath, "must be a mapping"))
            continue
        name = rule.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{rpath}.name", "is required"))
        elif name in seen:
            problems.append((f"{rpath}.name", f"duplicate rule name {name!r}"))
        else:
            seen.add(name)
        if rule.get("action") not in ACTIONS:
            problems.append((f"{rpath}.action", f"must be one of {', '.join(ACTIONS)}"))
        if not isinstance(rule.get("match", {}), dict):
            problems.append((f"{rpath}.match", "must be a mapping"))
        if rule.get("action") == "review":
            reviewers = rule.get("reviewers")
            if (
                not isinstance(reviewers, list)
                or not reviewers
                or not all(isinstance(r, str) for r in reviewers)
            ):
                problems.append((f"{rpath}.reviewers", "a review rule needs a list of reviewer groups"))
    return problems
