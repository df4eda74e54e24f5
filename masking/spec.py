"""Structural validation of a masking spec (the ``masking:`` section of ``apply`` YAML).

``validate_masking_spec`` returns every problem as ``(path, message)``, like
``policies/spec.py``, so a bad file is refused with all of its problems listed, e.g.
``masking.custom[0].pattern``. The schema is documented in ``docs/masking.md``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from masking.detectors import BUILTIN_ENTITIES
from masking.placeholders import METHODS
from masking.validators import VALIDATORS

ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
COLUMN_ENTITY_DEFAULT = "masked"
TOP_KEYS = {"default_method", "entities", "custom", "columns", "exempt"}
CUSTOM_KEYS = {"name", "pattern", "validator", "deny_list", "ignore_case", "method"}
COLUMN_KEYS = {"match", "method", "entity"}
EXEMPT_KEYS = {"column", "group", "entities", "reason"}
MAX_PATTERN_LENGTH = 2000

_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")


def _unknown_keys(value: dict[str, Any], allowed: set[str], path: str) -> list[tuple[str, str]]:
    return [(f"{path}.{key}", "is not a known key") for key in value if key not in allowed]


def _method_problem(value: Any, path: str) -> list[tuple[str, str]]:
    if value not in METHODS:
        return [(path, f"must be one of {', '.join(METHODS)}")]
    return []


def _nested_unbounded(items: Any, inside_unbounded: bool = False) -> bool:
    """Whether an unbounded repeat sits inside another: ``(a+)+`` can take exponential time."""
    for op, av in items:
        if op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT):
            low, high, sub = av
            unbounded = high == _constants.MAXREPEAT or high > 1000
            if unbounded and inside_unbounded:
                return True
            if _nested_unbounded(sub, inside_unbounded or unbounded):
                return True
        elif op is _constants.SUBPATTERN:
            if _nested_unbounded(av[-1], inside_unbounded):
                return True
        elif op is _constants.BRANCH:
            if any(_nested_unbounded(branch, inside_unbounded) for branch in av[1]):
                return True
        elif op in (_constants.ASSERT, _constants.ASSERT_NOT):
            if _nested_unbounded(av[1], inside_unbounded):
                return True
    return False


def pattern_problem(pattern: Any) -> str | None:
    """Why an admin's regular expression is refused, or None."""
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"must be at most {MAX_PATTERN_LENGTH} characters"
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}"
    if compiled.fullmatch("") is not None:
        return "matches the empty string"
    if _nested_unbounded(_parser.parse(pattern)):
        return "nests unbounded repetition (like (a+)+), which can take exponential time"
    return None


def column_glob_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    parts = value.split(".")
    if len(parts) not in (2, 3) or not all(parts):
        return "must be table.column or schema.table.column (globs * ? [...] allowed)"
    return None


