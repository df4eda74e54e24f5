"""Forwarding audit records to a SIEM, one JSON object per record.

Sinks (``settings.AUDIT_FORWARD_URL``):

- ``http://...`` / ``https://...``: one POST per record, body the JSON line
  (``application/x-ndjson``), ``Authorization: Bearer <AUDIT_FORWARD_TOKEN>`` when set; any
  2xx is success.
- ``syslog+udp://host:port`` / ``syslog+tcp://host:port``: an RFC 5424 message (facility
  local0 = 16, severity notice = 5, app name ``airlock``, msgid ``audit``) whose MSG is the
  JSON line; over TCP with octet-counting framing (RFC 6587 section 3.4.1).

``audit.actions.record`` queues ``audit.tasks.forward_record`` after the transaction
commits; the task retries with backoff, and a failure never reaches the action.
"""

from __future__ import annotations

import socket
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import orjson

SCHEMES = ("http", "https", "syslog+udp", "syslog+tcp")
SYSLOG_PRIORITY = 16 * 8 + 5  # local0.notice
SYSLOG_MAX_UDP = 8192


class ForwardError(Exception):
    """A sink refused or could not be reached (retried by the task)."""


def record_document(record: Any) -> dict[str, Any]:
    """The JSON form of an AuditRecord (what exports and forwarding write)."""
    return {
        "id": record.pk,
        "at": record.at.astimezone(UTC).isoformat(),
        "actor_kind": record.actor_kind,
        "actor": record.actor,
        "action": record.action,
        "target_type": record.target_type,
        "target_id": record.target_id,
        "target_repr": record.target_repr,
        "source_address": record.source_address,
        "before": record.before,
        "after": record.after,
        "detail": record.detail,
    }


def _syslog_message(document: dict[str, Any], hostname: str) -> bytes:
    header = f"<{SYSLOG_PRIORITY}>1 {document['at']} {hostname or '-'} airlock - audit - "
    return header.encode() + orjson.dumps(document)


def send(url: str, document: dict[str, Any], *, token: str = "", timeout: float = 5.0) -> None:
    """Deliver one record to the sink at ``url``; raises ForwardError when it cannot."""
    parts = urlsplit(url)
    line = orjson.dumps(document) + b"\n"
    if parts.scheme in ("http", "https"):
        import requests

        headers = {"Content-Type": "application/x-ndjson"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = requests.post(url, data=line, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise ForwardError(f"{type(exc).__name__} sending to the audit sink") from None
        if not 200 <= response.status_code < 300:
            raise ForwardError(f"the audit sink answered {response.status_code}")
        return
    if parts.scheme not in ("syslog+udp", "syslog+tcp") or not parts.hostname or not parts.port:
        raise ForwardError(f"unsupported audit sink {parts.scheme!r}")
    message = _syslog_message(document, socket.gethostname())
    try:
        if parts.scheme == "syslog+udp":
            with socket.socket(
                socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET, socket.SOCK_DGRAM
            ) as sock:
                sock.settimeout(timeout)
                sock.sendto(message[:SYSLOG_MAX_UDP], (parts.hostname, parts.port))
        else:
            with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
                sock.sendall(b"%d " % len(message) + message)
    except OSError as exc:
        raise ForwardError(f"{type(exc).__name__} sending to the audit sink") from None
