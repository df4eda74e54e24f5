"""Forms of the console pages.

Forms only validate and translate what a person typed into the arguments of an action
function (``gateway.actions``, ``identity.actions``); they never save anything themselves.
Secret fields are write-only: their widgets never render a value, not even the one just
typed into a form that failed validation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.forms.utils import pretty_name

from gateway.models import Connection
from identity.models import User, name_validator
from policies.models import Policy

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class SecretTextarea(forms.Textarea):
    """A textarea that never renders a value (for private keys and certificates)."""

    def format_value(self, value: Any) -> None:
        return None


def secret_input() -> forms.PasswordInput:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


def group_field(help_text: str) -> forms.ModelMultipleChoiceField:
    return forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=help_text,
    )


def person_field(label: str, help_text: str = "") -> forms.ModelChoiceField:
    return forms.ModelChoiceField(
        # Disabled people stay choosable: an agent acting for one must still be editable.
        queryset=User.objects.order_by("username"),
        required=False,
        label=label,
        help_text=help_text,
        to_field_name="username",
    )


# --- Connections -----------------------------------------------------------------------------


class ConnectionForm(forms.Form):
    """The fields every kind shares. Subclasses add the kind's fields and secrets.

    ``secret_fields`` maps a secret's name (a key of ``gateway.secrets.SECRET_FIELDS``) to its
    form field. Each secret gets a ``clear_<name>`` checkbox; a blank secret keeps the
    current value.
    """

    kind: str = ""
    secret_fields: tuple[str, ...] = ()
    option_fields: tuple[str, ...] = ()

    name = forms.CharField(
        max_length=63,
        validators=[name_validator],
        help_text="What agents use to reach this target.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    groups = group_field("Agents in these groups may use the connection.")
    policy = forms.ModelChoiceField(
        queryset=Policy.objects.order_by("name"),
        required=False,
        empty_label="(no policy: every statement is denied)",
        to_field_name="name",
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(
        self,
        *args: Any,
        instance: Connection | None = None,
        secrets_set: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        self.instance = instance
        self.secrets_set = set(secrets_set)
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = self.initial_from(instance)
        super().__init__(*args, **kwargs)
        for name in self.secret_fields:
            label = (self.fields[name].label or pretty_name(name)).lower()
            self.fields[f"clear_{name}"] = forms.BooleanField(
                required=False, label=f"Clear the stored {label}"
            )

    # Subclasses map between the form and the model.
    def initial_from(self, instance: Connection) -> dict[str, Any]:
        initial: dict[str, Any] = {
            "name": instance.name,
            "description": instance.description,
            "groups": list(instance.groups.all()),
            "policy": instance.policy,
            "enabled": instance.enabled,
            "host": instance.host,
            "port": instance.port,
            "database": instance.database,
            "username": instance.username,
        }
        for option in self.option_fields:
            initial[option] = instance.options.get(option, "")
        return initial

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        taken = Connection.objects.filter(name=name)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise ValidationError("A connection with this name already exists.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in self.secret_fields:
            if cleaned.get(name) and cleaned.get(f"clear_{name}"):
                self.add_error(f"clear_{name}", "Give a new value or clear it, not both.")
        return cleaned

    def secret_will_be_set(self, name: str) -> bool:
        if self.cleaned_data.get(f"clear_{name}"):
            return False
        return bool(self.cleaned_data.get(name)) or name in self.secrets_set

    def secret_values(self) -> dict[str, str]:
        """New values and clears only; a secret left blank is not named (keeps its value)."""
        values: dict[str, str] = {}
        for name in self.secret_fields:
            if self.cleaned_data.get(f"clear_{name}"):
                values[name] = ""
            elif self.cleaned_data.get(name):
                values[name] = self.cleaned_data[name]
        return values

    def options(self) -> dict[str, Any]:
        options = dict(self.instance.options) if self.instance is not None else {}
        for option in self.option_fields:
            value = self.cleaned_data.get(option)
            if value:
                options[option] = value
            else:
                options.pop(option, None)
        return options

    def action_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data["description"],
            "host": data.get("host", ""),
            "port": data.get("port"),
            "database": data.get("database", ""),
            "username": data.get("username", ""),
            "options": self.options(),
            "policy": data["policy"],
            "enabled": data["enabled"],
        }

    def secret_bound_fields(self) -> list[dict[str, Any]]:
        return [
            {"field": self[name], "clear": self[f"clear_{name}"], "is_set": name in self.secrets_set}
            for name in self.secret_fields
        ]

    def plain_bound_fields(self) -> list[forms.BoundField]:
        hidden = set(self.secret_fields) | {f"clear_{name}" for name in self.secret_fields}
        return [self[name] for name in self.fields if name not in hidden]


def _pem_certificates(value: str) -> str:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        raise ValidationError("Not a PEM certificate (-----BEGIN CERTIFICATE----- ...).") from None
    return value


class PostgresConnectionForm(ConnectionForm):
    kind = "postgres"
    secret_fields = ("password", "ca_cert")
    option_fields = ("sslmode",)
    field_order = ["name", "description", "host", "port", "database", "username", "sslmode"]

    host = forms.CharField(max_length=255)
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, help_text="Default 5432.")
    database = forms.CharField(max_length=255)
    username = forms.CharField(max_length=255)
    sslmode = forms.ChoiceField(choices=[(m, m) for m in SSLMODES], initial="prefer", label="SSL mode")
    password = forms.CharField(required=False, widget=secret_input())
    ca_cert = forms.CharField(
        required=False, label="CA certificate", widget=SecretTextarea(attrs={"rows": 4}), help_text="PEM."
    )

    def clean_ca_cert(self) -> str:
        value = self.cleaned_data["ca_cert"].strip()
        return _pem_certificates(value) if value else ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("sslmode") in {"verify-ca", "verify-full"} and not self.secret_will_be_set("ca_cert"):
            self.add_error("ca_cert", "verify-ca and verify-full need a CA certificate.")
        return cleaned


class SSHConnectionForm(ConnectionForm):
    kind = "ssh"
    secret_fields = ("password", "private_key")
    option_fields = ("host_key",)
    field_order = ["name", "description", "host", "port", "username", "host_key"]

    host = forms.CharField(max_length=255)
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, help_text="Default 22.")
    username = forms.CharField(max_length=255, help_text="The account on the target host.")
    host_key = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The target's public host key (ssh-ed25519 AAAA...). Without it the gateway cannot "
        "verify the host.",
    )
    password = forms.CharField(required=False, widget=secret_input())
    private_key = forms.CharField(
        required=False,
        widget=SecretTextarea(attrs={"rows": 4}),
        help_text="An unencrypted private key (OpenSSH or PEM).",
    )

    def clean_private_key(self) -> str:
        import asyncssh

        value = self.cleaned_data["private_key"].strip()
        if not value:
            return ""
        try:
            asyncssh.import_private_key(value + "\n")
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError):
            # The library's message is not shown: it could quote part of the key.
            raise ValidationError(
                "Not a valid unencrypted private key (OpenSSH, PKCS#1 or PKCS#8)."
            ) from None
        return value + "\n"

    def clean_host_key(self) -> str:
        import asyncssh

        value = " ".join(self.cleaned_data["host_key"].split())
        if not value:
            return ""
        try:
            asyncssh.import_public_key(value)
        except (asyncssh.KeyImportError, ValueError):
            raise ValidationError("Not a public key in OpenSSH format (type base64 [comment]).") from None
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors and not (
            self.secret_will_be_set("password") or self.secret_will_be_set("private_key")
        ):
            raise ValidationError("Give a password or a private key.")
        return cleaned


class KubernetesConnectionForm(ConnectionForm):
    kind = "kubernetes"
    secret_fields = ("token", "ca_cert")
    option_fields = ("namespace",)
    field_order = ["name", "description", "api_server", "namespace"]

    api_server = forms.URLField(
        label="API server URL",
        assume_scheme="https",
        help_text="https://host[:port] of the cluster's API server.",
    )
    namespace = forms.CharField(max_length=63, initial="default")
    token = forms.CharField(required=False, label="Bearer token", widget=secret_input())
    ca_cert = forms.CharField(
        required=False, label="CA certificate", widget=SecretTextarea(attrs={"rows": 4}), help_text="PEM."
    )

    def initial_from(self, instance: Connection) -> dict[str, Any]:
        initial = super().initial_from(instance)
        port = f":{instance.port}" if instance.port and instance.port != 443 else ""
        initial["api_server"] = f"https://{instance.host}{port}" if instance.host else ""
        return initial

    def clean_api_server(self) -> str:
        value = self.cleaned_data["api_server"]
        parts = urlsplit(value)
        if parts.scheme != "https":
            raise ValidationError("The API server is reached over HTTPS.")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValidationError("Give only https://host[:port].")
        return value

    def clean_ca_cert(self) -> str:
        value = self.cleaned_data["ca_cert"].strip()
        return _pem_certificates(value) if value else ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors and not self.secret_will_be_set("token"):
            self.add_error("token", "A bearer token is needed.")
        return cleaned

    def action_fields(self) -> dict[str, Any]:
        fields = super().action_fields()
        parts = urlsplit(self.cleaned_data["api_server"])
        fields["host"] = parts.hostname or ""
        fields["port"] = parts.port
        return fields


CONNECTION_FORMS: dict[str, type[ConnectionForm]] = {
    form.kind: form for form in (PostgresConnectionForm, SSHConnectionForm, KubernetesConnectionForm)
}


# --- Agents and tokens -----------------------------------------------------------------------


class AgentForm(forms.Form):
    name = forms.CharField(max_length=63, validators=[name_validator])
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    groups = group_field("Policies and connections name these groups.")
    on_behalf_of = person_field("On behalf of", "The person this agent acts for.")
    owner = person_field("Owner", "Who answers for this agent.")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, agent: Any = None, **kwargs: Any) -> None:
        self.agent = agent
        if agent is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": agent.name,
                "description": agent.description,
                "groups": list(agent.groups.all()),
                "on_behalf_of": agent.on_behalf_of,
                "owner": agent.owner,
                "enabled": agent.enabled,
            }
        super().__init__(*args, **kwargs)
        if agent is not None:
            # An agent's name is its login at the gateway: it is fixed once created.
            self.fields["name"].disabled = True

    def clean_name(self) -> str:
        from identity.models import Agent

        name = self.cleaned_data["name"]
        if self.agent is None and Agent.objects.filter(name=name).exists():
            raise ValidationError("An agent with this name already exists.")
        return name


class TokenIssueForm(forms.Form):
    label = forms.CharField(max_length=100, required=False, help_text="Where the token will be used.")
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires in (days)",
        help_text="Leave empty for a token that does not expire.",
    )
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)


class PersonTokenForm(forms.Form):
    """A person's new API token: what it is for and how long it lasts (every token expires)."""

    name = forms.CharField(max_length=100, help_text="Where the token will be used (a chat bot, a script).")
    expires_in_days = forms.IntegerField(
        min_value=1,
        max_value=365,
        initial=90,
        label="Expires in (days)",
        help_text="At most 365 days.",
    )
    nonce = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise ValidationError("Give the token a name.")
        return name


