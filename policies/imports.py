"""Reading one policy from YAML for the console's import, with ``manage.py apply``'s checks.

The text is checked by the same code as an ``apply`` file (``gateway.declarative``), so a
policy the console imports is one ``apply`` accepts and the other way round; every problem
is reported by its path and line. The reviewer groups must also be able to approve (exist
and have members), as for every save in the editor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.declarative.loader import ConfigError, Mapping, Problem, Sequence, line_of, load_yaml
from gateway.declarative.schema import check_document

ENTRY = "policies[0]"


@dataclass(frozen=True)
class ImportedPolicy:
    name: str
    description: str
    spec: dict[str, Any]


def _as_document(root: Any) -> tuple[Any, bool]:
    """``(document, bare)``: a bare policy entry is wrapped in a ``policies:`` section."""
    if isinstance(root, Mapping) and "policies" not in root and "name" in root:
        items = Sequence([root])
        items.line = root.line
        items.item_lines = [root.line]
        document = Mapping({"policies": items})
        document.line = root.line
        document.key_lines = {"policies": root.line}
        document.duplicates = []
        return document, True
    return root, False


def _shape_problems(document: Any) -> list[Problem]:
    if not isinstance(document, dict):
        return [Problem("(top)", "must be a policies: section with one policy, or one policy entry")]
    others = sorted(str(key) for key in document if key != "policies")
    problems = [
        Problem(key, "only a policy can be imported here (use manage.py apply for the other sections)")
        for key in others
    ]
    entries = document.get("policies")
    if entries is None:
        problems.append(Problem("policies", "is required (one policy)"))
    elif isinstance(entries, list) and len(entries) != 1:
        problems.append(
            Problem(
                "policies", f"must hold exactly one policy (it holds {len(entries)}); use manage.py apply"
            )
        )
    return problems


def read_policy_yaml(text: str, known_groups: set[str]) -> ImportedPolicy:
    """The one policy in ``text``; ``ConfigError`` lists every problem (path and line).

    ``known_groups``: the groups that can review (``policies.stored.reviewer_groups``).
    """
    root = load_yaml(text)
    document, bare = _as_document(root)
    problems = _shape_problems(document)
    if not problems:
        state, problems = check_document(document, resolve=lambda name: None)
        for policy in state.policies:
            problems = problems + policy.compile_problems(known_groups)
    if problems:
        raise ConfigError(
            [
                Problem(_display_path(p.path, bare), p.message, p.line or line_of(document, p.path))
                for p in sorted(
                    problems, key=lambda p: (p.line or line_of(document, p.path) or 10**9, p.path)
                )
            ]
        )
    if len(state.policies) != 1:  # every way to get here is reported above; fail closed anyway
        raise ConfigError([Problem("policies", "must hold exactly one policy")])
    (policy,) = state.policies
    return ImportedPolicy(name=policy.name, description=policy.description, spec=policy.spec)


def _display_path(path: str, bare: bool) -> str:
    # For a bare entry, paths are shown as they are in the text (no policies[0] prefix).
    if not bare or not path.startswith(ENTRY):
        return path
    rest = path[len(ENTRY) :].lstrip(".")
    return rest or "(policy)"
