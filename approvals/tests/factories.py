"""Approval requests made the way the gateway makes them (``approvals.gateway.open_request``).

The world: the connection ``shop``, the agent ``billing-bot`` (acting for dave, owned by
olivia), reviewers bob and erin in ``dba``; dave is a reviewer in ``dba`` too, so that
self-approval (WF-02) has someone to refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group

from approvals.gateway import open_request
from approvals.models import ApprovalRequest
from console.tests.factories import make_agent, make_connection
from policies.types import Action, Decision, Request

DELETE = "DELETE FROM orders WHERE id = $1"


def person(username: str, *groups: str, email: str = "") -> Any:
    from identity.models import User

    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(f"{username}-Pass-1234")
    user.email = email or user.email
    user.save()
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


def reviewer(username: str, *groups: str, email: str = "") -> Any:
    return person(username, settings.AIRLOCK_ROLE_GROUPS["reviewer"], *(groups or ("dba",)), email=email)


@dataclass
class World:
    connection: Any
    agent: Any
    dave: Any
    olivia: Any
    erin: Any


def make_world(**agent_fields: Any) -> World:
    dave = reviewer("dave", email="dave@example.test")
    olivia = person("olivia", email="olivia@example.test")
    erin = reviewer("erin", email="erin@example.test")
    connection = make_connection()
    agent = make_agent(on_behalf_of=dave, owner=olivia, **agent_fields)
    return World(connection, agent, dave, olivia, erin)


def review_decision(
    reviewers: tuple[str, ...] = ("dba",),
    approvals: int = 1,
    timeout: int | None = 600,
    statement: str = DELETE,
) -> Decision:
    return Decision(
        action=Action.REVIEW,
        rule="writes",
        message="held for review by rule 'writes' of policy 'agents'",
        classification={
            "statements": [
                {
                    "text": statement,
                    "statement": "DeleteStmt",
                    "operations": ["write"],
                    "tables_written": ["public.orders"],
                    "facts": [],
                }
            ],
            "operations": ["write"],
            "tables_read": [],
            "tables_written": ["public.orders"],
            "facts": [],
        },
        policy="agents",
        policy_version=3,
        reviewers=reviewers,
        approvals_needed=approvals,
        timeout_seconds=timeout,
    )


def statement_request(
    statement: str = DELETE,
    params: tuple[str | None, ...] = ("42",),
    agent: str = "billing-bot",
    connection: str = "shop",
) -> Request:
    return Request(
        protocol="postgres",
        connection=connection,
        agent=agent,
        groups=frozenset({"agents"}),
        statement=statement,
        params=params,
    )


def make_request(
    world: World,
    *,
    statement: str = DELETE,
    params: tuple[str | None, ...] = ("42",),
    decision: Decision | None = None,
    **options: Any,
) -> ApprovalRequest:
    options.setdefault("estimate", False)
    held = open_request(
        decision or review_decision(statement=statement),
        statement_request(statement, params),
        agent_id=world.agent.pk,
        connection_id=world.connection.pk,
        **options,
    )
    return ApprovalRequest.objects.get(pk=held.id)


def _closing(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from django.db import connections

    try:
        return fn(*args, **kwargs)
    finally:
        connections.close_all()


async def in_db(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ORM code from an async test, in a thread whose connection is closed afterwards
    (pytest-django must be able to flush and drop the test database)."""
    import asyncio

    return await asyncio.to_thread(_closing, fn, *args, **kwargs)
