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
    # Per-session facts the engine may need: for PostgreSQL ``prepared`` and ``search_path``
    # (see ``policies.sql``). The gateway owns the dict and updates it with
    # ``policies.sql.apply_session_effects(session, decision.session_effects)`` once the
    # statements ran, and with ``remember_prepared``/``forget_prepared`` for Parse/Close.
    session: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # What ``statement`` holds: for PostgreSQL "query" (SQL text) or "function_call" (the
    # FunctionCall message: ``statement`` is the function's name, or ``oid:<n>``).
    kind: str = "query"


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
    # The review rule's own approval mode ("wait" or "return"); None: the connection's.
    approval_mode: str | None = None
    observed: tuple[str, ...] = ()  # names of observe-mode rules that matched
    # What the statements do to the session once they ran (PREPARE, DEALLOCATE, SET
    # search_path): ``policies.sql.apply_session_effects`` applies them.
    session_effects: tuple[tuple[str, ...], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW


ALLOW_ALL = Decision(action=Action.ALLOW, rule=None, message="no policy engine: allow all")
