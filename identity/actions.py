"""Every change to agents and tokens goes through these functions (audit included)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from audit.actions import record
from identity import tokens
from identity.models import Agent, AgentToken, User


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token. ``raw`` exists only here: show it once, then drop it."""

    token: AgentToken
    raw: str


def agent_snapshot(agent: Agent) -> dict[str, Any]:
    return {
        "name": agent.name,
        "description": agent.description,
        "groups": agent.group_names() if agent.pk else [],
        "on_behalf_of": agent.on_behalf_of.get_username() if agent.on_behalf_of_id else None,
        "owner": agent.owner.get_username() if agent.owner_id else None,
        "enabled": agent.enabled,
    }


def _groups(names: list[str]) -> list[Group]:
    return [Group.objects.get_or_create(name=name)[0] for name in names]


@transaction.atomic
def do_create_agent(
    actor: Any,
    name: str,
    *,
    groups: list[str] = (),  # type: ignore[assignment]
    on_behalf_of: User | None = None,
    owner: User | None = None,
    description: str = "",
    enabled: bool = True,
) -> Agent:
    agent = Agent(
        name=name,
        description=description,
        on_behalf_of=on_behalf_of,
        owner=owner,
        enabled=enabled,
        scram_salt=tokens.new_salt(),
    )
    agent.full_clean(exclude=["scram_salt"])
    agent.save()
    agent.groups.set(_groups(list(groups)))
    record(actor, "agent.create", agent, after=agent_snapshot(agent))
    return agent


@transaction.atomic
def do_update_agent(actor: Any, agent: Agent, **changes: Any) -> Agent:
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    before = agent_snapshot(agent)
    group_names = changes.pop("groups", None)
    for field, value in changes.items():
        if field not in {"description", "on_behalf_of", "owner", "enabled"}:
            raise ValueError(f"cannot change agent field {field!r}")
        setattr(agent, field, value)
    agent.full_clean(exclude=["scram_salt"])
    agent.save()
    if group_names is not None:
        agent.groups.set(_groups(list(group_names)))
    after = agent_snapshot(agent)
    if after != before:
        record(actor, "agent.update", agent, before=before, after=after)
    return agent


@transaction.atomic
def do_issue_token(
    actor: Any, agent: Agent, *, expires_at: datetime | None = None, label: str = ""
) -> IssuedToken:
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if not agent.scram_salt:
        agent.scram_salt = tokens.new_salt()
        agent.save(update_fields=["scram_salt"])
    raw = tokens.generate_token()
    token = AgentToken.objects.create(
        agent=agent,
        label=label,
        prefix=tokens.token_display_prefix(raw),
        token_hash=tokens.token_hash(raw),
        scram_verifier=tokens.make_verifier(raw, bytes(agent.scram_salt)).encode(),
        expires_at=expires_at,
        created_by=actor if isinstance(actor, User) else None,
    )
    record(
        actor,
        "token.issue",
        agent,
        after={"token": token.prefix, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    return IssuedToken(token=token, raw=raw)


@transaction.atomic
def do_revoke_token(actor: Any, token: AgentToken) -> AgentToken:
    updated = AgentToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db()
    if updated:
        record(actor, "token.revoke", token.agent, detail_token=token.prefix)
    return token


def authenticate_token(agent_name: str, raw: str) -> AgentToken | None:
    """The usable token of ``agent_name`` whose hash is that of ``raw``, else None."""
    if not tokens.looks_like_token(raw):
        return None
    token = (
        AgentToken.objects.usable()
        .select_related("agent")
        .filter(token_hash=tokens.token_hash(raw), agent__name=agent_name)
        .first()
    )
    return token


def scram_verifiers_for(
    agent_name: str,
) -> tuple[Agent | None, list[tuple[AgentToken, tokens.ScramVerifier]]]:
    """The enabled agent and its usable tokens' SCRAM verifiers (for the gateway's login)."""
    agent = Agent.objects.enabled().filter(name=agent_name).first()
    if agent is None:
        return None, []
    return agent, [
        (token, tokens.ScramVerifier.decode(token.scram_verifier)) for token in agent.tokens.usable()
    ]


def note_token_used(token: AgentToken) -> None:
    # A conditional update so that a busy agent does not write on every connection.
    now = timezone.now()
    AgentToken.objects.filter(pk=token.pk).exclude(last_used_at__gt=now - timedelta(minutes=1)).update(
        last_used_at=now
    )


# --- Groups and agent removal (used by `manage.py apply`) ---------------------------


def group_snapshot(group: Group) -> dict[str, Any]:
    return {"name": group.name, "members": sorted(group.user_set.values_list("username", flat=True))}


@transaction.atomic
def do_create_group(actor: Any, name: str) -> Group:
    """Create the group ``name`` (an audit record), or return it when it exists."""
    group, created = Group.objects.get_or_create(name=name)
    if created:
        record(actor, "group.create", group, after=group_snapshot(group))
    return group


@transaction.atomic
def do_set_group_members(actor: Any, group: Group, people: list[User]) -> Group:
    """Make ``people`` exactly the people in ``group`` (agents' groups are not touched)."""
    group = Group.objects.select_for_update().get(pk=group.pk)
    before = group_snapshot(group)
    group.user_set.set(people)
    after = group_snapshot(group)
    if after != before:
        record(actor, "group.members", group, before=before, after=after)
    return group


@transaction.atomic
def do_delete_agent(actor: Any, agent: Agent) -> None:
    """Delete the agent and its tokens (recordings keep its name)."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    before = agent_snapshot(agent)
    before["tokens"] = list(agent.tokens.values_list("prefix", flat=True))
    record(actor, "agent.delete", agent, before=before)
    agent.delete()
