from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


def default_spec() -> dict:
    return {"default": "deny", "on_parse_error": "deny", "rules": []}


class Policy(models.Model):
    """A named, ordered list of rules. ``spec`` is the current version's content.

    The spec schema is the ``policies:`` entry of ``manage.py apply`` YAML (without
    ``name``): ``default``, ``on_parse_error`` and ``rules``.
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    spec = models.JSONField(default=default_spec)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name


class PolicyVersion(models.Model):
    """Every saved version of a policy, for history, diffs and rollback."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    comment = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [models.UniqueConstraint(fields=["policy", "number"], name="policy_version_unique")]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.number}"


class MaskingPolicy(models.Model):
    """What the gateway masks in results, notices, errors and recordings (see docs/masking.md).

    ``spec`` is the ``masking:`` spec of the pure ``masking`` library (validated with
    ``masking.validate_masking_spec``). Bindings attach it to connections, for every agent
    or for the agents of one group (an override of the connection's default).
    """

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    spec = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "masking policies"

    def __str__(self) -> str:
        return self.name

    def audit_snapshot(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "spec": self.spec,
            "version": self.version,
            "bindings": [
                {"connection": b.connection.name, "group": b.group.name if b.group_id else None}
                for b in self.bindings.select_related("connection", "group").order_by(
                    "connection__name", "group__name"
                )
            ]
            if self.pk
            else [],
        }


class MaskingBinding(models.Model):
    """A masking policy applied on a connection: for every agent (no group), or instead of
    that default for the agents of ``group``."""

    masking_policy = models.ForeignKey(MaskingPolicy, on_delete=models.CASCADE, related_name="bindings")
    connection = models.ForeignKey(
        "gateway.Connection", on_delete=models.CASCADE, related_name="masking_bindings"
    )
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "group"], name="masking_binding_unique"),
            models.UniqueConstraint(
                fields=["connection"],
                condition=models.Q(group__isnull=True),
                name="masking_binding_one_default",
            ),
        ]

    def __str__(self) -> str:
        scope = f" for {self.group.name}" if self.group_id else ""
        return f"{self.masking_policy.name} on {self.connection.name}{scope}"
