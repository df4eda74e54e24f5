"""The protocol-neutral request the gateway asks about, and the decision it gets back.

Protocol code turns wire messages into a ``Request`` and a ``Decision`` into wire
messages; it holds no policy logic. These are plain, immutable values: safe to cache,
compare and pass between threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REVIEW = "review"


@dataclass(frozen=True)
class Request:
    """One statement or command to decide on.

    >>> Request(protocol="postgres", connection="shop", agent="billing-bot",
    ...         groups=frozenset({"agents"}), statement="SELECT 1")
    """

    protocol: str  # "postgres" | "ssh" | "kubernetes"
    connection: str
    agent: str
    groups: frozenset[str]
    statement: str
    params: tuple[str | None, ...] = ()
    # Per-session facts the engine may need (prepared statement bodies, in a transaction...).
    session: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str | None = None
    message: str = ""
    reasons: tuple[str, ...] = ()
    # Filled by the engine: operations, tables read/written, functions... (a plain dict
    # so that it can be recorded as JSON as is).
    classification: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    policy: str | None = None
    policy_version: int | None = None
    # Review details, for the approvals machinery.
    reviewers: tuple[str, ...] = ()
    approvals_needed: int = 1
    timeout_seconds: int | None = None
    observed: tuple[str, ...] = ()  # names of observe-mode rules that matched

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW


ALLOW_ALL = Decision(action=Action.ALLOW, rule=None, message="no policy engine: allow all")
