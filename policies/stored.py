"""Stored policies, compiled and asked exactly as the gateway does.

The gateway, ``manage.py policy check`` and the console's "Try it" all go through these
functions, so that what an admin tries is what an agent gets: the same compile (with the
reviewer groups that can approve), the same ``Request`` fields (the connection's protocol
and name, the agent's name and groups).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import Group

from policies.engine import CompiledPolicy, compile_policy
from policies.types import Decision, Request

if TYPE_CHECKING:
    from gateway.models import Connection
    from identity.models import Agent
    from policies.models import Policy


def reviewer_groups() -> set[str]:
    """Groups with at least one active person in them: the only groups that can review.

    Agents in a group do not count: an agent never approves anything.
    """
    return set(Group.objects.filter(user__is_active=True).values_list("name", flat=True).distinct())


def compile_stored(
    policy: Policy,
    *,
    spec: dict[str, Any] | None = None,
    version: int | None = None,
    known_groups: Iterable[str] | None = None,
) -> CompiledPolicy:
    """``policy`` (its current version, or the ``spec`` of ``version``) ready to decide.

    ``known_groups``: the groups that can review, when the caller has just read them
    (``reviewer_groups()`` is asked otherwise). Raises ``policies.engine.PolicyError`` when it does not compile, including a review
    naming a group nobody can approve for.
    """
    return compile_policy(
        policy.name,
        policy.version if version is None else version,
        policy.spec if spec is None else spec,
        known_groups=reviewer_groups() if known_groups is None else known_groups,
    )


def request_for(
    connection: Connection, agent: Agent, statement: str, *, session: dict[str, Any] | None = None
) -> Request:
    """The ``Request`` the gateway builds for ``agent`` sending ``statement`` on ``connection``."""
    return Request(
        protocol=connection.kind,
        connection=connection.name,
        agent=agent.name,
        groups=frozenset(agent.group_names()),
        statement=statement,
        session=session if session is not None else {},
    )


def decision_as_dict(decision: Decision) -> dict[str, Any]:
    """A decision as plain JSON data (``policy check --json``, the console's "Try it")."""
    return {
        "action": str(decision.action),
        "rule": decision.rule,
        "message": decision.message,
        "policy": decision.policy,
        "policy_version": decision.policy_version,
        "reasons": list(decision.reasons),
        "reviewers": list(decision.reviewers),
        "approvals_needed": decision.approvals_needed,
        "timeout_seconds": decision.timeout_seconds,
        "approval_mode": decision.approval_mode,
        "observed": list(decision.observed),
        "classification": decision.classification,
    }