def validate_masking_spec(spec: Any, path: str = "masking") -> list[tuple[str, str]]:
    if not isinstance(spec, dict):
        return [(path, "must be a mapping")]
    problems = _unknown_keys(spec, TOP_KEYS, path)
    if "default_method" in spec:
        problems += _method_problem(spec["default_method"], f"{path}.default_method")

    entities = spec.get("entities", "all")
    epath = f"{path}.entities"
    if isinstance(entities, dict):
        for name, method in entities.items():
            if name not in BUILTIN_ENTITIES:
                problems.append((f"{epath}.{name}", "is not a built-in entity (define it under custom)"))
            if isinstance(method, dict):
                problems += _unknown_keys(method, {"method"}, f"{epath}.{name}")
                method = method.get("method")
            problems += _method_problem(method, f"{epath}.{name}")
    elif isinstance(entities, list):
        for index, name in enumerate(entities):
            if name not in BUILTIN_ENTITIES:
                problems.append((f"{epath}[{index}]", f"{name!r} is not a built-in entity"))
    elif entities != "all":
        problems.append((epath, "must be 'all', a list of entity names or a mapping of name to method"))

    names: set[str] = set(BUILTIN_ENTITIES)
    custom = spec.get("custom", [])
    if not isinstance(custom, list):
        problems.append((f"{path}.custom", "must be a list"))
        custom = []
    for index, entry in enumerate(custom):
        cpath = f"{path}.custom[{index}]"
        if not isinstance(entry, dict):
            problems.append((cpath, "must be a mapping"))
            continue
        problems += _unknown_keys(entry, CUSTOM_KEYS, cpath)
        name = entry.get("name")
        if not isinstance(name, str) or not ENTITY_NAME.fullmatch(name):
            problems.append((f"{cpath}.name", "must be a lower-case name like employee_id"))
        elif name in names or name == COLUMN_ENTITY_DEFAULT:
            problems.append((f"{cpath}.name", f"{name!r} is already an entity"))
        else:
            names.add(name)
        if "pattern" not in entry and "deny_list" not in entry:
            problems.append((cpath, "needs a pattern, a deny_list or both"))
        if "pattern" in entry:
            problem = pattern_problem(entry["pattern"])
            if problem:
                problems.append((f"{cpath}.pattern", problem))
        if "validator" in entry:
            if "pattern" not in entry:
                problems.append((f"{cpath}.validator", "applies to a pattern; this entity has none"))
            if entry["validator"] not in VALIDATORS:
                problems.append((f"{cpath}.validator", f"must be one of {', '.join(sorted(VALIDATORS))}"))
        if "deny_list" in entry:
            deny = entry["deny_list"]
            if not isinstance(deny, list) or not deny or not all(isinstance(x, str) and x for x in deny):
                problems.append((f"{cpath}.deny_list", "must be a non-empty list of non-empty strings"))
        if not isinstance(entry.get("ignore_case", False), bool):
            problems.append((f"{cpath}.ignore_case", "must be true or false"))
        if "method" in entry:
            problems += _method_problem(entry["method"], f"{cpath}.method")

    columns = spec.get("columns", [])
    if not isinstance(columns, list):
        problems.append((f"{path}.columns", "must be a list"))
        columns = []
    column_entities: set[str] = {COLUMN_ENTITY_DEFAULT}
    for index, rule in enumerate(columns):
        rpath = f"{path}.columns[{index}]"
        if not isinstance(rule, dict):
            problems.append((rpath, "must be a mapping"))
            continue
        problems += _unknown_keys(rule, COLUMN_KEYS, rpath)
        problem = column_glob_problem(rule.get("match"))
        if problem:
            problems.append((f"{rpath}.match", problem))
        problems += _method_problem(rule.get("method"), f"{rpath}.method")
        entity = rule.get("entity", COLUMN_ENTITY_DEFAULT)
        if not isinstance(entity, str) or not ENTITY_NAME.fullmatch(entity):
            problems.append((f"{rpath}.entity", "must be a lower-case name like email"))
        else:
            column_entities.add(entity)

    exempt = spec.get("exempt", [])
    if not isinstance(exempt, list):
        problems.append((f"{path}.exempt", "must be a list"))
        exempt = []
    known = names | column_entities
    for index, entry in enumerate(exempt):
        xpath = f"{path}.exempt[{index}]"
        if not isinstance(entry, dict):
            problems.append((xpath, "must be a mapping"))
            continue
        problems += _unknown_keys(entry, EXEMPT_KEYS, xpath)
        if "column" not in entry and "group" not in entry:
            problems.append((xpath, "needs a column, a group or both"))
        if "column" in entry:
            problem = column_glob_problem(entry["column"])
            if problem:
                problems.append((f"{xpath}.column", problem))
        if "group" in entry and (not isinstance(entry["group"], str) or not entry["group"]):
            problems.append((f"{xpath}.group", "must be a group name"))
        if "reason" in entry and not isinstance(entry["reason"], str):
            problems.append((f"{xpath}.reason", "must be text"))
        if "entities" in entry:
            listed = entry["entities"]
            if not isinstance(listed, list) or not listed:
                problems.append((f"{xpath}.entities", "must be a non-empty list of entity names"))
            else:
                for eindex, name in enumerate(listed):
                    if name not in known:
                        problems.append(
                            (f"{xpath}.entities[{eindex}]", f"{name!r} is not an entity of this policy")
                        )
    return problems
