from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import models

from identity.models import name_validator


class Connection(models.Model):
    """A named target agents reach through the gateway.

    The name is what agents use: the PostgreSQL database name at the gateway, the SSH
    user, the Kubernetes cluster path. Secrets (password, private key, bearer token,
    CA certificate) are stored only encrypted in ``secret_ciphertext`` (see
    ``gateway.secrets``) and are never rendered back.
    """

    class Kind(models.TextChoices):
        POSTGRES = "postgres", "PostgreSQL"
        SSH = "ssh", "SSH"
        KUBERNETES = "kubernetes", "Kubernetes"

    name = models.CharField(max_length=63, unique=True, validators=[name_validator])
    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.TextField(blank=True)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(max_length=255, blank=True)
    username = models.CharField(max_length=255, blank=True)
    # Protocol options that are not secret: sslmode, namespace, host key, ...
    options = models.JSONField(default=dict, blank=True)
    # Fernet token of a JSON object {"password": ..., "private_key": ..., ...}.
    secret_ciphertext = models.TextField(blank=True, default="", editable=False)
    groups = models.ManyToManyField(Group, blank=True, related_name="connections")
    policy = models.ForeignKey(
        "policies.Policy", null=True, blank=True, on_delete=models.PROTECT, related_name="connections"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def default_port(self) -> int:
        return {"postgres": 5432, "ssh": 22, "kubernetes": 443}[self.kind]

    def effective_port(self) -> int:
        return self.port or self.default_port()

    def audit_snapshot(self) -> dict[str, Any]:
        """The connection's state for audit records: secret names only, never values."""
        from gateway.secrets import secret_field_names

        return {
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "username": self.username,
            "options": self.options,
            "groups": sorted(g.name for g in self.groups.all()) if self.pk else [],
            "policy": self.policy.name if self.policy_id else None,
            "enabled": self.enabled,
            "secrets_set": secret_field_names(self),
        }
