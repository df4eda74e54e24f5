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


# --- People and groups (console pages, demo data) ---------------------------------------


def user_snapshot(user: User) -> dict[str, Any]:
    """A person's state for audit records (never the password or its hash)."""
    return {
        "username": user.get_username(),
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_active": user.is_active,
        "groups": sorted(g.name for g in user.groups.all()) if user.pk else [],
    }


def _group_objects(groups: Any) -> list[Group]:
    return [g if isinstance(g, Group) else Group.objects.get_or_create(name=g)[0] for g in groups]


def _lock_admin_membership() -> Group:
    """Lock the admin role group's row: changes that could remove the last admin serialise here."""
    from django.conf import settings

    name = settings.AIRLOCK_ROLE_GROUPS["admin"]
    Group.objects.get_or_create(name=name)
    return Group.objects.select_for_update().get(name=name)


def _other_active_admins(admin_group: Group, user: User) -> int:
    from django.db.models import Q

    return (
        User.objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups=admin_group))
        .exclude(pk=user.pk)
        .distinct()
        .count()
    )


def _would_lose_last_admin(admin_group: Group, user: User, *, active: bool, group_ids: set[int]) -> bool:
    from django.db.models import Q

    was_admin = (
        User.objects.filter(pk=user.pk, is_active=True)
        .filter(Q(is_superuser=True) | Q(groups=admin_group))
        .exists()
    )
    stays_admin = active and (user.is_superuser or admin_group.pk in group_ids)
    return was_admin and not stays_admin and _other_active_admins(admin_group, user) == 0


@transaction.atomic
def do_create_group(actor: Any, name: str) -> Group:
    from django.core.exceptions import ValidationError

    from identity.models import name_validator

    name_validator(name)
    if Group.objects.filter(name=name).exists():
        raise ValidationError(f"a group named {name!r} already exists")
    group = Group.objects.create(name=name)
    record(actor, "group.create", group, after={"name": name})
    return group


@transaction.atomic
def do_create_user(
    actor: Any,
    username: str,
    *,
    password: str | None = None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    groups: Any = (),
) -> User:
    """Create a local account. Without ``password`` the account cannot log in locally."""
    user = User(username=username, email=email, first_name=first_name, last_name=last_name)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean()
    user.save()
    user.groups.set(_group_objects(groups))
    record(actor, "user.create", user, after=user_snapshot(user))
    return user


@transaction.atomic
def do_set_user_groups(actor: Any, user: User, groups: Any) -> User:
    """Set a person's groups (role groups included). The last active admin keeps the role."""
    from django.core.exceptions import ValidationError

    admin_group = _lock_admin_membership()
    user = User.objects.select_for_update().get(pk=user.pk)
    before = user_snapshot(user)
    wanted = _group_objects(groups)
    if _would_lose_last_admin(admin_group, user, active=user.is_active, group_ids={g.pk for g in wanted}):
        raise ValidationError(
            f"{user.get_username()} is the last active admin: the admin role cannot be removed"
        )
    user.groups.set(wanted)
    after = user_snapshot(user)
    if after != before:
        record(actor, "user.groups", user, before=before, after=after)
    return user


@transaction.atomic
def do_set_user_active(actor: Any, user: User, active: bool) -> User:
    """Enable or disable a person's login. Nobody disables themselves or the last admin."""
    from django.core.exceptions import ValidationError

    admin_group = _lock_admin_membership()
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active == active:
        return user
    if not active and isinstance(actor, User) and actor.pk == user.pk:
        raise ValidationError("you cannot disable your own account")
    group_ids = set(user.groups.values_list("pk", flat=True))
    if _would_lose_last_admin(admin_group, user, active=active, group_ids=group_ids):
        raise ValidationError(f"{user.get_username()} is the last active admin and cannot be disabled")
    before = user_snapshot(user)
    user.is_active = active
    user.save(update_fields=["is_active"])
    record(actor, "user.enable" if active else "user.disable", user, before=before, after=user_snapshot(user))
    return user
