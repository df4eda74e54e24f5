"""The blast radius: the planner's estimate of rows an UPDATE or DELETE touches, made with
the connection's stored secret on a real PostgreSQL that requires it (EXPLAIN, never ANALYZE)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from approvals.estimate import EstimateFailed, TargetConnections, explain_rows, short_reason, wants_estimate
from approvals.models import ApprovalRequest
from approvals.tests.factories import make_request, review_decision
from console.tests.factories import make_connection
from gateway.tests.pgserver import running_postgres

PASSWORD = "shop-Estimate-Secret-7f3a"
ROWS = 10_000


@pytest.fixture(scope="module")
def target():
    with running_postgres() as server:
        server.execute(f"CREATE ROLE shop_app LOGIN PASSWORD '{PASSWORD}'")
        server.execute("CREATE DATABASE shop OWNER shop_app")
        with psycopg.connect(
            host=server.socket_dir, port=server.port, user="shop_app", dbname="shop", autocommit=True
        ) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
            conn.execute(f"INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, {ROWS}) g")
            conn.execute("CREATE TABLE side_effects (at timestamptz)")
            # A function that lies about its volatility: the planner folds IMMUTABLE calls
            # with constant arguments, so it would run during a plain EXPLAIN.
            conn.execute(
                "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql IMMUTABLE AS "
                "$$ INSERT INTO side_effects VALUES (now()) RETURNING 1 $$"
            )
            conn.execute("ANALYZE orders")
        yield server


def _sql(target, query: str):
    with psycopg.connect(
        host=target.socket_dir, port=target.port, user="shop_app", dbname="shop", autocommit=True
    ) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.fixture
def shop(db, target):
    return make_connection(
        host="127.0.0.1",
        port=target.port,
        database="shop",
        username="shop_app",
        options={"sslmode": "require"},
        secret_values={"password": PASSWORD},
    )


def test_the_planner_estimates_the_rows_a_delete_and_an_update_touch(shop):
    assert 50 <= explain_rows(shop, "DELETE FROM orders WHERE id <= $1", ["100"], timeout=5) <= 200
    assert explain_rows(shop, "UPDATE orders SET note = 'x'", [], timeout=5) == ROWS
    assert explain_rows(shop, "/* c */ delete from orders where id = $1", ["7"], timeout=5) == 1


def test_nothing_is_run_only_planned(shop, target):
    explain_rows(shop, "DELETE FROM orders", [], timeout=5)
    explain_rows(shop, "UPDATE orders SET note = NULL", [], timeout=5)
    assert _sql(target, "SELECT count(*) FROM orders WHERE note IS NOT NULL") == ROWS


def test_a_write_hidden_in_planning_does_not_happen(shop, target):
    # PostgreSQL refuses a write in a non-volatile function (0A000), and the read-only
    # transaction any other write (25006).
    with pytest.raises(EstimateFailed, match="0A000|25006"):
        explain_rows(shop, "DELETE FROM orders WHERE id = sneaky()", [], timeout=5)
    assert _sql(target, "SELECT count(*) FROM side_effects") == 0


def test_several_statements_are_refused(shop, target):
    with pytest.raises(EstimateFailed, match="42601"):
        explain_rows(shop, "DELETE FROM orders WHERE id = 1; DROP TABLE orders", [], timeout=5)
    assert _sql(target, "SELECT count(*) FROM orders") == ROWS


def test_a_locked_table_gives_up_within_the_timeout(shop, target):
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with psycopg.connect(
            host=target.socket_dir, port=target.port, user="shop_app", dbname="shop"
        ) as conn:
            conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        with pytest.raises(
            EstimateFailed, match=r"no estimate within the time allowed \(SQLSTATE (57014|55P03)\)"
        ):
            explain_rows(shop, "DELETE FROM orders WHERE id = 1", [], timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        holder.join(10)


def test_failures_are_described_without_quoting_data_or_secrets(shop):
    with pytest.raises(EstimateFailed) as failure:
        explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["alice@example.com"], timeout=5)
    assert short_reason(failure.value) == "the server refused the EXPLAIN (SQLSTATE 22P02)"
    wrong = make_connection(
        "shop-wrong",
        host=shop.host,
        port=shop.port,
        database="shop",
        username="shop_app",
        secret_values={"password": "not-" + PASSWORD},
    )
    with pytest.raises(psycopg.OperationalError) as refused:
        explain_rows(wrong, "DELETE FROM orders", [], timeout=5)
    assert short_reason(refused.value) == "could not connect to the target"


def test_only_single_updates_and_deletes_are_estimated():
    def classification(*kinds):
        return {"statements": [{"statement": kind} for kind in kinds]}

    assert wants_estimate("postgres", classification("DeleteStmt"))
    assert wants_estimate("postgres", classification("UpdateStmt"))
    assert not wants_estimate("postgres", classification("InsertStmt"))
    assert not wants_estimate("postgres", classification("DeleteStmt", "DeleteStmt"))
    assert not wants_estimate("ssh", classification("DeleteStmt"))


@pytest.mark.django_db(transaction=True)
def test_a_new_request_gets_its_estimate_in_the_background(world, target, bob):
    conn = make_connection(
        "shop-live",
        host="127.0.0.1",
        port=target.port,
        database="shop",
        username="shop_app",
        secret_values={"password": PASSWORD},
    )
    world.connection = conn
    req = make_request(
        world,
        statement="DELETE FROM orders WHERE id <= $1",
        params=("100",),
        estimate=True,
        decision=review_decision(statement="DELETE FROM orders WHERE id <= $1"),
    )
    assert req.estimate_status == "pending"
    deadline = time.monotonic() + 15
    while ApprovalRequest.objects.get(pk=req.pk).estimate_status == "pending":
        assert time.monotonic() < deadline, "the estimate never arrived"
        time.sleep(0.05)
    req.refresh_from_db()
    assert req.estimate_status == "ok" and 50 <= req.estimated_rows <= 200
    unknown = make_request(world, statement="DELETE FROM orders WHERE id = $1", params=("x",), estimate=True)
    deadline = time.monotonic() + 15
    while ApprovalRequest.objects.get(pk=unknown.pk).estimate_status == "pending":
        assert time.monotonic() < deadline, "the estimate never arrived"
        time.sleep(0.05)
    unknown.refresh_from_db()
    assert (unknown.estimate_status, unknown.estimated_rows) == ("unknown", None)
    assert unknown.estimate_note == "the server refused the EXPLAIN (SQLSTATE 22P02)"


# --- connections kept between estimates -------------------------------------------------------


def _estimate_backends(target) -> int:
    return _sql(
        target,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'airlock-approval-estimate'",
    )


def _until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_estimates_on_a_target_share_one_connection(shop, target):
    kept = TargetConnections()
    try:
        for _ in range(3):
            assert (
                explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept)
                == 1
            )
        # A refused EXPLAIN leaves the connection usable (its transaction rolled back).
        with pytest.raises(EstimateFailed, match="22P02"):
            explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["x"], timeout=5, connections=kept)
        assert explain_rows(shop, "UPDATE orders SET note = 'x'", [], timeout=5, connections=kept) == ROWS
        assert len(kept) == 1 and _estimate_backends(target) == 1
    finally:
        kept.close()
    _until(lambda: _estimate_backends(target) == 0)


def test_a_connection_the_target_closed_is_replaced(shop, target):
    kept = TargetConnections()
    try:
        assert explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept) == 1
        _sql(
            target,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'airlock-approval-estimate'",
        )
        _until(lambda: _estimate_backends(target) == 0)
        assert explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept) == 1
        assert len(kept) == 1 and _estimate_backends(target) == 1
    finally:
        kept.close()


def test_a_changed_secret_is_never_bypassed_by_a_kept_connection(shop, target):
    from gateway import secrets

    kept = TargetConnections()
    try:
        assert explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept) == 1
        secrets.set_secrets(shop, {"password": "not-" + PASSWORD})
        shop.save(update_fields=["secret_ciphertext"])
        with pytest.raises(psycopg.OperationalError):
            explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept)
        secrets.set_secrets(shop, {"password": PASSWORD})
        shop.save(update_fields=["secret_ciphertext"])
        assert explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept) == 1
    finally:
        kept.close()


def test_an_idle_connection_is_closed(shop, target):
    kept = TargetConnections(idle=0.2)
    try:
        assert explain_rows(shop, "DELETE FROM orders WHERE id = $1", ["7"], timeout=5, connections=kept) == 1
        assert _estimate_backends(target) == 1
        time.sleep(0.3)
        kept.close_idle()
        assert len(kept) == 0
        _until(lambda: _estimate_backends(target) == 0)
    finally:
        kept.close()


@pytest.mark.django_db(transaction=True)
def test_storing_an_estimate_does_not_hold_the_request_while_it_writes(world, monkeypatch):
    # A reviewer's decision locks the request's row; an estimate arriving meanwhile holds
    # that lock for its last statement only, not while it writes its audit record.
    from django.db import connection

    from approvals import actions

    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite locks the whole database)")
    req = make_request(world)
    writing, done = threading.Event(), threading.Event()
    original = actions.record

    def slow_record(*args, **kwargs):
        created = original(*args, **kwargs)
        writing.set()
        done.wait(10)
        return created

    monkeypatch.setattr(actions, "record", slow_record)

    def store_estimate():
        try:
            actions.do_record_estimate(req.pk, rows=3)
        finally:
            connection.close()  # this thread's own

    store = threading.Thread(target=store_estimate)
    store.start()
    try:
        assert writing.wait(10)
        db = connection.settings_dict
        with psycopg.connect(
            host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
        ) as other:
            locked = other.execute(
                "SELECT id FROM approvals_approvalrequest WHERE id = %s FOR UPDATE NOWAIT", (req.pk,)
            ).fetchone()
            assert locked == (req.pk,)
    finally:
        done.set()
        store.join(10)
    req.refresh_from_db()
    assert (req.estimate_status, req.estimated_rows) == ("ok", 3)


@pytest.mark.django_db(transaction=True)
def test_a_target_that_does_not_answer_does_not_hold_up_the_estimates_of_others(world, target, settings):
    import socket

    from approvals.estimate import estimate_in_background

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nothing ever answers
    try:
        mute = make_connection(
            "mute", host="127.0.0.1", port=silent.getsockname()[1], database="shop",
            username="shop_app", secret_values={"password": PASSWORD},
        )  # fmt: skip
        live = make_connection(
            "shop-live", host="127.0.0.1", port=target.port, database="shop",
            username="shop_app", secret_values={"password": PASSWORD},
        )  # fmt: skip
        held = make_request(world, statement="DELETE FROM orders WHERE id = $1", params=("7",))
        other = make_request(world, statement="DELETE FROM orders WHERE id = $1", params=("7",))
        started = time.monotonic()
        stuck = estimate_in_background(held.pk, mute.pk, held.statement, ["7"], timeout=3)
        estimate_in_background(other.pk, live.pk, other.statement, ["7"], timeout=3)
        while ApprovalRequest.objects.get(pk=other.pk).estimate_status != "ok":
            assert time.monotonic() - started < 2.5, "the live target's estimate waited for the mute one"
            time.sleep(0.02)
        assert not stuck.done()
        stuck.result(timeout=15)
        held.refresh_from_db()
        assert (held.estimate_status, held.estimate_note) == ("unknown", "could not connect to the target")
    finally:
        silent.close()
