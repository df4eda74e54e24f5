"""Mapping identity-provider groups to Airlock groups (pure functions, no ORM).

The same rules serve people logging in through OpenID Connect and agents presenting a
JWT, so that one IdP group means the same thing for both.

The rule for which of a person's groups a login may change ("managed" groups):

* Without passthrough, only the *targets* of the mapping are managed. A group an admin
  assigned by hand that no IdP group maps to is never touched by a login.
* With passthrough on, every group is managed: the IdP is the only source of the
  person's groups, and groups assigned by hand are removed at the next login.

Passthrough only ever adds a person to an Airlock group that already exists (a login
never creates groups from arbitrary IdP names) and never to a role group: a role is
granted only by an explicit mapping entry, because many IdPs let people create or
name groups themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Django's auth.Group.name is at most 150 characters.
MAX_GROUP_NAME = 150


def parse_group_map(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """Parse ``idp-group=airlock-group`` entries; an IdP group may map to several groups.

    Raises ``ValueError`` naming the first malformed entry.
    """
    result: dict[str, set[str]] = {}
    for entry in entries:
        idp, sep, airlock = entry.partition("=")
        idp, airlock = idp.strip(), airlock.strip()
        if not sep or not idp or not airlock:
            raise ValueError(f"{entry!r} is not of the form idp-group=airlock-group")
        if len(airlock) > MAX_GROUP_NAME:
            raise ValueError(f"{airlock!r} is longer than {MAX_GROUP_NAME} characters")
        result.setdefault(idp, set()).add(airlock)
    return {idp: frozenset(targets) for idp, targets in result.items()}


def normalise_group_map(raw: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Accept ``{idp: "airlock"}`` or ``{idp: ["a", "b"]}`` (settings written by hand)."""
    result: dict[str, frozenset[str]] = {}
    for idp, targets in raw.items():
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(idp, str) or not idp or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"group map entry {idp!r}: expected non-empty group names")
        result[idp] = frozenset(targets)
    return result


_MISSING = object()


def _lookup(claims: Mapping[str, Any], claim: str) -> Any:
    value: Any = claims.get(claim, _MISSING)
    if value is _MISSING and "." in claim:
        value = claims
        for part in claim.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return _MISSING
            value = value[part]
    return value


def has_claim(claims: Mapping[str, Any], claim: str) -> bool:
    """True when ``claim`` (a key, or a dotted path) is present in ``claims``."""
    return _lookup(claims, claim) is not _MISSING


def claim_values(claims: Mapping[str, Any], claim: str) -> list[str] | None:
    """The list of strings held by ``claim``; ``[]`` when absent; ``None`` when malformed.

    ``claim`` is looked up as a key first (Auth0 and Entra use URL-like claim names that
    contain dots), then as a dotted path into nested objects (Keycloak's
    ``realm_access.roles``). A single string counts as a one-element list.
    """
    value = _lookup(claims, claim)
    if value is _MISSING or value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


@dataclass(frozen=True)
class GroupMapping:
    """How IdP group names become Airlock group names.

    >>> m = GroupMapping({"eng-admins": frozenset({"admins"})}, role_groups=frozenset({"admins"}))
    >>> sorted(m.map_groups(["eng-admins", "other"], existing=()))
    ['admins']
    """

    mapping: Mapping[str, frozenset[str]] = field(default_factory=dict)
    passthrough: bool = False
    role_groups: frozenset[str] = frozenset()

    @property
    def targets(self) -> frozenset[str]:
        return frozenset().union(*self.mapping.values()) if self.mapping else frozenset()

    def manages(self, group: str) -> bool:
        """True when a login sets this group (adds or removes it) from the IdP's claim."""
        return self.passthrough or group in self.targets

    def map_groups(self, idp_groups: Iterable[str], existing: Collection[str]) -> frozenset[str]:
        """The Airlock groups that ``idp_groups`` grant; ``existing`` are the groups that exist."""
        result: set[str] = set()
        for name in idp_groups:
            if name in self.mapping:
                result |= self.mapping[name]
            elif (
                self.passthrough
                and name in existing
                and name not in self.role_groups
                and len(name) <= MAX_GROUP_NAME
            ):
                result.add(name)
        return frozenset(result)


@dataclass(frozen=True)
class GroupChange:
    add: frozenset[str]
    remove: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def plan_group_sync(current: Collection[str], desired: Collection[str], mapping: GroupMapping) -> GroupChange:
    """The groups to add and remove so that the managed part of ``current`` is ``desired``."""
    have = set(current)
    want = set(desired)
    return GroupChange(
        add=frozenset(want - have),
        remove=frozenset(name for name in have if mapping.manages(name) and name not in want),
    )
