"""The ``apply`` YAML schema: structural checks that turn a parsed file into a desired state.

Every problem is collected (not only the first), each named by its path in the file
(``connections[2].port: must be an integer``). Checks that need the database (does the
policy or the person exist?) are made by ``gateway.declarative.plan``.

Secret fields only take ``${ENV_VAR}`` references: a configuration file is often
committed, so a literal secret in it is refused. ``resolve`` looks a variable up (the
caller passes one that reads the environment).

Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.declarative.loader import Mapping, Problem, line_of, plain
from gateway.options import KINDS, SECRET_FIELDS, host_problem, option_problems
from policies.engine import PolicyError, compile_policy
from policies.spec import SPEC_KEYS, validate_policy_spec

SECTIONS = ("groups", "connections", "agents", "policies", "masking")

GROUP_KEYS = ("name", "members")
CONNECTION_KEYS = (
    "name",
    "kind",
    "description",
    "host",
    "port",
    "database",
    "username",
    "options",
    "sslmode",
    "groups",
    "policy",
    "enabled",
    "recordings",
)
# A connection's recordings (recordings.ConnectionRule): only the keys the file names are
# managed, so that a file that never mentions a legal hold cannot release one.
RECORDINGS_KEYS = ("retention_days", "legal_hold", "hold_reason")
HOLD_REASON_MAX = 200
ALL_SECRET_FIELDS = tuple(sorted({f for fields in SECRET_FIELDS.values() for f in fields}))
AGENT_KEYS = ("name", "description", "groups", "on_behalf_of", "owner", "enabled")
POLICY_KEYS = ("name", "description")
# The top-level keys of a policy spec (policies.spec validates what is inside them).
POLICY_SPEC_KEYS = tuple(key for key in SPEC_KEYS if key not in POLICY_KEYS)

# The shapes the models accept (identity.models.name_validator, Policy.name).
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
_POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# Airlock's own settings: a file that could copy these into a connection's secret could
# send them to any host it names (through the gateway or a connection test).
_RESERVED_VARIABLE = re.compile(r"^(AIRLOCK_|DJANGO_)|^(DATABASE_URL|REDIS_URL)$")
_NAME_HELP = "use letters, digits, '.', '_' and '-', starting with a letter or digit"

# Looks a variable up: its value, None when unset; raises ValueError with a message
# (never holding the value) when it is set but unusable.
Resolve = Callable[[str], str | None]


@dataclass
class GroupSpec:
    name: str
    members: list[str] | None  # None: membership is not managed by the file
    path: str


@dataclass
class RecordingsSpec:
    """``connections[].recordings``: retention days (None: the installation's default, 0:
    for ever) and legal hold. ``manages`` names the keys the file gives."""

    path: str
    manages: frozenset[str]
    retention_days: int | None = None
    legal_hold: bool = False
    hold_reason: str = ""


@dataclass
class ConnectionSpec:
    name: str
    kind: str
    host: str
    path: str
    port: int | None = None
    database: str = ""
    username: str = ""
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    policy: str | None = None
    enabled: bool = True
    # Only the secret fields the file names: value to set, or None to clear. A field
    # the file does not name keeps its stored value (secrets may be set in the console).
    secrets: dict[str, str | None] = field(default_factory=dict)
    # The variable each secret came from, for messages.
    secret_sources: dict[str, str] = field(default_factory=dict)
    recordings: RecordingsSpec | None = None  # None: the file leaves them as they are


@dataclass
class AgentSpec:
    name: str
    path: str
    description: str = ""
    groups: list[str] = field(default_factory=list)
    on_behalf_of: str | None = None
    owner: str | None = None
    enabled: bool = True


@dataclass
class PolicySpec:
    name: str
    spec: dict[str, Any]
    path: str
    description: str = ""
    # Reviewer groups named by the policy and its review rules, with the path of each mention.
    reviewer_groups: list[tuple[str, str]] = field(default_factory=list)
    # No structural problem: the spec can be compiled (see ``compile_problems``).
    well_formed: bool = True

    def compile_problems(self, known_groups: set[str]) -> list[Problem]:
        """What ``compile_policy`` finds with ``known_groups``, each named by its path."""
        if not self.well_formed:
            # The structural problems are reported already; compiling would repeat them.
            # The reviewer groups are still checked, so that one run lists everything.
            return [
                Problem(path, f"reviewer group {group!r} does not exist or has no members")
                for group, path in self.reviewer_groups
                if group not in known_groups
            ]
        try:
            compile_policy(self.name, 0, self.spec, known_groups=known_groups, path=self.path)
        except PolicyError as exc:
            return [Problem(path, message) for path, message in exc.problems]
        return []


@dataclass
class MaskingSpec:
    name: str
    spec: dict[str, Any]
    path: str
    description: str = ""
    # (connection, group or None), each with its path in the file.
    bindings: list[tuple[str, str | None, str]] = field(default_factory=list)


MASKING_KEYS = ("name", "description", "connections", "groups")


@dataclass
class DesiredState:
    """What the file asks for. ``sections`` are the sections the file has (for --prune)."""

    sections: set[str] = field(default_factory=set)
    groups: list[GroupSpec] = field(default_factory=list)
    connections: list[ConnectionSpec] = field(default_factory=list)
    agents: list[AgentSpec] = field(default_factory=list)
    policies: list[PolicySpec] = field(default_factory=list)
    masking: list[MaskingSpec] = field(default_factory=list)


class _Checker:
    def __init__(self, root: Any, resolve: Resolve) -> None:
        self.root = root
        self.resolve = resolve
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, line_of(self.root, path)))

    def keys(self, item: dict[Any, Any], path: str, allowed: tuple[str, ...]) -> None:
        """Report keys given twice and keys not in ``allowed`` (``path`` "" is the top)."""
        prefix = f"{path}." if path else ""
        if isinstance(item, Mapping):
            for key, line in item.duplicates:
                first = item.key_lines.get(key)
                self.problems.append(Problem(f"{prefix}{key}", f"given twice (first on line {first})", line))
        for key in item:
            if key not in allowed:
                self.add(f"{prefix}{key}", f"unknown key (expected one of: {', '.join(allowed)})")

    def string(
        self, item: dict[Any, Any], key: str, path: str, *, required: bool = False, max_length: int = 255
    ) -> str:
        value = item.get(key)
        if value is None:
            if required:
                self.add(f"{path}.{key}" if key in item else path, f"{key} is required")
            return ""
        if not isinstance(value, str):
            self.add(f"{path}.{key}", f"must be a string (got {_type_name(value)}; quote it)")
            return ""
        if required and not value.strip():
            self.add(f"{path}.{key}", "must not be empty")
        if len(value) > max_length:
            self.add(f"{path}.{key}", f"must be at most {max_length} characters")
        if "${" in value:
            self.add(
                f"{path}.{key}",
                f"${{...}} references are only expanded in secret fields ({', '.join(ALL_SECRET_FIELDS)})",
            )
        return value

    def optional_name(self, item: dict[Any, Any], key: str, path: str) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.add(f"{path}.{key}", "must be a name (a non-empty string)")
            return None
        return value

    def boolean(self, item: dict[Any, Any], key: str, path: str, default: bool) -> bool:
        value = item.get(key, default)
        if not isinstance(value, bool):
            self.add(f"{path}.{key}", f"must be true or false (got {_type_name(value)})")
            return default
        return value

    def name_list(self, item: dict[Any, Any], key: str, path: str) -> list[str]:
        value = item.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(f"{path}.{key}", "must be a list of names")
            return []
        names: list[str] = []
        for index, name in enumerate(value):
            if not isinstance(name, str) or not name:
                self.add(f"{path}.{key}[{index}]", "must be a name (a non-empty string)")
            elif name in names:
                self.add(f"{path}.{key}[{index}]", f"{name!r} is listed twice")
            else:
                names.append(name)
        return names

    def entries(self, data: dict[Any, Any], section: str) -> list[tuple[str, dict[Any, Any]]]:
        value = data.get(section)
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(section, "must be a list")
            return []
        result = []
        for index, item in enumerate(value):
            path = f"{section}[{index}]"
            if not isinstance(item, dict):
                self.add(path, f"must be a mapping (got {_type_name(item)})")
                continue
            result.append((path, item))
        return result

    def object_name(
        self, item: dict[Any, Any], path: str, pattern: re.Pattern[str], seen: dict[str, str]
    ) -> str:
        name = item.get("name")
        if name is None:
            self.add(path, "name is required")
            return ""
        if not isinstance(name, str) or not pattern.match(name):
            self.add(f"{path}.name", f"{name!r} is not a valid name ({_NAME_HELP})")
            return ""
        if name in seen:
            self.add(f"{path}.name", f"duplicate name {name!r} (also {seen[name]})")
            return ""
        seen[name] = path
        return name

    def secret(self, value: Any, path: str) -> tuple[str | None, str] | None:
        """(value or None to clear, variable name) for a secret field, or None if bad."""
        if value is None:
            return None, ""
        if not isinstance(value, str):
            self.add(path, "must be a ${ENV_VAR} reference")
            return None
        match = _ENV_REF.match(value.strip())
        if not match:
            self.add(
                path,
                "must be a ${ENV_VAR} reference: literal secrets are refused "
                "(a configuration file is often committed)",
            )
            return None
        variable = match.group(1)
        if _RESERVED_VARIABLE.match(variable):
            self.add(path, f"{variable} is one of Airlock's own settings, not a connection secret")
            return None
        try:
            resolved = self.resolve(variable)
        except ValueError as exc:
            self.add(path, str(exc))
            return None
        if resolved is None:
            self.add(path, f"environment variable {variable} is not set (nor {variable}_FILE)")
            return None
        if resolved == "":
            self.add(path, f"environment variable {variable} is empty")
            return None
        return resolved, variable


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def check_document(root: Any, resolve: Resolve) -> tuple[DesiredState, list[Problem]]:
    """Check a parsed file; return the desired state and every problem found."""
    check = _Checker(root, resolve)
    state = DesiredState()
    if root is None:
        return state, []
    if not isinstance(root, dict):
        return state, [Problem("(top)", f"must be a mapping with {', '.join(SECTIONS)}")]
    check.keys(root, "", SECTIONS)
    state.sections = {section for section in SECTIONS if section in root}

    _check_groups(check, root, state)
    _check_policies(check, root, state)
    _check_connections(check, root, state)
    _check_agents(check, root, state)
    _check_masking(check, root, state)
    return state, sorted(check.problems, key=lambda p: (p.line or 10**9, p.path))


def _check_groups(check: _Checker, root: dict[Any, Any], state: DesiredState) -> None:
    seen: dict[str, str] = {}
    for path, item in check.entries(root, "groups"):
        check.keys(item, path, GROUP_KEYS)
        name = item.get("name")
        if name is None:
            check.add(path, "name is required")
            name = ""
        elif not isinstance(name, str) or not name.strip() or len(name) > 150:
            check.add(f"{path}.name", "must be a non-empty string of at most 150 characters")
            name = ""
        elif name in seen:
            check.add(f"{path}.name", f"duplicate name {name!r} (also {seen[name]})")
            name = ""
        else:
            seen[name] = path
        members = check.name_list(item, "members", path) if "members" in item else None
        if name:
            state.groups.append(GroupSpec(name=name, members=members, path=path))


def _check_policies(check: _Checker, root: dict[Any, Any], state: DesiredState) -> None:
    seen: dict[str, str] = {}
    for path, item in check.entries(root, "policies"):
        name = check.object_name(item, path, _POLICY_NAME, seen)
        description = check.string(item, "description", path, max_length=10_000)
        spec = {key: plain(value) for key, value in item.items() if key not in POLICY_KEYS}
        spec_problems = validate_policy_spec(spec, path)
        for problem_path, message in spec_problems:
            check.add(problem_path, message)
        reported = {p for p, _ in spec_problems}
        if isinstance(item, Mapping):
            for key, line in item.duplicates:
                check.problems.append(
                    Problem(f"{path}.{key}", f"given twice (first on line {item.key_lines.get(key)})", line)
                )
        for key in item:
            if key not in POLICY_KEYS + POLICY_SPEC_KEYS and f"{path}.{key}" not in reported:
                check.add(
                    f"{path}.{key}",
                    f"unknown key (expected one of: {', '.join(POLICY_KEYS + POLICY_SPEC_KEYS)})",
                )
        _check_nested_duplicates(check, item, path)
        reviewers: list[tuple[str, str]] = []
        if isinstance(spec.get("reviewers"), list):
            reviewers.extend(
                (group, f"{path}.reviewers[{n}]")
                for n, group in enumerate(spec["reviewers"])
                if isinstance(group, str)
            )
        rules = spec.get("rules")
        if isinstance(rules, list):
            for index, rule in enumerate(rules):
                names = rule.get("reviewers") if isinstance(rule, dict) else None
                if isinstance(names, list):
                    reviewers.extend(
                        (group, f"{path}.rules[{index}].reviewers[{n}]")
                        for n, group in enumerate(names)
                        if isinstance(group, str)
                    )
        if name:
            state.policies.append(
                PolicySpec(
                    name=name,
                    spec=spec,
                    path=path,
                    description=description,
                    reviewer_groups=reviewers,
                    well_formed=not spec_problems,
                )
            )


def _check_nested_duplicates(check: _Checker, value: Any, path: str) -> None:
    """Report keys given twice anywhere inside a policy (rules, match...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}"
            if isinstance(item, Mapping):
                for dup, line in item.duplicates:
                    check.problems.append(
                        Problem(
                            f"{child}.{dup}", f"given twice (first on line {item.key_lines.get(dup)})", line
                        )
                    )
            _check_nested_duplicates(check, item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            child = f"{path}[{index}]"
            if isinstance(item, Mapping):
                for dup, line in item.duplicates:
                    check.problems.append(
                        Problem(
                            f"{child}.{dup}", f"given twice (first on line {item.key_lines.get(dup)})", line
                        )
                    )
            _check_nested_duplicates(check, item, child)


def _check_connections(check: _Checker, root: dict[Any, Any], state: DesiredState) -> None:
    seen: dict[str, str] = {}
    for path, item in check.entries(root, "connections"):
        kind = item.get("kind")
        known_secrets = (
            SECRET_FIELDS.get(kind, ALL_SECRET_FIELDS) if isinstance(kind, str) else ALL_SECRET_FIELDS
        )
        check.keys(item, path, CONNECTION_KEYS + known_secrets)
        name = check.object_name(item, path, _OBJECT_NAME, seen)
        if kind is None:
            check.add(path, "kind is required")
        elif kind not in KINDS:
            check.add(f"{path}.kind", f"must be one of {', '.join(KINDS)}")
        kind_ok = isinstance(kind, str) and kind in KINDS
        valid_kind: str = kind if isinstance(kind, str) and kind_ok else ""

        host = item.get("host")
        if "host" not in item:
            check.add(path, "host is required")
        elif not isinstance(host, str):
            check.add(f"{path}.host", f"must be a string (got {_type_name(host)})")
        else:
            host = check.string(item, "host", path, required=True)
            error = host_problem(valid_kind, host) if host.strip() else None
            if error:
                check.add(f"{path}.host", error)

        port = item.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            check.add(f"{path}.port", "must be an integer")
            port = None
        elif port is not None and not 1 <= port <= 65535:
            check.add(f"{path}.port", "must be between 1 and 65535")
            port = None

        options: dict[str, Any] = {}
        raw_options = item.get("options")
        if raw_options is not None:
            if not isinstance(raw_options, dict):
                check.add(f"{path}.options", "must be a mapping")
            else:
                options = plain(raw_options)
                if isinstance(raw_options, Mapping):
                    for key, line in raw_options.duplicates:
                        check.problems.append(
                            Problem(
                                f"{path}.options.{key}",
                                f"given twice (first on line {raw_options.key_lines.get(key)})",
                                line,
                            )
                        )
        if "sslmode" in item:
            if kind_ok and kind != "postgres":
                check.add(f"{path}.sslmode", "only a postgres connection has an sslmode")
            elif "sslmode" in options and options["sslmode"] != item["sslmode"]:
                check.add(f"{path}.sslmode", "differs from options.sslmode (give it once)")
            else:
                options["sslmode"] = item["sslmode"]
        if kind_ok:
            for key, message in option_problems(valid_kind, options):
                where = "sslmode" if key == "sslmode" and "sslmode" in item else f"options.{key}"
                check.add(f"{path}.{where}" if key else f"{path}.options", message)

        secrets: dict[str, str | None] = {}
        sources: dict[str, str] = {}
        for secret_field in known_secrets:
            if secret_field in item:
                resolved = check.secret(item[secret_field], f"{path}.{secret_field}")
                if resolved is not None:
                    secrets[secret_field], sources[secret_field] = resolved

        spec = ConnectionSpec(
            name=name,
            kind=valid_kind,
            host=host if isinstance(host, str) else "",
            path=path,
            port=port,
            database=check.string(item, "database", path),
            username=check.string(item, "username", path),
            description=check.string(item, "description", path, max_length=10_000),
            options=options,
            groups=check.name_list(item, "groups", path),
            policy=check.optional_name(item, "policy", path),
            enabled=check.boolean(item, "enabled", path, True),
            secrets=secrets,
            secret_sources=sources,
            recordings=_check_recordings(check, item, path),
        )
        if name and kind_ok:
            state.connections.append(spec)


def _check_recordings(check: _Checker, item: dict[Any, Any], path: str) -> RecordingsSpec | None:
    if "recordings" not in item:
        return None
    path = f"{path}.recordings"
    value = item["recordings"]
    if not isinstance(value, dict):
        check.add(path, "must be a mapping with retention_days, legal_hold, hold_reason")
        return None
    check.keys(value, path, RECORDINGS_KEYS)
    spec = RecordingsSpec(path=path, manages=frozenset(k for k in RECORDINGS_KEYS if k in value))
    if "retention_days" in value:
        days = value["retention_days"]
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
            check.add(
                f"{path}.retention_days",
                "must be a whole number of days (0 keeps them for ever; null follows the default)",
            )
        else:
            spec.retention_days = days
    if "legal_hold" in value:
        spec.legal_hold = check.boolean(value, "legal_hold", path, False)
    if "hold_reason" in value:
        spec.hold_reason = " ".join(
            check.string(value, "hold_reason", path, max_length=HOLD_REASON_MAX).split()
        )
        if "legal_hold" not in value:
            check.add(f"{path}.hold_reason", "goes with legal_hold: true")
        elif not spec.legal_hold and spec.hold_reason:
            check.add(f"{path}.hold_reason", "only a legal hold has a reason (legal_hold is false)")
    if spec.legal_hold and not spec.hold_reason:
        check.add(f"{path}.hold_reason", "say why the recordings are held (required with legal_hold: true)")
    return spec


def _check_agents(check: _Checker, root: dict[Any, Any], state: DesiredState) -> None:
    seen: dict[str, str] = {}
    for path, item in check.entries(root, "agents"):
        check.keys(item, path, AGENT_KEYS)
        name = check.object_name(item, path, _OBJECT_NAME, seen)
        spec = AgentSpec(
            name=name,
            path=path,
            description=check.string(item, "description", path, max_length=10_000),
            groups=check.name_list(item, "groups", path),
            on_behalf_of=check.optional_name(item, "on_behalf_of", path),
            owner=check.optional_name(item, "owner", path),
            enabled=check.boolean(item, "enabled", path, True),
        )
        if name:
            state.agents.append(spec)


def _check_masking(check: _Checker, root: dict[Any, Any], state: DesiredState) -> None:
    """``masking:`` entries: a name, the connections it is the default of, the
    ``groups: [{group, connections}]`` it overrides the default for, and the spec keys of
    ``masking.validate_masking_spec`` (validated by their path in the file)."""
    from masking import validate_masking_spec

    seen: dict[str, str] = {}
    scopes: dict[tuple[str, str | None], str] = {}
    for path, item in check.entries(root, "masking"):
        name = check.object_name(item, path, _POLICY_NAME, seen)
        description = item.get("description", "")
        if not isinstance(description, str):
            check.add(f"{path}.description", "must be a string")
            description = ""
        spec = {k: v for k, v in item.items() if k not in MASKING_KEYS}
        for problem_path, message in validate_masking_spec(spec, path):
            check.add(problem_path, message)
        bindings: list[tuple[str, str | None, str]] = []
        for connection in check.name_list(item, "connections", path):
            bindings.append((connection, None, f"{path}.connections"))
        groups = item.get("groups", [])
        if not isinstance(groups, list):
            check.add(f"{path}.groups", "must be a list of {group, connections}")
            groups = []
        for index, entry in enumerate(groups):
            entry_path = f"{path}.groups[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("group"), str) or not entry["group"]:
                check.add(entry_path, "must be a mapping with a group name and connections")
                continue
            check.keys(entry, entry_path, ("group", "connections"))
            for connection in check.name_list(entry, "connections", entry_path):
                bindings.append((connection, entry["group"], f"{entry_path}.connections"))
        for connection, group, where in bindings:
            other = scopes.get((connection, group))
            if other is not None:
                scope = f"group {group!r}" if group else "every agent"
                check.add(
                    where, f"connection {connection!r} already has a masking policy for {scope} ({other})"
                )
            scopes[(connection, group)] = where
        if name:
            state.masking.append(MaskingSpec(name, spec, path, description, bindings))
