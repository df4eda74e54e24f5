"""Typed readers for settings taken from the environment.

Every reader raises ``ImproperlyConfigured`` naming the variable when a value is
malformed, so a typo in a deployment fails at start-up instead of at first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected a boolean (true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """Read a secret from ``NAME`` or from the file named by ``NAME_FILE``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path!r}: {exc.strerror}") from None
    return os.environ.get(name, default)


def env_url(name: str, schemes: tuple[str, ...]) -> str:
    """Return the URL in ``name`` ('' when unset), checking its scheme and host."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name}: scheme must be one of {', '.join(schemes)}, got {parts.scheme or 'none'!r}"
        )
    if not parts.hostname and not parts.path.strip("/"):
        raise ImproperlyConfigured(f"{name}: no host or database given in {name}")
    return raw


def database_url(database: Mapping[str, Any]) -> str:
    """The ``DATABASE_URL`` naming a PostgreSQL database that Django's settings describe
    (a ``DATABASES`` entry): user, password, host, port and name, each quoted, so that a
    child process (a gateway, a bench's, a test's) reaches the same database, password
    included. A socket directory as host is percent-encoded and an IPv6 address
    bracketed, as ``DATABASE_URL`` takes them; ``OPTIONS`` are not carried."""
    auth = quote(str(database.get("USER") or ""), safe="")
    if database.get("PASSWORD"):
        auth += ":" + quote(str(database["PASSWORD"]), safe="")
    host = str(database.get("HOST") or "127.0.0.1")
    if host.startswith("/"):
        host = quote(host, safe="")
    elif ":" in host:
        host = f"[{host}]"
    port = database.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{quote(str(database['NAME']), safe='')}"


def persistent_secret(path: Path, generate: Callable[[], str]) -> str:
    """Return the secret stored at ``path``, creating it (mode 0600) on first use.

    Used only by the embedded default, so that a fresh checkout runs with nothing set
    and keeps its keys across restarts.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
