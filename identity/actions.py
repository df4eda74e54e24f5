"""Every change to people, agents and tokens goes through these functions (audit included).

``actor`` is the User who asked, or a component name such as ``"cli"`` or ``"oidc"``.
Audit records hold names, prefixes and dates, never a token, password or secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.actions import record
from identity import tokens
from identity.groupmap import GroupChange, GroupMapping, plan_group_sync
from identity.models import ROLES, Agent, AgentToken, PersonToken, User

log = logging.getLogger(__name__)


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
        "external_subject": agent.external_subject,
    }


def _groups(names: Iterable[str]) -> list[Group]:
    result = []
    for name in names:
        name = name.strip()
        if not name or len(name) > 150:
            raise ValueError(f"{name!r} is not a valid group name (1 to 150 characters)")
        result.append(Group.objects.get_or_create(name=name)[0])
    return result


@transaction.atomic
def do_create_agent(
    actor: Any,
    name: str,
    *,
    groups: Iterable[str] = (),
    on_behalf_of: User | None = None,
    owner: User | None = None,
    description: str = "",
    enabled: bool = True,
    external_subject: str = "",
) -> Agent:
    """Create an agent. Raises ``ValidationError`` (bad or taken name) or ``ValueError``."""
    agent = Agent(
        name=name,
        description=description,
        on_behalf_of=on_behalf_of,
        owner=owner,
        enabled=enabled,
        external_subject=external_subject,
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
        if field not in {"description", "on_behalf_of", "owner", "enabled", "external_subject"}:
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
    """Issue a new token; the agent's other tokens keep working (rotation)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("a token's expiry must be in the future")
    if len(label) > AgentToken._meta.get_field("label").max_length:  # type: ignore[operator]
        raise ValueError("the label is too long (at most 100 characters)")
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
        after={
            "token": token.prefix,
            "label": label,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
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


def find_token(agent: Agent, prefix: str) -> AgentToken:
    """The one token of ``agent`` whose display prefix starts with ``prefix``.

    Raises ``LookupError`` with a message fit for the person who typed the prefix.
    """
    prefix = prefix.strip().rstrip("…").rstrip(".")
    if len(prefix) < 6:
        raise LookupError("give at least the first 6 characters of the token (as listed)")
    matches = list(agent.tokens.filter(prefix__startswith=prefix[: tokens.PREFIX_LENGTH]))
    if not matches:
        raise LookupError(f"agent {agent.name!r} has no token starting with {prefix!r}")
    if len(matches) > 1:
        raise LookupError(f"{prefix!r} matches {len(matches)} tokens of {agent.name!r}; give more characters")
    return matches[0]


def authenticate_token(agent_name: str | None, raw: str) -> AgentToken | None:
    """The usable token whose hash is that of ``raw`` (of agent ``agent_name`` if given).

    None for an unknown, revoked or expired token, or one whose agent is disabled.
    """
    if not tokens.looks_like_token(raw):
        return None
    found = (
        AgentToken.objects.usable()
        .select_related("agent", "agent__on_behalf_of")
        .filter(token_hash=tokens.token_hash(raw))
    )
    if agent_name is not None:
        found = found.filter(agent__name=agent_name)
    return found.first()


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


# --- People's API tokens ------------------------------------------------------------------

# A person's token lasts at most this long (every one expires), 90 days unless asked.
PERSON_TOKEN_MAX_LIFETIME = timedelta(days=365)
PERSON_TOKEN_DEFAULT_LIFETIME = timedelta(days=90)
# A token's use is noted (``last_used_at``) and audited at most once per this many seconds.
PERSON_TOKEN_USE_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedPersonToken:
    """A freshly created person's token. ``raw`` exists only here: show it once, then drop it."""

    token: PersonToken
    raw: str


class PersonTokenRefused(Exception):
    """A person's token was refused. ``reason`` is safe to show to whoever sent it (it never
    holds the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def person_token_snapshot(token: PersonToken) -> dict[str, Any]:
    return {
        "token": token.prefix,
        "name": token.name,
        "person": token.user.get_username(),
        "expires_at": token.expires_at.isoformat(),
    }


@transaction.atomic
def do_create_person_token(actor: Any, user: User, *, name: str, expires_at: datetime) -> IssuedPersonToken:
    """Create an API token for ``user`` (a person). Raises ``ValueError`` with a message fit
    for the person: no name, a name too long, an expiry in the past or too far away, or a
    disabled person."""
    name = name.strip()
    if not name:
        raise ValueError("a token needs a name (where it will be used)")
    if len(name) > PersonToken._meta.get_field("name").max_length:  # type: ignore[operator]
        raise ValueError("the name is too long (at most 100 characters)")
    now = timezone.now()
    if expires_at <= now:
        raise ValueError("a token's expiry must be in the future")
    if expires_at > now + PERSON_TOKEN_MAX_LIFETIME:
        raise ValueError(f"a person's token lasts at most {PERSON_TOKEN_MAX_LIFETIME.days} days")
    user = User.objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        raise ValueError(f"{user.get_username()} is disabled: no token can be made for them")
    raw = tokens.generate_person_token()
    token = PersonToken.objects.create(
        user=user,
        name=name,
        prefix=tokens.token_display_prefix(raw),
        token_hash=tokens.token_hash(raw),
        expires_at=expires_at,
        created_by=actor if isinstance(actor, User) else None,
    )
    record(actor, "person_token.create", user, after=person_token_snapshot(token))
    return IssuedPersonToken(token=token, raw=raw)


@transaction.atomic
def do_revoke_person_token(actor: Any, token: PersonToken) -> bool:
    """Revoke ``token`` (idempotent: False when it was revoked already)."""
    updated = PersonToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=actor if isinstance(actor, User) else None
    )
    token.refresh_from_db()
    if updated:
        record(actor, "person_token.revoke", token.user, before=person_token_snapshot(token))
    return bool(updated)


def find_person_token(user: User, prefix: str) -> PersonToken:
    """The one token of ``user`` whose display prefix starts with ``prefix`` (``LookupError``
    with a message fit for the person who typed it otherwise)."""
    prefix = prefix.strip().rstrip("…").rstrip(".")
    if len(prefix) < 6:
        raise LookupError("give at least the first 6 characters of the token (as listed)")
    matches = list(user.api_tokens.filter(prefix__startswith=prefix[: tokens.PREFIX_LENGTH]))
    name = user.get_username()
    if not matches:
        raise LookupError(f"{name} has no token starting with {prefix!r}")
    if len(matches) > 1:
        raise LookupError(f"{prefix!r} matches {len(matches)} tokens of {name}; give more characters")
    return matches[0]


def authenticate_person_token(raw: str) -> PersonToken:
    """The usable token ``raw`` is, with its person (``token.user``).

    Raises ``PersonTokenRefused`` saying why: not a person's token, unknown, revoked,
    expired, or its person is disabled. The person's roles are not looked at here: the
    caller checks them as for a browser session, at every request.
    """
    if not tokens.looks_like_person_token(raw):
        raise PersonTokenRefused(
            f"this is not an Airlock personal API token (they start with {tokens.PERSON_TOKEN_PREFIX})"
        )
    token = PersonToken.objects.select_related("user").filter(token_hash=tokens.token_hash(raw)).first()
    if token is None:
        raise PersonTokenRefused("unknown token")
    if token.revoked_at is not None:
        raise PersonTokenRefused(f"token {token.prefix}… was revoked")
    if token.expires_at <= timezone.now():
        raise PersonTokenRefused(f"token {token.prefix}… expired at {token.expires_at:%Y-%m-%d %H:%M} UTC")
    if not token.user.is_active:
        raise PersonTokenRefused(f"the account of token {token.prefix}… is disabled")
    return token


def note_person_token_used(token: PersonToken, *, source_address: str = "", path: str = "") -> bool:
    """Note that ``token`` was used: ``last_used_at`` and a ``person_token.use`` audit record,
    at most once per token per ``PERSON_TOKEN_USE_INTERVAL`` (a conditional update decides,
    so a busy script does not write on every request, and two requests at once write one
    record). True when this call noted it."""
    now = timezone.now()
    due = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - PERSON_TOKEN_USE_INTERVAL)
    updated = PersonToken.objects.filter(due, pk=token.pk).update(last_used_at=now)
    if updated:
        token.last_used_at = now
        record(
            token.user,
            "person_token.use",
            token.user,
            source_address=source_address,
            token=token.prefix,
            path=path,
        )
    return bool(updated)


def record_agent_login(
    agent: Agent,
    token: AgentToken | None,
    *,
    protocol: str,
    connection: str,
    client_address: str,
    session_id: str = "",
    subject: str = "",
    application_name: str = "",
    client_tls: str = "",
) -> None:
    """An agent logged in at the gateway: ``agent.login``, one record per session.

    The target is the token it used (``identity.agenttoken``), or the agent for a JWT
    (``subject`` says which, ``issuer|subject``). Written at login, never per statement.
    """
    record(
        agent,
        "agent.login",
        token if token is not None else agent,
        source_address=client_address[:64],
        via="token" if token is not None else "jwt",
        token_id=token.pk if token is not None else None,
        token=token.prefix if token is not None else "",
        token_label=token.label if token is not None else "",
        subject=subject,
        protocol=protocol,
        connection=connection,
        session=session_id,
        application_name=application_name[:255],
        client_tls=client_tls,
    )


def record_agent_login_failures(protocol: str, failures: list[dict[str, Any]]) -> None:
    """Failed agent logins, as ``gateway.login_audit.LoginFailureLog`` groups them: one
    ``agent.login_failed`` record each (actor ``gateway``; target the agent when one of
    that name exists). Never the credential that was tried."""
    names = {f["agent"] for f in failures if f.get("agent")}
    agents = {a.name: a for a in Agent.objects.filter(name__in=names)} if names else {}
    with transaction.atomic():
        for failure in failures:
            detail = {k: v for k, v in failure.items() if k != "address"}
            record(
                "gateway",
                "agent.login_failed",
                agents.get(failure.get("agent", "")),
                source_address=str(failure.get("address", ""))[:64],
                protocol=protocol,
                **detail,
            )


# --- People ---------------------------------------------------------------------------
def user_snapshot(user: User) -> dict[str, Any]:
    """A person's state for audit records (never the password or its hash)."""
    return {
        "username": user.get_username(),
        "email": user.email,
        "name": user.get_full_name(),
        "is_active": user.is_active,
        "groups": sorted(user.groups.values_list("name", flat=True)) if user.pk else [],
    }


def role_group(role: str) -> str:
    """The Airlock group whose members hold ``role``. Raises ``ValueError`` for an unknown role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return str(settings.AIRLOCK_ROLE_GROUPS[role])


def _group_objects(groups: Iterable[Group | str]) -> list[Group]:
    return [g if isinstance(g, Group) else Group.objects.get_or_create(name=g)[0] for g in groups]


def _lock_admin_membership() -> Group:
    """Lock the admin role group's row: changes that could remove the last admin serialise here."""
    name = settings.AIRLOCK_ROLE_GROUPS["admin"]
    Group.objects.get_or_create(name=name)
    return Group.objects.select_for_update().get(name=name)


def _other_active_admins(admin_group: Group, user: User) -> int:
    return (
        User.objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups=admin_group))
        .exclude(pk=user.pk)
        .distinct()
        .count()
    )


