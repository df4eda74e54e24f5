"""Test a connection: open a real connection to the target with the stored secret.

>>> result = test_connection(Connection.objects.get(name="shop"))
>>> result.ok, result.message, result.elapsed_ms
(True, 'connected to 127.0.0.1:5432/shop as shop_app: PostgreSQL 15.4 ...', 23.5)

- postgres: psycopg connects (``options.sslmode``, CA certificate and client certificate
  from the secret) and runs ``SELECT version()``.
- ssh: asyncssh authenticates (password and/or private key from the secret). With
  ``options.host_key`` set, the server's host key must match it *before* any credential
  is sent; without it, the fingerprint seen is reported so that it can be pinned.
- kubernetes: ``GET /version`` on the API server with the bearer token (an API server
  answers 401 to a token it does not accept, even where anonymous reads are allowed).

The message never holds a secret: every secret value is scrubbed from it, including from
the text of exceptions raised by the client libraries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import secrets

if TYPE_CHECKING:
    from gateway.models import Connection

DEFAULT_TIMEOUT = 10.0
REDACTED = "[secret]"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str
    elapsed_ms: float


class ProbeFailure(Exception):
    """The target answered, and the answer is a failure (its text is the message)."""


def test_connection(connection: Connection, *, timeout: float | None = None) -> ProbeResult:
    """Open a real connection to ``connection``'s target and report how it went.

    Blocking (up to about ``timeout`` seconds, by default the connection's
    ``options.connect_timeout`` or 10 s); from async code call it through
    ``sync_to_async``.
    """
    started = time.monotonic()
    try:
        values = secrets.get_secrets(connection)
    except secrets.SecretDecryptionError as exc:
        return ProbeResult(False, f"connection {connection.name}: {exc}", _elapsed(started))
    limit = float(timeout or connection.options.get("connect_timeout") or DEFAULT_TIMEOUT)
    probe = _PROBES.get(connection.kind)
    if probe is None:
        return ProbeResult(False, f"cannot test a connection of kind {connection.kind!r}", _elapsed(started))
    try:
        ok, message = True, probe(connection, values, limit)
    except ProbeFailure as exc:
        ok, message = False, str(exc)
    except TimeoutError:
        ok, message = False, f"no answer from {_address(connection)} within {limit:g} s"
    except Exception as exc:  # any client library error is a failed test, reported
        ok, message = False, f"{type(exc).__name__}: {exc}"
    return ProbeResult(ok, scrub(" ".join(message.split()), values), _elapsed(started))


# pytest would otherwise collect this function wherever a test module imports it.
test_connection.__test__ = False  # type: ignore[attr-defined]


def scrub(text: str, values: dict[str, str]) -> str:
    """``text`` with every secret value (and every long line of a multi-line one) removed."""
    needles: set[str] = set()
    for value in values.values():
        if not value:
            continue
        needles.update({value, value.strip(), urllib.parse.quote(value, safe=""), repr(value)[1:-1]})
        needles.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 8)
    for needle in sorted((n for n in needles if n), key=len, reverse=True):
        text = text.replace(needle, REDACTED)
    return text


def _elapsed(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _address(connection: Connection) -> str:
    if "://" in connection.host:
        return connection.host
    return f"{connection.host}:{connection.effective_port()}"


def _write_private(directory: str, name: str, content: str) -> str:
    path = Path(directory) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content if content.endswith("\n") else content + "\n")
    return str(path)


# --- PostgreSQL -----------------------------------------------------------------------


def _probe_postgres(connection: Connection, values: dict[str, str], timeout: float) -> str:
    import psycopg

    sslmode = connection.options.get("sslmode", "prefer")
    database = connection.database or connection.username or "postgres"
    # Certificates go to libpq as files: a private directory, removed afterwards.
    with tempfile.TemporaryDirectory(prefix="airlock-probe-") as tmp:
        params: dict[str, Any] = {
            "host": connection.host,
            "port": connection.effective_port(),
            "dbname": database,
            "user": connection.username or None,
            "password": values.get("password") or None,
            "sslmode": sslmode,
            "connect_timeout": max(1, round(timeout)),
            "application_name": "airlock-connection-test",
            # Only the stored secret: never this machine's ~/.pgpass.
            "passfile": str(Path(tmp) / "no-passfile"),
        }
        if values.get("ca_cert"):
            params["sslrootcert"] = _write_private(tmp, "ca.pem", values["ca_cert"])
        elif sslmode in ("verify-ca", "verify-full"):
            params["sslrootcert"] = "system"
        if values.get("client_cert") and values.get("client_key"):
            params["sslcert"] = _write_private(tmp, "client.pem", values["client_cert"])
            params["sslkey"] = _write_private(tmp, "client.key", values["client_key"])
        try:
            with psycopg.connect(**params, autocommit=True) as conn:
                row = conn.execute("SELECT version()").fetchone()
                tls = " over TLS" if conn.pgconn.ssl_in_use else ""
        except psycopg.OperationalError as exc:
            text = str(exc).strip() or type(exc).__name__
            if "timeout expired" in text:
                # libpq's own words name neither the target nor the limit.
                text = f"no answer from {_address(connection)} within {params['connect_timeout']} s ({text})"
            raise ProbeFailure(text) from None
    version = row[0] if row else "?"
    return f"connected to {_address(connection)}/{database} as {connection.username or '(default user)'}{tls}: {version}"


# --- SSH -----------------------------------------------------------------------------


def _host_key_matches(pinned: str, key: Any) -> bool:
    if pinned.startswith("SHA256:"):
        return bool(key.get_fingerprint("sha256") == pinned)
    import asyncssh

    try:
        return bool(asyncssh.import_public_key(pinned) == key)
    except (asyncssh.KeyImportError, ValueError):
        return False


async def _probe_ssh_async(connection: Connection, values: dict[str, str], limit: float) -> str:
    import asyncssh

    if not connection.username:
        raise ProbeFailure("no username is set for this SSH connection")
    if not values.get("password") and not values.get("private_key"):
        raise ProbeFailure("neither a password nor a private key is set for this SSH connection")
    pinned = str(connection.options.get("host_key") or "").strip()
    seen: dict[str, str] = {}

    class Client(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            seen["fingerprint"] = key.get_fingerprint("sha256")
            return _host_key_matches(pinned, key)

    client_keys = None
    if values.get("private_key"):
        try:
            client_keys = [asyncssh.import_private_key(values["private_key"])]
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ProbeFailure(f"the stored private key cannot be read: {exc}") from None
    options: dict[str, Any] = {
        "port": connection.effective_port(),
        "username": connection.username,
        "password": values.get("password") or None,
        "client_keys": client_keys,
        "client_factory": Client,
        # Pinned: no key is trusted up front, so every key goes through the callback.
        # Not pinned: any key is accepted and its fingerprint reported.
        "known_hosts": ([], [], []) if pinned else None,
        # Only the stored secret: no ~/.ssh/config, agent or default key files.
        "config": None,
        "agent_path": None,
        "gss_host": None,
        "connect_timeout": limit,
        "login_timeout": limit,
    }
    try:
        async with asyncio.timeout(limit + 1):
            async with asyncssh.connect(connection.host, **options) as conn:
                key = conn.get_server_host_key()
                fingerprint = key.get_fingerprint("sha256") if key else "?"
    except asyncssh.HostKeyNotVerifiable:
        raise ProbeFailure(
            f"host key {seen.get('fingerprint', '?')} of {_address(connection)} does not match "
            "options.host_key; no credential was sent"
        ) from None
    except asyncssh.PermissionDenied as exc:
        raise ProbeFailure(
            f"{_address(connection)} refused the credentials for {connection.username}: {exc.reason}"
        ) from None
    except asyncssh.DisconnectError as exc:
        raise ProbeFailure(f"{_address(connection)} closed the connection: {exc.reason}") from None
    except OSError as exc:
        # asyncio words a refused connect as "Connect call failed"; the errno says why.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ProbeFailure(f"cannot connect to {_address(connection)}: {reason}") from None
    if pinned:
        return f"authenticated as {connection.username} on {_address(connection)}; host key {fingerprint} matches options.host_key"
    return (
        f"authenticated as {connection.username} on {_address(connection)}; host key {fingerprint} "
        "(not pinned: set options.host_key to this fingerprint to check it on every connection)"
    )


def _probe_ssh(connection: Connection, values: dict[str, str], timeout: float) -> str:
    return _run(lambda: _probe_ssh_async(connection, values, timeout))


def _run(make: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, even when an event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


# --- Kubernetes -------------------------------------------------------------------------


def kubernetes_base_url(connection: Connection) -> str:
    if "://" in connection.host:
        return connection.host.rstrip("/")
    return f"https://{connection.host}:{connection.effective_port()}"


def _probe_kubernetes(connection: Connection, values: dict[str, str], timeout: float) -> str:
    import requests

    base = kubernetes_base_url(connection)
    if not values.get("token") and not (values.get("client_cert") and values.get("client_key")):
        raise ProbeFailure(
            "neither a bearer token nor a client certificate is set for this Kubernetes connection"
        )
    with tempfile.TemporaryDirectory(prefix="airlock-probe-") as tmp:
        verify: bool | str = (
            _write_private(tmp, "ca.pem", values["ca_cert"]) if values.get("ca_cert") else True
        )
        cert = None
        if values.get("client_cert") and values.get("client_key"):
            cert = (
                _write_private(tmp, "client.pem", values["client_cert"]),
                _write_private(tmp, "client.key", values["client_key"]),
            )
        headers = {"Accept": "application/json"}
        if values.get("token"):
            headers["Authorization"] = f"Bearer {values['token']}"
        try:
            response = requests.get(
                f"{base}/version",
                headers=headers,
                verify=verify,
                cert=cert,
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise ProbeFailure(f"TLS with {base} failed: {_reason(exc)}") from None
        except requests.exceptions.Timeout:
            raise ProbeFailure(f"no answer from {base} within {timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise ProbeFailure(f"cannot connect to {base}: {_reason(exc)}") from None
    if response.status_code == 401:
        raise ProbeFailure(f"{base} refused the credentials (401 Unauthorized)")
    if response.status_code != 200:
        raise ProbeFailure(f"{base}/version answered {response.status_code} {response.reason}")
    try:
        version = response.json().get("gitVersion", "?")
    except ValueError:
        raise ProbeFailure(f"{base}/version did not answer JSON: is this a Kubernetes API server?") from None
    return f"connected to {base}: Kubernetes {version}"


def _reason(exc: Exception) -> str:
    # requests nests the cause (urllib3 -> ssl/socket); the innermost says what happened.
    inner: BaseException = exc
    while True:
        nxt = getattr(inner, "reason", None) or inner.__cause__ or inner.__context__
        if not isinstance(nxt, BaseException) or nxt is inner:
            break
        inner = nxt
    return str(inner) or type(inner).__name__


_PROBES: dict[str, Callable[[Connection, dict[str, str], float], str]] = {
    "postgres": _probe_postgres,
    "ssh": _probe_ssh,
    "kubernetes": _probe_kubernetes,
}
