"""Logins, logouts and refused logins to the console are audit records too."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.actions import record


def _address(request: Any) -> str:
    return str(getattr(request, "META", {}).get("REMOTE_ADDR", ""))[:64] if request is not None else ""


@receiver(user_logged_in, dispatch_uid="audit.user_logged_in")
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(user, "user.login", None, source_address=_address(request))


@receiver(user_logged_out, dispatch_uid="audit.user_logged_out")
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record(user, "user.logout", None, source_address=_address(request))


@receiver(user_login_failed, dispatch_uid="audit.user_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # Only the name that was tried: never the password (Django already masks it).
    username = str(credentials.get("username") or credentials.get("login") or "")[:150]
    record(None, "user.login_failed", None, source_address=_address(request), username=username)
