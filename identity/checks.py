"""System checks: a bad identity setting is reported by ``manage.py check`` and at start."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_agent_jwt_issuers(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from identity.jwt import issuer_configs

    try:
        issuer_configs()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="identity.E001")]
    return []
