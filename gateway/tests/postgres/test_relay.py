"""Clients through the gateway: psql and psycopg, both query protocols, COPY, big and
odd results, TLS, cancel, concurrency."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psycopg
import pytest
from psycopg import errors


def psql(gw, *args, input=None, **overrides):  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["psql", gw.conninfo(**overrides), "-X", "-v", "ON_ERROR_STOP=1", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )


def test_psql_runs_simple_queries_and_multi_statement_strings(gw):
    out = psql(gw, "-Atc", "SELECT count(*) FROM items; SELECT max(id) FROM items")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10", "10"]


def test_the_extended_protocol_carries_parameters(gw):
    with gw.connect() as conn:
        row = conn.execute("SELECT %s::int + 1, %s::text", (41, "forty-two")).fetchone()
        assert row == (42, "forty-two")
        assert conn.execute("SELECT name FROM items WHERE id = %s", (4,)).fetchone() == ("item 4",)


def test_prepared_statements_are_reused(gw):
    with gw.connect() as conn:
        for i in range(1, 8):
            assert conn.execute("SELECT name FROM items WHERE id = %s", (i,), prepare=True).fetchone() == (
                f"item {i}",
            )
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()]
        assert names, "the statement was not prepared on the server"


def test_pipeline_mode_sends_many_statements_before_reading(gw):
    with gw.connect() as conn, conn.pipeline():
        cursors = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
        conn.execute("SELECT pg_sleep(0)")
    assert [c.fetchone()[0] for c in cursors] == [i * 2 for i in range(50)]


def test_copy_in_and_out_with_psycopg(gw):
    with gw.connect() as conn:
        conn.execute("CREATE TEMP TABLE t (a int, b text)")
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            for i in range(1000):
                copy.write_row((i, f"row {i}"))
        assert conn.execute("SELECT count(*), sum(a) FROM t").fetchone() == (1000, sum(range(1000)))
        data = bytearray()
        with conn.cursor().copy("COPY t TO STDOUT") as copy:
            for chunk in copy:
                data += chunk
        assert data.count(b"\n") == 1000


def test_copy_in_and_out_with_psql(gw):
    script = "CREATE TEMP TABLE t (a int);\n\\copy t FROM STDIN\n1\n2\n3\n\\.\n\\copy t TO STDOUT\n"
    out = psql(gw, "-q", input=script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "2", "3"]


def test_a_hundred_thousand_rows_arrive_intact(gw):
    with gw.connect() as conn:
        rows = conn.execute("SELECT g, repeat('x', g % 50) FROM generate_series(1, 100000) g").fetchall()
    assert len(rows) == 100000
    assert rows[-1] == (100000, "x" * (100000 % 50))
    assert sum(r[0] for r in rows) == 100000 * 100001 // 2


def test_nulls_and_unicode_pass_unchanged(gw):
    with gw.connect() as conn:
        row = conn.execute("SELECT NULL::text, 'héllo ✓ 日本語 🐘', %s::text", ("ünï ✓",)).fetchone()
    assert row == (None, "héllo ✓ 日本語 🐘", "ünï ✓")


def test_binary_results(gw):
    with gw.connect() as conn, conn.cursor(binary=True) as cur:
        cur.execute("SELECT 12345::int8, 'bytes'::bytea, 2.5::float8, NULL::int4")
        assert cur.fetchone() == (12345, b"bytes", 2.5, None)


def test_tls_to_the_gateway_and_from_the_gateway_upstream(
    gateway_factory, make_connection, private_pg, tmp_path
):
    from gateway.tls import server_certificate_paths, server_context

    make_connection("shop-tls", options={"sslmode": "verify-full"}, secrets={"ca_cert": private_pg.ca_cert})
    gw = gateway_factory(tls_context=server_context())
    cert, _ = server_certificate_paths()
    with gw.connect(dbname="shop-tls", sslmode="verify-full", sslrootcert=str(cert)) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


def test_upstream_tls_with_the_wrong_ca_is_refused(gw, make_connection):
    import tempfile
    from pathlib import Path

    from gateway.tls import generate_self_signed

    with tempfile.TemporaryDirectory() as tmp:
        generate_self_signed(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
        other_ca = (Path(tmp) / "c.pem").read_text()
    make_connection("shop-badca", options={"sslmode": "verify-ca"}, secrets={"ca_cert": other_ca})
    with pytest.raises(psycopg.OperationalError, match="08006|cannot connect"):
        gw.connect(dbname="shop-badca").close()


def _wait_for_running(gw, text: str) -> None:
    deadline = time.monotonic() + 20
    with gw.pg.admin() as admin:
        while time.monotonic() < deadline:
            if admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'", (text,)
            ).fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"{text!r} never started")


def test_a_running_pg_sleep_is_cancelled(gw):
    with gw.connect() as conn:
        # cancel_safe: the blocking cancel() would hold the GIL that the in-process
        # gateway needs to answer it.
        timer = threading.Timer(0.5, lambda: conn.cancel_safe(timeout=10))
        timer.start()
        started = time.monotonic()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        timer.join()
        assert time.monotonic() - started < 20
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psql_cancels_pg_sleep_on_interrupt(gw):
    import signal

    proc = subprocess.Popen(
        ["psql", gw.conninfo(), "-X", "-c", "SELECT pg_sleep(30)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    try:
        _wait_for_running(gw, "SELECT pg_sleep(30)")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert "canceling statement due to user request" in err


def test_fifty_concurrent_sessions(gw):
    errors_seen: list[BaseException] = []
    results: list[int] = []
    barrier = threading.Barrier(50, timeout=60)

    def work(i: int) -> None:
        try:
            with gw.connect() as conn:
                barrier.wait()
                total = 0
                for j in range(20):
                    total += conn.execute("SELECT %s::int", (i * 100 + j,)).fetchone()[0]
                results.append(total)
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors_seen, errors_seen[:3]
    assert sorted(results) == sorted(sum(i * 100 + j for j in range(20)) for i in range(50))


def test_notices_and_notifications_reach_the_client(gw):
    with gw.connect(autocommit=True) as conn, gw.connect(autocommit=True) as other:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
        assert notices == ["hello from the server"]
        conn.execute("LISTEN airlock_channel")
        other.execute("NOTIFY airlock_channel, 'ping'")
        received = next(conn.notifies(timeout=10, stop_after=1))
        assert (received.channel, received.payload) == ("airlock_channel", "ping")


def test_parameter_status_changes_flow_back(gw):
    with gw.connect() as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"
        conn.execute("SET application_name = 'renamed'")
        assert conn.info.parameter_status("application_name") == "renamed"


def test_startup_parameters_are_forwarded(gw):
    with gw.connect(application_name="reporting", options=None) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("reporting",)


def test_the_server_sees_the_clients_statements_exactly(gw):
    with gw.connect() as conn:
        text = "SELECT /* a ; comment */ ';' AS semi, $$dollar;quoted$$ AS d"
        assert conn.execute(text).fetchone() == (";", "dollar;quoted")