def _would_lose_last_admin(admin_group: Group, user: User, *, active: bool, group_ids: set[int]) -> bool:
    was_admin = (
        User.objects.filter(pk=user.pk, is_active=True)
        .filter(Q(is_superuser=True) | Q(groups=admin_group))
        .exists()
    )
    stays_admin = active and (user.is_superuser or admin_group.pk in group_ids)
    return was_admin and not stays_admin and _other_active_admins(admin_group, user) == 0


@transaction.atomic
def do_create_user(
    actor: Any,
    username: str,
    *,
    roles: Iterable[str] = (),
    groups: Iterable[Group | str] = (),
    password: str | None = None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
) -> User:
    """Create a local account. Without a password it can only log in through OIDC.

    Raises ``ValidationError`` (taken or bad username, weak password) or ``ValueError``
    (unknown role); nothing is created then.
    """
    wanted = _group_objects([role_group(role) for role in roles]) + _group_objects(groups)
    user = User(username=username, email=email, first_name=first_name, last_name=last_name)
    if password is None:
        user.set_unusable_password()
    else:
        validate_password(password, user)
        user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    user.groups.set(wanted)
    record(actor, "user.create", user, after=user_snapshot(user))
    return user


@transaction.atomic
def do_set_user_groups(actor: Any, user: User, groups: Iterable[Group | str]) -> User:
    """Set a person's groups (role groups included). The last active admin keeps the role."""
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


