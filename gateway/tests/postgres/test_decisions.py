"""Denied statements: 42501 with the rule's message, and the session (including an open
transaction) behaves exactly as PostgreSQL does after an error."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from gateway.tests.postgres.conftest import DENY_MARKER, REVIEW_MARKER
from gateway.tests.postgres.events import results
from gateway.tests.postgres.rawclient import RawSession, fields

DENIED = f"SELECT '{DENY_MARKER}'"


def test_a_denied_statement_gets_42501_with_the_rules_message(gw):
    with gw.connect(autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute(DENIED, prepare=False)
        assert caught.value.diag.message_primary == "statements with the test marker are denied"
        assert "no-test-marker" in (caught.value.diag.message_detail or "")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_denied_statement_aborts_the_open_transaction_like_postgresql(gw):
    with gw.connect() as conn:
        conn.execute("CREATE TEMP TABLE t (a int)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(DENIED)
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_denial_in_a_simple_query_stops_the_rest_of_the_string(gw):
    with gw.connect(autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE t (a int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO t VALUES (1); {DENIED}; INSERT INTO t VALUES (2)")
        # As in PostgreSQL, the whole string ran as one implicit transaction: rolled back.
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_denied_statement_hidden_after_an_allowed_one_never_runs(gw):
    with gw.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS keepme (a int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"SELECT 1; DROP TABLE keepme /* {DENY_MARKER} */")
        assert conn.execute("SELECT count(*) FROM keepme").fetchone() == (0,)
        conn.execute("DROP TABLE keepme")


def test_a_denied_bind_parameter_in_the_extended_protocol(gw):
    with gw.connect() as conn:
        conn.execute("SELECT 1")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT %s::text", (DENY_MARKER,))
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT %s::int", (1,))
        conn.rollback()
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)


def test_a_denied_prepared_statement_leaves_other_prepared_statements_usable(gw):
    with gw.connect(autocommit=True) as conn:
        for _ in range(3):
            assert conn.execute("SELECT %s::int", (5,), prepare=True).fetchone() == (5,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT %s::text", (DENY_MARKER,), prepare=True)
        assert conn.execute("SELECT %s::int", (6,), prepare=True).fetchone() == (6,)


def _pipeline_outcome(conn, failing_sql, failing_params):  # type: ignore[no-untyped-def]
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS t (a int)")
    conn.execute("TRUNCATE t")
    with pytest.raises(psycopg.Error) as caught, conn.pipeline():
        conn.execute("INSERT INTO t VALUES (%s)", (1,))
        conn.execute(failing_sql, failing_params)
        conn.execute("INSERT INTO t VALUES (%s)", (2,))
    return caught.value, conn.execute("SELECT count(*) FROM t").fetchone()


def test_a_denial_inside_a_pipeline_skips_the_rest_of_the_batch_as_an_error_would(gw):
    with gw.connect(autocommit=True) as conn:
        denied, through_gateway = _pipeline_outcome(conn, "SELECT %s::text", (DENY_MARKER,))
    with gw.pg.admin("shop") as direct:
        failed, directly = _pipeline_outcome(direct, "SELECT 1 / %s", (0,))
    assert isinstance(denied, errors.InsufficientPrivilege)
    assert isinstance(failed, errors.DivisionByZero)
    assert through_gateway == directly


def test_a_review_nobody_can_approve_is_refused(gw):
    # The marker rule names no reviewer group: never allowed (WF-01, docs/approvals.md).
    with gw.connect(autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="nobody can approve"):
            conn.execute(f"SELECT '{REVIEW_MARKER}'")
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_the_function_call_message_is_refused_and_the_session_goes_on(gw):
    raw = RawSession(gw.port)
    try:
        assert raw.login("billing-bot", gw.token)[-1][0] == "Z"
        # FunctionCall: oid of int4abs(), no format codes, one text argument, text result.
        import struct

        body = struct.pack("!ihhi", 1397, 0, 1, 2) + b"-5" + struct.pack("!h", 0)
        raw.send(b"F" + struct.pack("!I", len(body) + 4) + body)
        messages = raw.until("Z")
        errors_ = [fields(b) for t, b in messages if t == "E"]
        assert errors_ and errors_[0]["C"] == "42501"
        assert "FunctionCall" in errors_[0]["M"]
        raw.send(b"Q" + struct.pack("!I", 4 + 9) + b"SELECT 3\x00")
        messages = raw.until("Z")
        assert [t for t, _ in messages] == ["T", "D", "C", "Z"]
    finally:
        raw.close()


def test_statements_and_decisions_are_recorded(gw):
    with gw.connect(autocommit=True, application_name="recorder-check") as conn:
        conn.execute("SELECT name FROM items WHERE id = %s", (2,))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(DENIED)
    session = gw.session()
    assert session.application_name == "recorder-check"
    assert session.agent_name == "billing-bot" and session.connection_name == "shop"
    assert session.end_reason == "client disconnected"
    # The startup packet's application_name is judged (and recorded) as the SET it amounts to.
    assert (session.statement_count, session.denied_count) == (3, 1)
    events = gw.events()
    kinds = [k for k, _ in events]
    statements = [p for k, p in events if k == "statement"]
    assert statements[0]["text"] == "SET \"application_name\" = 'recorder-check'"
    assert (statements[0]["protocol"], statements[0]["action"]) == ("startup", "allow")
    extended = next(p for p in statements if p["text"] == "SELECT name FROM items WHERE id = $1")
    assert extended["params"] == ["2"]
    assert extended["action"] == "allow"
    result = next(p for p in results(events) if p["statement"] == extended["text"])
    assert result["rows"] == 1 and result["first_rows"] == [["item 2"]] and result["columns"] == ["name"]
    assert result["duration_ms"] >= 0
    decision = next(p for k, p in events if k == "decision")
    assert decision["action"] == "deny" and decision["rule"] == "no-test-marker"
    error = next(p for k, p in events if k == "error")
    assert error["code"] == "42501"
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    assert session.verify().ok


def test_a_denied_statement_is_not_seen_by_the_server(gw):
    with gw.connect(autocommit=True) as conn, gw.pg.admin("shop") as admin:
        admin.execute("SELECT pg_stat_reset()")
        conn.execute("CREATE TEMP TABLE t (a int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO t SELECT 1 WHERE '{DENY_MARKER}' <> ''")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_psql_shows_the_denial(gw):
    from gateway.tests.postgres.test_relay import psql

    out = psql(gw, "-c", DENIED)
    assert out.returncode != 0
    assert "statements with the test marker are denied" in out.stderr


def test_denial_survives_psycopg_error_handling_in_a_loop(gw):
    with gw.connect(autocommit=True) as conn:
        for i in range(20):
            if i % 3 == 0:
                with pytest.raises(psycopg.Error):
                    conn.execute("SELECT %s::text", (DENY_MARKER,))
            else:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)


def test_a_statement_name_redefined_in_sql_is_not_judged_by_its_old_text(gw):
    from gateway.postgres import protocol as pg

    raw = RawSession(gw.port)
    try:
        raw.login("billing-bot", gw.token)
        raw.send(pg.parse_message(b"s", b"SELECT 1") + pg.message(b"S"))
        raw.until("Z")
        raw.send(pg.query("DEALLOCATE s") + pg.query("PREPARE s AS SELECT 2"))
        raw.until("Z")
        raw.until("Z")
        bind = pg.message(b"B", b"\x00s\x00\x00\x00\x00\x00\x00\x00")
        raw.send(bind + pg.message(b"E", b"\x00\x00\x00\x00\x00") + pg.message(b"S"))
        rows = [body for typ, body in raw.until("Z") if typ == "D"]
        assert rows and rows[0].endswith(b"2")
    finally:
        raw.close()
    executed = [p["text"] for k, p in gw.events() if k == "statement" and p["protocol"] == "extended"]
    # Judged (and recorded) as the EXECUTE it is, never as the forgotten "SELECT 1".
    assert executed == ['EXECUTE "s"']


def test_a_portal_of_an_undescribed_sql_prepared_statement_is_still_masked(gw):
    from gateway.postgres import protocol as pg

    raw = RawSession(gw.port)
    try:
        raw.login("billing-bot", gw.token)
        raw.send(pg.query("PREPARE m AS SELECT 'carol@example.com'::text, 7"))
        raw.until("Z")
        bind = pg.message(b"B", b"\x00m\x00\x00\x00\x00\x00\x00\x00")
        raw.send(bind + pg.message(b"E", b"\x00\x00\x00\x00\x00") + pg.message(b"S"))
        replies = raw.until("Z")
    finally:
        raw.close()
    rows = [body for typ, body in replies if typ == "D"]
    assert len(rows) == 1
    # The column's type is unknown without a Describe, so the value is treated as not
    # text-like: masked to NULL (length -1), never passed through; the clean one stays.
    assert b"carol@example.com" not in rows[0]
    assert rows[0] == b"\x00\x02\xff\xff\xff\xff\x00\x00\x00\x017"
