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
