"""Deployment checks (``manage.py check --deploy``) for secrets at rest."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def secret_keys_are_configured(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if os.environ.get("AIRLOCK_SECRET_KEYS") or os.environ.get("AIRLOCK_SECRET_KEYS_FILE"):
        return []
    return [
        checks.Warning(
            "AIRLOCK_SECRET_KEYS is not set: connection secrets are encrypted with a key generated "
            f"into {settings.DATA_DIR}, which every web and gateway process must share and which "
            "should not sit beside the database or its backups.",
            hint="Set AIRLOCK_SECRET_KEYS (or AIRLOCK_SECRET_KEYS_FILE) from your secret store.",
            id="airlock.W001",
        )
    ]
