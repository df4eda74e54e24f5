"""Who an agent is once it has proved it: the same value for Airlock tokens and JWTs.

The gateway authenticates a connection with :func:`authenticate_agent` (or, for the
PostgreSQL SCRAM login that never sees the raw token, with
``identity.actions.scram_verifiers_for`` then :func:`identity_for_token`) and from then on
works with an :class:`AgentIdentity` only, whichever way the agent logged in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from identity.models import Agent, AgentToken


class AgentAuthError(Exception):
    """An agent's credential was refused. ``reason`` is safe to show to the agent.

    It never contains the credential itself.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AgentIdentity:
    """An authenticated agent.

    >>> identity = authenticate_agent(raw_token, agent_name="billing-bot")
    >>> identity.name, sorted(identity.groups), identity.via
    ('billing-bot', ['agents'], 'token')

    ``groups`` are the agent's own groups plus, for a JWT, the groups its claim maps to.
    ``expires_at`` is when the credential stops being valid (None: never); a gateway may
    end a long session then.
    """

    agent: Agent
    name: str
    groups: frozenset[str]
    on_behalf_of: str | None
    via: Literal["token", "jwt"]
    token_id: int | None = None
    expires_at: datetime | None = None
    # "<issuer>|<subject>" for a JWT, so that audit and recordings can say which one.
    subject: str = ""


def _on_behalf_of(agent: Agent) -> str | None:
    return agent.on_behalf_of.get_username() if agent.on_behalf_of_id else None  # type: ignore[union-attr]


def identity_for_token(token: AgentToken) -> AgentIdentity:
    """The identity of the agent holding ``token`` (already checked to be usable)."""
    agent = token.agent
    return AgentIdentity(
        agent=agent,
        name=agent.name,
        groups=frozenset(agent.group_names()),
        on_behalf_of=_on_behalf_of(agent),
        via="token",
        token_id=token.pk,
        expires_at=token.expires_at,
    )


def identity_for_jwt(
    agent: Agent, claim_groups: frozenset[str], expires_at: datetime, subject: str
) -> AgentIdentity:
    return AgentIdentity(
        agent=agent,
        name=agent.name,
        groups=frozenset(agent.group_names()) | claim_groups,
        on_behalf_of=_on_behalf_of(agent),
        via="jwt",
        token_id=None,
        expires_at=expires_at,
        subject=subject,
    )


def looks_like_jwt(raw: str) -> bool:
    return raw.count(".") == 2 and raw.startswith("ey")


def authenticate_agent(raw: str, *, agent_name: str | None = None) -> AgentIdentity:
    """Check an Airlock token (``alk_...``) or a JWT and return the agent's identity.

    ``agent_name`` is the name the client gave (the PostgreSQL user, the SSH user); when
    given, the credential must belong to that agent. Records the token's use. Raises
    :class:`AgentAuthError`. Synchronous (database, and network for a JWKS refresh):
    call it through ``sync_to_async`` from the gateway.
    """
    from identity import jwt as agent_jwt
    from identity import tokens
    from identity.actions import authenticate_token, note_token_used

    if tokens.looks_like_token(raw):
        token = authenticate_token(agent_name, raw)
        if token is None:
            raise AgentAuthError("the token is unknown, expired or revoked, or its agent is disabled")
        note_token_used(token)
        return identity_for_token(token)
    if looks_like_jwt(raw):
        identity = agent_jwt.verify_agent_jwt(raw)
        if agent_name is not None and identity.name != agent_name:
            raise AgentAuthError(f"the token belongs to another agent than {agent_name!r}")
        return identity
    raise AgentAuthError("not an Airlock token (alk_...) or a JWT")
