"""People, agents (service identities) and their tokens.

Groups are Django's ``auth.Group``: the same groups hold people (reviewer groups named
by policies, role groups) and agents (the groups that policies and connections name).
Roles are membership in the role groups named by ``settings.AIRLOCK_ROLE_GROUPS``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

ROLES = ("admin", "reviewer", "auditor")

name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$",
    "Use letters, digits, '.', '_' and '-', starting with a letter or digit (at most 63).",
)


external_subject_validator = RegexValidator(
    r"^[^|\s]+\|\S.*$",
    "Use <issuer>|<subject>, for example https://idp.example.com/realms/ops|billing-bot.",
)


def _role_flag(role: str) -> str:
    return f"airlock_holds_{role}"


def with_roles(users: models.QuerySet[User]) -> models.QuerySet[User]:
    """``users`` with each person's roles read in the same query, so that their
    ``role_names()`` (and ``has_role()``) ask the database nothing more.

    For a check made on every request or websocket event: the roles are read afresh with
    the person each time, never kept between two checks.
    """
    through = User.groups.through
    return users.annotate(
        **{
            _role_flag(role): models.Exists(
                through.objects.filter(user_id=models.OuterRef("pk"), group__name=group)
            )
            for role, group in settings.AIRLOCK_ROLE_GROUPS.items()
        }
    )


class User(AbstractUser):
    """A person who logs in to the console (locally or through OIDC)."""

    def remember_roles(self, roles: set[str]) -> None:
        """Take ``roles`` as this person's roles (read with the person: ``with_roles``)."""
        self._airlock_roles = set(roles)

    def role_names(self) -> set[str]:
        if not self.is_active:
            return set()
        if self.is_superuser:
            return set(ROLES)
        cached = getattr(self, "_airlock_roles", None)
        if cached is None:
            flags = {role: getattr(self, _role_flag(role), None) for role in settings.AIRLOCK_ROLE_GROUPS}
            if None not in flags.values():
                cached = {role for role, held in flags.items() if held}
            else:
                wanted = {group: role for role, group in settings.AIRLOCK_ROLE_GROUPS.items()}
                names = self.groups.filter(name__in=wanted).values_list("name", flat=True)
                cached = {wanted[name] for name in names}
            self.remember_roles(cached)
        return set(cached)

    def has_role(self, *roles: str) -> bool:
        """True when the person holds any of ``roles``."""
        return bool(self.role_names() & set(roles))

    @property
    def is_airlock_admin(self) -> bool:
        return self.has_role("admin")

    @property
    def is_reviewer(self) -> bool:
        return self.has_role("reviewer")

    @property
    def is_auditor(self) -> bool:
        return self.has_role("auditor")


class AgentQuerySet(models.QuerySet["Agent"]):
    def enabled(self) -> AgentQuerySet:
        return self.filter(enabled=True)


class Agent(models.Model):
    """A service identity: an AI assistant, CI bot or script that connects to the gateway.

    Agents authenticate with Airlock tokens (``AgentToken``) or with JWTs from a
    configured issuer; they never hold a target credential.
    """

    name = models.CharField(max_length=63, unique=True, validators=[name_validator])
    description = models.TextField(blank=True)
    groups = models.ManyToManyField(Group, blank=True, related_name="agents")
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agents_acting_for",
        help_text="The person this agent acts for.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_agents",
    )
    enabled = models.BooleanField(default=True)
    # Binds the agent to a JWT subject, "<issuer>|<subject>" (see identity.jwt): a JWT
    # from that issuer with that subject authenticates as this agent.
    external_subject = models.CharField(
        max_length=255,
        blank=True,
        default="",
        validators=[external_subject_validator],
        help_text="<issuer>|<subject> of the JWTs that authenticate as this agent.",
    )
    # All tokens of an agent share one SCRAM salt, so that the gateway can send the salt
    # before it knows which of the agent's tokens the client holds (RFC 5802 section 5).
    scram_salt = models.BinaryField(max_length=32, editable=False, default=b"")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # Two agents bound to one subject would make a JWT's agent ambiguous.
            models.UniqueConstraint(
                fields=["external_subject"],
                condition=~models.Q(external_subject=""),
                name="identity_agent_unique_external_subject",
                violation_error_message="Another agent is already bound to this subject.",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def group_names(self) -> list[str]:
        return sorted(group.name for group in self.groups.all())


class AgentTokenQuerySet(models.QuerySet["AgentToken"]):
    def usable(self) -> AgentTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, agent__enabled=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class AgentToken(models.Model):
    """One of an agent's tokens. The raw token is shown once and never stored.

    ``token_hash`` is SHA-256 of the raw token (the token carries 256 bits of randomness,
    so a fast hash is enough and a lookup by hash is constant-time in effect).
    ``scram_verifier`` is ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``
    (PostgreSQL's format) for the PostgreSQL gateway's SCRAM login.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tokens")
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True)
    scram_verifier = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = AgentTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent.name}:{self.prefix}…"

    def is_usable(self, now=None) -> bool:  # type: ignore[no-untyped-def]
        now = now or timezone.now()
        if self.revoked_at is not None or not self.agent.enabled:
            return False
        return self.expires_at is None or self.expires_at > now

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class PersonTokenQuerySet(models.QuerySet["PersonToken"]):
    def active(self) -> PersonTokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=timezone.now())


class PersonToken(models.Model):
    """One of a person's API tokens, for the console's HTTP JSON API (docs/api.md).

    Not an agent's token: it never opens a gateway session, and it acts with its person's
    roles as they are at each request. The raw token (``alp_`` and 43 url-safe base64
    characters) is shown once and stored only as SHA-256 (``token_hash``), like an
    ``AgentToken``. Every token expires.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="Where the token is used (a chat bot, a script).")
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set at most once a minute (identity.actions.note_person_token_used).
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = PersonTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user.get_username()}:{self.prefix}…"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "active"
