"""The blast radius of a held UPDATE or DELETE: the planner's estimate of rows it touches.

The gateway runs ``EXPLAIN (FORMAT JSON)`` (never ``ANALYZE``: nothing is executed) on the
target with the connection's stored secret, right after the request is created, in a
thread, bounded by a short timeout. The statement is sent with its parameters through the
extended protocol (one statement only: PostgreSQL refuses several in one Parse), inside a
``READ ONLY`` transaction that is rolled back. PostgreSQL skips the read-only check for
EXPLAIN alone (``EXEC_FLAG_EXPLAIN_ONLY``), so the plan is made, and anything a function
would try to write during planning is refused. Any failure is stored as "unknown".
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.db import close_old_connections
from django.db import connection as db_connection

log = logging.getLogger("airlock.approvals")

ESTIMATED_STATEMENTS = frozenset({"UpdateStmt", "DeleteStmt"})
_running: set[threading.Thread] = set()
_running_lock = threading.Lock()


def wants_estimate(protocol: str, classification: dict[str, Any]) -> bool:
    """One statement, and it is an UPDATE or a DELETE (as the policy engine parsed it)."""
    statements = classification.get("statements") or []
    return (
        protocol == "postgres"
        and len(statements) == 1
        and statements[0].get("statement") in ESTIMATED_STATEMENTS
    )


def _rows_of(plan_json: str) -> int:
    document = json.loads(plan_json)
    plan = document[0]["Plan"]
    # ModifyTable plans 0 rows (it returns none without RETURNING): the rows it changes are
    # the rows its input plan produces.
    if plan.get("Node Type") == "ModifyTable" and plan.get("Plans"):
        plan = plan["Plans"][0]
    return int(plan["Plan Rows"])


def explain_rows(target: Any, statement: str, params: Sequence[str | None], *, timeout: float) -> int:
    """Estimated rows of ``statement`` on ``target`` (a ``gateway.models.Connection``)."""
    import psycopg

    from gateway import secrets

    values = secrets.get_secrets(target)
    millis = max(100, int(timeout * 1000))
    with tempfile.TemporaryDirectory(prefix="airlock-explain-") as tmp:
        options: dict[str, Any] = {
            "host": target.host,
            "port": target.effective_port(),
            "dbname": target.database or target.username or "postgres",
            "user": target.username or None,
            "password": values.get("password") or None,
            "sslmode": target.options.get("sslmode", "prefer"),
            "connect_timeout": max(1, round(timeout)),
            "application_name": "airlock-approval-estimate",
            "passfile": str(Path(tmp) / "no-passfile"),
        }
        for key, name, secret in (
            ("sslrootcert", "ca.pem", "ca_cert"),
            ("sslcert", "client.pem", "client_cert"),
            ("sslkey", "client.key", "client_key"),
        ):
            if values.get(secret):
                path = Path(tmp) / name
                path.touch(mode=0o600)
                path.write_text(values[secret])
                options[key] = str(path)
        with psycopg.connect(**options, autocommit=True) as conn:
            pg = conn.pgconn
            for setup in (
                b"BEGIN READ ONLY",
                f"SET LOCAL statement_timeout = {millis}".encode(),
                f"SET LOCAL lock_timeout = {millis}".encode(),
            ):
                _check(pg.exec_(setup), psycopg.pq.ExecStatus.COMMAND_OK)
            encoded = [None if p is None else p.encode() for p in params]
            try:
                result = pg.exec_params(b"EXPLAIN (FORMAT JSON) " + statement.encode(), encoded)
                _check(result, psycopg.pq.ExecStatus.TUPLES_OK)
                raw = result.get_value(0, 0) or b"[]"
                return _rows_of(bytes(raw).decode())
            finally:
                pg.exec_(b"ROLLBACK")


class EstimateFailed(Exception):
    """The server refused the EXPLAIN; only its SQLSTATE is kept (its message can quote data)."""


def _check(result: Any, expected: Any) -> None:
    if result.status == expected:
        return
    from psycopg.pq import DiagnosticField

    raw = result.error_field(DiagnosticField.SQLSTATE)
    code = raw.decode() if raw else "?"
    if code in ("57014", "55P03"):  # statement_timeout, lock_timeout
        raise EstimateFailed(f"no estimate within the time allowed (SQLSTATE {code})")
    raise EstimateFailed(f"the server refused the EXPLAIN (SQLSTATE {code})")


def short_reason(exc: BaseException) -> str:
    """A failure in words that quote no data: server messages can quote a parameter or a
    row (MSK-02) and connection errors can name a secret, so neither is kept."""
    if isinstance(exc, EstimateFailed):
        return str(exc)
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return "could not connect to the target"
    if isinstance(exc, ValueError | KeyError | IndexError):
        return "the plan could not be read"
    return f"the estimate failed ({type(exc).__name__})"


def estimate_in_background(
    request_id: int, target_id: int, statement: str, params: Sequence[str | None], *, timeout: float
) -> threading.Thread:
    """Run the estimate in a daemon thread and store it with ``do_record_estimate``."""

    def run() -> None:
        from approvals.actions import do_record_estimate
        from approvals.events import wait_until_published
        from gateway.models import Connection

        # The new request's card first: its publish was just queued.
        wait_until_published()
        close_old_connections()
        try:
            try:
                target = Connection.objects.get(pk=target_id)
                rows: int | None = explain_rows(target, statement, list(params), timeout=timeout)
                note = ""
            except Exception as exc:
                rows, note = None, short_reason(exc)
            do_record_estimate(request_id, rows=rows, note=note)
        except Exception:
            log.warning(
                "approvals: the estimate of request %s could not be stored", request_id, exc_info=True
            )
        finally:
            db_connection.close()

    def tracked() -> None:
        try:
            run()
        finally:
            with _running_lock:
                _running.discard(threading.current_thread())

    thread = threading.Thread(target=tracked, name=f"approval-estimate-{request_id}", daemon=True)
    with _running_lock:
        _running.add(thread)
    thread.start()
    return thread


def wait_for_estimates(timeout: float = 15.0) -> None:
    """Wait for the estimates still running (gateway shutdown, tests): each is bounded by
    its own timeout, and its database connection is closed when it ends."""
    with _running_lock:
        threads = list(_running)
    for thread in threads:
        thread.join(timeout)