# --- People and groups -----------------------------------------------------------------------


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    password1 = forms.CharField(label="Initial password", widget=secret_input(), strip=False)
    password2 = forms.CharField(label="Initial password (again)", widget=secret_input(), strip=False)
    groups = group_field("Role groups grant roles; other groups are named by policies.")

    def clean_username(self) -> str:
        username = User.normalize_username(self.cleaned_data["username"])
        User.username_validator(username)
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError("A person with this username already exists.")
        return username

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            self.add_error("password2", "The two passwords differ.")
        elif first and "username" in cleaned:
            candidate = User(
                username=cleaned["username"],
                email=cleaned.get("email", ""),
                first_name=cleaned.get("first_name", ""),
                last_name=cleaned.get("last_name", ""),
            )
            try:
                password_validation.validate_password(first, candidate)
            except ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class UserGroupsForm(forms.Form):
    groups = group_field("Role groups grant roles; other groups are named by policies.")


class GroupCreateForm(forms.Form):
    name = forms.CharField(max_length=63, validators=[name_validator])

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Group.objects.filter(name=name).exists():
            raise ValidationError("A group with this name already exists.")
        return name


# --- Audit log -------------------------------------------------------------------------------


# The kinds of audit record the log page filters by: action names (exact) and prefixes
# (ending in "."), as the action functions write them (docs/audit.md).
AUDIT_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "config": (
        "configuration changes",
        (
            "connection.",
            "agent.create",
            "agent.update",
            "agent.delete",
            "token.issue",
            "token.revoke",
            "group.",
            "user.create",
            "user.groups",
            "user.groups.",
            "user.enable",
            "user.disable",
            "policy.",
            "masking_policy.",
            "secrets.",
            "config.",
        ),
    ),
    "approvals": ("approvals", ("approval.",)),
    "terminations": ("sessions terminated or interrupted", ("session.terminate", "session.interrupted")),
    "agent_logins": ("token use (agent logins)", ("agent.login", "agent.login_failed")),
    "logins": ("console logins", ("user.login", "user.logout", "user.login_failed")),
    "recording_access": ("views and exports of recordings", ("recording.view", "recording.export")),
    "retention": (
        "retention deletions and legal holds",
        ("recording.retention_delete", "recording.hold", "recording.release", "recordings."),
    ),
    "audit": ("exports of the audit log", ("audit.",)),
}


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=64)
    target = forms.CharField(required=False, max_length=255)
    actor_kind = forms.ChoiceField(
        required=False,
        label="Actor kind",
        choices=(("", "any"), ("person", "person"), ("agent", "agent"), ("system", "system")),
    )
    kind = forms.ChoiceField(
        required=False,
        label="Kind of record",
        choices=(("", "any"), *((name, label) for name, (label, _) in AUDIT_KINDS.items())),
    )
    source = forms.CharField(required=False, max_length=64, label="Source address (starts with)")
    since = forms.DateTimeField(
        required=False,
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    until = forms.DateTimeField(
        required=False,
        label="Until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
