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

import contextlib
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from django.db import close_old_connections

log = logging.getLogger("airlock.approvals")

ESTIMATED_STATEMENTS = frozenset({"UpdateStmt", "DeleteStmt"})


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


def _connect_options(target: Any, values: dict[str, Any], tmp: str, timeout: float) -> dict[str, Any]:
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
    return options


def _connect(target: Any, values: dict[str, Any], timeout: float) -> Any:
    import psycopg

    # The TLS files are read while connecting only: gone with the folder once connected.
    with tempfile.TemporaryDirectory(prefix="airlock-explain-") as tmp:
        return psycopg.connect(**_connect_options(target, values, tmp, timeout), autocommit=True)


def _explain(conn: Any, statement: str, params: Sequence[str | None], timeout: float) -> int:
    import psycopg

    millis = max(100, int(timeout * 1000))
    pg = conn.pgconn
    # One round trip: a simple Query of three statements (any failing fails the rest).
    setup = f"BEGIN READ ONLY; SET LOCAL statement_timeout = {millis}; SET LOCAL lock_timeout = {millis}"
    _check(pg.exec_(setup.encode()), psycopg.pq.ExecStatus.COMMAND_OK)
    encoded = [None if p is None else p.encode() for p in params]
    try:
        result = pg.exec_params(b"EXPLAIN (FORMAT JSON) " + statement.encode(), encoded)
        _check(result, psycopg.pq.ExecStatus.TUPLES_OK)
        raw = result.get_value(0, 0) or b"[]"
        return _rows_of(bytes(raw).decode())
    finally:
        pg.exec_(b"ROLLBACK")


def explain_rows(
    target: Any,
    statement: str,
    params: Sequence[str | None],
    *,
    timeout: float,
    connections: TargetConnections | None = None,
) -> int:
    """Estimated rows of ``statement`` on ``target`` (a ``gateway.models.Connection``), on a
    connection of its own, or on one kept in ``connections`` for the next estimate."""
    from gateway import secrets

    values = secrets.get_secrets(target)
    if connections is None:
        with _connect(target, values, timeout) as conn:
            return _explain(conn, statement, params, timeout)
    return connections.run(target, values, timeout, lambda conn: _explain(conn, statement, params, timeout))


class TargetConnections:
    """Connections to targets kept open between estimates (one per target and secret), for
    one thread: a login per estimate (a new server process on the target and a SCRAM
    exchange) cost more CPU than the EXPLAIN, at the moment a reviewer reads the card.

    A connection unused for ``idle`` seconds is closed at the next use or ``close_idle()``;
    a new secret or address makes a new one (the old one idles out); a connection that
    fails is closed and the estimate tried once more on a new one.
    """

    def __init__(self, idle: float = 60.0) -> None:
        self.idle = idle
        self._open: dict[tuple[int, str], tuple[Any, float]] = {}

    @staticmethod
    def _key(target: Any, values: dict[str, Any]) -> tuple[int, str]:
        described = json.dumps(
            [target.host, target.effective_port(), target.database, target.username, target.options, values],
            sort_keys=True,
            default=str,
        )
        return target.pk, hashlib.sha256(described.encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._open)

    def run(self, target: Any, values: dict[str, Any], timeout: float, work: Callable[[Any], int]) -> int:
        import psycopg

        self.close_idle()
        key = self._key(target, values)
        kept = self._open.pop(key, None)
        conn = kept[0] if kept is not None else None
        if conn is not None and (conn.closed or conn.broken):
            _close(conn)
            conn = kept = None  # known dead: the first try is already on a new connection
        for attempt in (1, 2):
            if conn is None:
                conn = _connect(target, values, timeout)
            try:
                rows = work(conn)
            except (EstimateFailed, psycopg.Error):
                if conn.pgconn.status == psycopg.pq.ConnStatus.OK:
                    self._keep(key, conn)  # the server answered: the connection is fine
                    raise
                _close(conn)
                conn = None
                if kept is None or attempt == 2:
                    raise
                continue  # a kept connection the target closed meanwhile: once more, anew
            except BaseException:
                _close(conn)
                raise
            self._keep(key, conn)
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _keep(self, key: tuple[int, str], conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            _close(conn)
            return
        self._open[key] = (conn, time.monotonic())

    def close_idle(self) -> None:
        now = time.monotonic()
        for key, (conn, used) in list(self._open.items()):
            if now - used >= self.idle:
                del self._open[key]
                _close(conn)

    def close(self) -> None:
        opened, self._open = self._open, {}
        for conn, _ in opened.values():
            _close(conn)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


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


class _Estimator:
    """The estimates of this process, on a few threads of their own; each keeps its
    database connection and its connections to targets between estimates. Several, so
    that a target that does not answer (each estimate bounded by its timeout) does not
    hold up the estimates of the others."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="approval-estimate")
        self.local = threading.local()
        self.pending: set[Future[None]] = set()
        self.kept: list[TargetConnections] = []
        self.lock = threading.Lock()

    def targets(self) -> TargetConnections:
        """This thread's connections to targets (its database connection is kept like the
        approvals database threads', and closed with them by ``close_db_threads()``)."""
        kept: TargetConnections | None = getattr(self.local, "targets", None)
        if kept is None:
            from approvals.gateway import keep_thread_connection

            keep_thread_connection()
            kept = self.local.targets = TargetConnections(idle=IDLE_SECONDS)
            with self.lock:
                self.kept.append(kept)
        return kept

    def submit(self, job: Callable[[], None]) -> Future[None]:
        future = self.executor.submit(job)
        with self.lock:
            self.pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[None]) -> None:
        with self.lock:
            self.pending.discard(future)

    def close(self, timeout: float) -> None:
        with self.lock:
            pending = list(self.pending)
        wait(pending, timeout=timeout)
        self.executor.shutdown(wait=False)
        with self.lock:
            kept, self.kept = self.kept, []
        for targets in kept:
            targets.close()


# A connection to a target is kept this long after its last estimate.
IDLE_SECONDS = 60.0
THREADS = 3
_estimator: _Estimator | None = None
_estimator_lock = threading.Lock()


def estimate_in_background(
    request_id: int, target_id: int, statement: str, params: Sequence[str | None], *, timeout: float
) -> Future[None]:
    """Estimate on the estimates' thread and store it with ``do_record_estimate``."""
    global _estimator
    with _estimator_lock:
        if _estimator is None:
            _estimator = _Estimator()
        estimator = _estimator

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
                rows: int | None = explain_rows(
                    target, statement, list(params), timeout=timeout, connections=estimator.targets()
                )
                note = ""
            except Exception as exc:
                rows, note = None, short_reason(exc)
            do_record_estimate(request_id, rows=rows, note=note)
        except Exception:
            close_old_connections()
            log.warning(
                "approvals: the estimate of request %s could not be stored", request_id, exc_info=True
            )

    return estimator.submit(run)


def wait_for_estimates(timeout: float = 15.0) -> None:
    """Wait for the estimates still running (gateway shutdown, tests: each is bounded by its
    own timeout), then close their connections to targets; the next estimate starts anew.
    Their database connections are closed by ``close_db_threads()``, which calls this."""
    global _estimator
    with _estimator_lock:
        estimator, _estimator = _estimator, None
    if estimator is not None:
        estimator.close(timeout)
