"""The non-secret options a connection may carry, per kind, and their checks.

``Connection.options`` is a JSON object; this module is the one list of the keys each
protocol understands, so that a typo (``sslmdoe``) is refused instead of silently
ignored. The gateway and the probe read options through these names; a protocol that
needs a new option adds it here.

Pure: no Django, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from policies.spec import APPROVAL_MODES

KINDS = ("postgres", "ssh", "kubernetes")

# The secret fields each kind uses (all are encrypted together, see gateway.secrets).
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "postgres": ("password", "ca_cert", "client_cert", "client_key"),
    "ssh": ("password", "private_key"),
    "kubernetes": ("token", "ca_cert", "client_cert", "client_key"),
}

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# A host key pinned for an SSH target: an OpenSSH public key line
# ("ssh-ed25519 AAAA... [comment]") or a SHA-256 fingerprint ("SHA256:base64").
_HOST_KEY_LINE = re.compile(
    r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+=*( .*)?$"
)
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")
# RFC 1123 label, the shape of a Kubernetes namespace name.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _sslmode(value: Any) -> str | None:
    if value not in SSLMODES:
        return f"must be one of {', '.join(SSLMODES)}"
    return None


def _timeout(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number of seconds"
    if not 0 < value <= 300:
        return "must be between 0 and 300 seconds"
    return None


def _host_key(value: Any) -> str | None:
    if not isinstance(value, str) or not (
        _HOST_KEY_LINE.match(value.strip()) or _FINGERPRINT.match(value.strip())
    ):
        return "must be an OpenSSH public key line (ssh-ed25519 AAAA...) or a SHA256:... fingerprint"
    return None


def _namespace(value: Any) -> str | None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        return "must be a Kubernetes namespace name (lower-case letters, digits and '-')"
    return None


# The connection's default answer to a held statement; a review rule's own
# ``approval_mode`` takes precedence (policies.spec.APPROVAL_MODES says what they mean).


def _approval_mode(value: Any) -> str | None:
    if value not in APPROVAL_MODES:
        return f"must be one of {', '.join(APPROVAL_MODES)}"
    return None


Check = Callable[[Any], str | None]

OPTIONS: dict[str, dict[str, Check]] = {
    "postgres": {"sslmode": _sslmode, "connect_timeout": _timeout, "approval_mode": _approval_mode},
    "ssh": {"host_key": _host_key, "connect_timeout": _timeout, "approval_mode": _approval_mode},
    "kubernetes": {"namespace": _namespace, "connect_timeout": _timeout, "approval_mode": _approval_mode},
}


def option_problems(kind: str, options: Any) -> list[tuple[str, str]]:
    """Every problem with ``options`` for a connection of ``kind``, as (key, message).

    The key is ``""`` for a problem with the whole value.
    """
    if not isinstance(options, dict):
        return [("", "must be a mapping")]
    known = OPTIONS.get(kind)
    if known is None:
        return []  # the kind itself is reported by whoever checks it
    problems: list[tuple[str, str]] = []
    for key, value in options.items():
        check = known.get(key) if isinstance(key, str) else None
        if check is None:
            problems.append(
                (str(key), f"unknown option for a {kind} connection (known: {', '.join(sorted(known))})")
            )
            continue
        message = check(value)
        if message:
            problems.append((key, message))
    return problems


def host_problem(kind: str, host: Any) -> str | None:
    """What is wrong with ``host`` for a connection of ``kind``, or None.

    A Kubernetes API server may be given as a full ``https://`` URL; other kinds take a
    host name or address.
    """
    if not isinstance(host, str) or not host.strip():
        return "is required"
    if any(c.isspace() for c in host):
        return "must not contain spaces"
    if "://" in host:
        if kind != "kubernetes":
            return "must be a host name or address, not a URL"
        if not host.startswith("https://"):
            return "a Kubernetes API server URL must start with https://"
    return None