def people_group_mapping() -> GroupMapping:
    """The mapping from the IdP's groups claim to Airlock groups for people (settings)."""
    from identity.groupmap import normalise_group_map

    return GroupMapping(
        mapping=normalise_group_map(settings.OIDC_GROUP_MAP),
        passthrough=settings.OIDC_GROUPS_PASSTHROUGH,
        role_groups=frozenset(settings.AIRLOCK_ROLE_GROUPS.values()),
    )


# How many of the IdP's group names an audit record keeps (some people are in hundreds).
_CLAIM_GROUPS_IN_AUDIT = 100


@transaction.atomic
def do_sync_idp_groups(
    user: User,
    idp_groups: list[str],
    *,
    mapping: GroupMapping | None = None,
    actor: str = "oidc",
) -> GroupChange:
    """Set the managed part of a person's groups from the IdP's groups claim.

    Groups the mapping does not manage (see ``identity.groupmap``) are left as they are.
    Mapping targets that do not exist yet are created; passthrough never creates one.
    One audit record lists every group added and removed.
    """
    mapping = mapping or people_group_mapping()
    user = User.objects.select_for_update().get(pk=user.pk)
    before = user_snapshot(user)
    current = set(before["groups"])
    existing = (
        set(Group.objects.filter(name__in=idp_groups).values_list("name", flat=True))
        if mapping.passthrough
        else set()
    )
    desired = mapping.map_groups(idp_groups, existing)
    change = plan_group_sync(current, desired, mapping)
    if not change:
        return change
    if change.add:
        user.groups.add(*_groups(sorted(change.add)))
    if change.remove:
        user.groups.remove(*Group.objects.filter(name__in=change.remove))
    record(
        actor,
        "user.groups.sync",
        user,
        before=before,
        after=user_snapshot(user),
        added=sorted(change.add),
        removed=sorted(change.remove),
        claim_groups=sorted(idp_groups)[:_CLAIM_GROUPS_IN_AUDIT],
    )
    log.info(
        "groups of %s set from the identity provider: +%s -%s",
        user.get_username(),
        sorted(change.add),
        sorted(change.remove),
    )
    return change


# --- Groups and agent removal (used by `manage.py apply`) ---------------------------


def group_snapshot(group: Group) -> dict[str, Any]:
    return {"name": group.name, "members": sorted(group.user_set.values_list("username", flat=True))}


@transaction.atomic
def do_create_group(actor: Any, name: str, *, exist_ok: bool = True) -> Group:
    """Create the group ``name`` (an audit record). An existing group is returned when
    ``exist_ok``, otherwise refused with ``ValidationError``."""
    from django.core.exceptions import ValidationError

    from identity.models import name_validator

    name_validator(name)
    group, created = Group.objects.get_or_create(name=name)
    if created:
        record(actor, "group.create", group, after=group_snapshot(group))
    elif not exist_ok:
        raise ValidationError(f"a group named {name!r} already exists")
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
