"""Other PostgreSQL clients through the gateway, unchanged: asyncpg, the JDBC driver,
pg_dump and pgbench.

psql and psycopg (libpq) are the other tests' clients. asyncpg speaks the protocol with
its own code: the extended protocol only, named prepared statements it caches and
describes, binary results and parameters, pipelined ``executemany``, binary COPY and its
own CancelRequest on a timeout. pgjdbc (Debian's ``libpostgresql-jdbc-java``, run by a
real JVM) sends its own startup parameters (``extra_float_digits``, ``DateStyle``),
switches a statement to a server-side prepared one after five uses, batches
statements and sends binary parameters. pg_dump reads the catalog in a repeatable-read
transaction and the data with COPY: its dump restores, masked where the policy says.
pgbench initialises its tables through the gateway (a 100,000-row COPY FROM STDIN) and
runs its TPC-B-like script with server-side prepared statements, several clients at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.tests.postgres.conftest import DENY_MARKER
from gateway.tests.postgres.events import results as recorded_results

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JAVA_CLIENT = Path(__file__).with_name("JdbcClient.java")


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _connect(gw: Any, **overrides: Any) -> asyncpg.Connection:
    params = {
        "host": "127.0.0.1",
        "port": gw.port,
        "database": "shop",
        "user": "billing-bot",
        "password": gw.token,
        "ssl": False,
        "timeout": 10,
    }
    params.update(overrides)
    return await asyncpg.connect(**params)


def _client(
    command: list[str], *, env: dict[str, str] | None = None, input: str | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """A client program run to its end (``env`` added to this process's), which must succeed."""
    done = subprocess.run(
        command,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _statements(gw: Any, text: str | None = None) -> list[dict[str, Any]]:
    """The statement events of the gateway's last session (those of exactly ``text``, if given)."""
    return [
        payload
        for kind, payload in gw.events()
        if kind == "statement" and (text is None or payload.get("text") == text)
    ]


def _masked_people(gateway_factory: Any, private_pg: Any, table: str, notes: str) -> Any:
    """A gateway whose masking redacts ``table``'s email and pin columns by rule (content
    detection on the rest), over a table of one person: a planted email, pin and ``notes``."""
    from gateway.tests.postgres.test_masking import _masking_policy

    with private_pg.admin("shop") as admin:
        admin.execute("SET ROLE scram_user")
        admin.execute(f"DROP TABLE IF EXISTS {table}")
        admin.execute(f"CREATE TABLE {table} (id int, email text, pin int, notes text)")
        admin.execute(f"INSERT INTO {table} VALUES (1, 'dana.secret@example.org', 918273, %s)", (notes,))
    gw = gateway_factory()
    _masking_policy(
        {
            "columns": [
                {"match": f"public.{table}.email", "method": "redact", "entity": "email"},
                {"match": f"public.{table}.pin", "method": "redact"},
            ]
        }
    )
    return gw


# -- asyncpg ----------------------------------------------------------------------------


def test_asyncpg_queries_with_parameters_and_binary_results(gw):
    async def scenario() -> tuple[Any, ...]:
        conn = await _connect(gw)
        try:
            one = await conn.fetchval("SELECT 1 + $1::int", 41)
            rows = await conn.fetch("SELECT id, name, price FROM items WHERE id <= $1 ORDER BY id", 3)
            typed = await conn.fetchrow(
                "SELECT $1::text AS t, $2::int8 AS b, NULL::text AS n, now() > '2000-01-01'::timestamptz AS d,"
                " '{1,2,3}'::int[] AS a, $3::bytea AS raw",
                "żółw ✓ 🐢",
                2**40,
                b"\x00\xffbinary",
            )
            user = await conn.fetchval("SELECT current_user")
            return one, [tuple(r) for r in rows], dict(typed), user
        finally:
            await conn.close()

    one, rows, typed, user = _run(scenario())
    assert one == 42
    assert rows == [
        (1, "item 1", Decimal("1.5")),
        (2, "item 2", Decimal("3.0")),
        (3, "item 3", Decimal("4.5")),
    ]
    assert typed == {
        "t": "żółw ✓ 🐢",
        "b": 2**40,
        "n": None,
        "d": True,
        "a": [1, 2, 3],
        "raw": b"\x00\xffbinary",
    }
    assert user == "scram_user"
    statements = _statements(gw)
    texts = [s["text"] for s in statements]
    assert "SELECT 1 + $1::int" in texts
    # Bound parameters are recorded with the statement that ran with them.
    ran = [s for s in statements if s["text"].startswith("SELECT id, name, price")]
    assert ran and ran[-1]["params"] == ["3"] and ran[-1]["result"]["rows"] == 3
    assert gw.session().verify().ok


def test_asyncpg_prepared_statements_executemany_and_a_transaction(gw):
    async def scenario() -> tuple[Any, ...]:
        conn = await _connect(gw)
        try:
            await conn.execute("CREATE TEMP TABLE seen (id int, label text)")
            # executemany pipelines Bind/Execute for every row before one Sync.
            await conn.executemany("INSERT INTO seen VALUES ($1, $2)", [(i, f"row {i}") for i in range(50)])
            statement = await conn.prepare("SELECT label FROM seen WHERE id = $1")
            labels = [await statement.fetchval(i) for i in (0, 7, 49)]
            async with conn.transaction():
                await conn.execute("DELETE FROM seen WHERE id >= 10")
            count = await conn.fetchval("SELECT count(*) FROM seen")
            try:
                async with conn.transaction():
                    await conn.execute("DELETE FROM seen")
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            after_rollback = await conn.fetchval("SELECT count(*) FROM seen")
            return labels, count, after_rollback
        finally:
            await conn.close()

    labels, count, after_rollback = _run(scenario())
    assert labels == ["row 0", "row 7", "row 49"]
    assert count == 10 and after_rollback == 10
    inserts = _statements(gw, "INSERT INTO seen VALUES ($1, $2)")
    assert len(inserts) == 50
    assert inserts[7]["params"] == ["7", "row 7"]


def test_asyncpg_binary_copy_in_and_out(gw):
    async def scenario() -> tuple[Any, ...]:
        conn = await _connect(gw)
        try:
            await conn.execute("CREATE TEMP TABLE copied (id int, label text, amount numeric)")
            records = [(i, f"label {i} ✓", Decimal(i) / 4) for i in range(1000)]
            # COPY ... FROM STDIN (FORMAT binary)
            status = await conn.copy_records_to_table("copied", records=records)
            total = await conn.fetchval("SELECT sum(amount) FROM copied")
            out: list[bytes] = []

            async def sink(chunk: bytes) -> None:
                out.append(chunk)

            await conn.copy_from_query("SELECT id, label FROM copied WHERE id < 3 ORDER BY id", output=sink)
            return status, total, b"".join(out)
        finally:
            await conn.close()

    status, total, copied = _run(scenario())
    assert status == "COPY 1000"
    assert total == sum(Decimal(i) / 4 for i in range(1000))
    assert copied.decode() == "0\tlabel 0 ✓\n1\tlabel 1 ✓\n2\tlabel 2 ✓\n"


def test_asyncpg_sees_a_denied_statement_as_postgresql_would_show_it(gw):
    async def scenario() -> tuple[Any, ...]:
        conn = await _connect(gw)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as denied:
                await conn.fetch(f"SELECT '{DENY_MARKER}'")
            # Inside a transaction: the transaction is aborted, as after any error.
            tx = conn.transaction()
            await tx.start()
            await conn.execute("CREATE TEMP TABLE t (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT $1::text", DENY_MARKER)  # denied for its bound value
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await conn.fetchval("SELECT 1")
            await tx.rollback()
            after = await conn.fetchval("SELECT 2")
            return denied.value.message, denied.value.detail, after
        finally:
            await conn.close()

    message, detail, after = _run(scenario())
    assert message == "statements with the test marker are denied"
    assert detail == 'rule "no-test-marker"'
    assert after == 2


def test_asyncpg_timeout_cancels_the_running_statement(gw):
    async def scenario() -> tuple[Any, ...]:
        conn = await _connect(gw)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                # asyncpg sends a CancelRequest of its own when the timeout passes.
                await conn.fetchval("SELECT pg_sleep(20)", timeout=0.5)
            elapsed = loop.time() - started
            return elapsed, await conn.fetchval("SELECT 'still usable'")
        finally:
            await conn.close()

    elapsed, after = _run(scenario())
    assert elapsed < 10
    assert after == "still usable"
    with gw.pg.admin() as admin:
        running = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)'"
        ).fetchone()
    assert running == (0,)


def test_asyncpg_receives_notifications(gw):
    async def scenario() -> list[str]:
        listener = await _connect(gw)
        sender = await _connect(gw)
        got: asyncio.Queue[str] = asyncio.Queue()
        try:
            await listener.add_listener(
                "jobs", lambda _conn, _pid, _channel, payload: got.put_nowait(payload)
            )
            await sender.execute("NOTIFY jobs, 'first'")
            await sender.execute("SELECT pg_notify('jobs', $1)", "second ✓")
            return [await asyncio.wait_for(got.get(), 10), await asyncio.wait_for(got.get(), 10)]
        finally:
            await listener.close()
            await sender.close()

    assert _run(scenario()) == ["first", "second ✓"]


def test_asyncpg_with_a_wrong_token_is_refused(gw):
    with pytest.raises(asyncpg.InvalidPasswordError):
        _run(_connect(gw, password="alk_wrong"))


def test_asyncpg_binary_results_are_masked(gateway_factory, private_pg):
    """A masked text column in binary format is masked in place; a masked int column
    becomes NULL; content detection reads binary text values too."""
    gw = _masked_people(gateway_factory, private_pg, "people", "card 4111111111111111 on file")

    async def scenario() -> Any:
        conn = await _connect(gw)
        try:
            # asyncpg asks for every result column in binary.
            return dict(await conn.fetchrow("SELECT id, email AS contact, pin, notes FROM people"))
        finally:
            await conn.close()

    row = _run(scenario())
    assert row == {"id": 1, "contact": "[EMAIL]", "pin": None, "notes": "card [CARD] on file"}
    recorded = recorded_results(gw.events())
    text = repr(recorded)
    assert "dana.secret" not in text and "4111111111111111" not in text and "918273" not in text


# -- JDBC -------------------------------------------------------------------------------


def _jdbc(gw: Any, *scenario: str, ssl: str = "sslmode=disable") -> list[str]:
    java = shutil.which("java")
    assert java is not None and JDBC_JAR.exists(), "make test installs a JDK and libpostgresql-jdbc-java"
    url = f"jdbc:postgresql://127.0.0.1:{gw.port}/shop?{ssl}&connectTimeout=10"
    done = _client(
        [java, "-cp", str(JDBC_JAR), str(JAVA_CLIENT), url, "billing-bot", *scenario],
        env={"AIRLOCK_TOKEN": gw.token},
    )
    return done.stdout.splitlines()


def test_jdbc_runs_statements_prepared_statements_and_batches(gw):
    lines = _jdbc(gw, "basics")
    assert lines == [
        "user scram_user",
        "items 10",
        # The same PreparedStatement run eight times: a server-side named statement from the
        # fifth on (pgjdbc's prepareThreshold), with binary parameters.
        "prepared item 1|item 2|item 3|item 4|item 5|item 6|item 7|item 8",
        "batch [1, 1, 1, 1, 1]",
        "rolled back 0",
        "unicode żółw ✓ 🐢|null",
        "numeric 3.0|2.5",
    ]
    selects = _statements(gw, "SELECT name FROM items WHERE id = $1")
    assert [s["params"] for s in selects] == [[str(i)] for i in range(1, 9)]
    assert all(s["result"]["rows"] == 1 for s in selects)
    assert gw.session().verify().ok


def test_jdbc_copies_cancels_and_listens(gw):
    lines = _jdbc(gw, "copy-cancel-notify")
    assert lines == [
        "copy 3 3 1,one|2,żółw|3,\\N|",
        # Statement.cancel(): pgjdbc's own CancelRequest, with the key the gateway gave it.
        "cancel 57014 in time",
        "notify jdbc_jobs ready ✓",
        "after usable",
    ]
    with gw.pg.admin() as admin:
        running = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)'")
        assert running.fetchone() == (0,)


def test_jdbc_results_are_masked_in_text_and_binary(gateway_factory, private_pg):
    gw = _masked_people(gateway_factory, private_pg, "jdbc_people", "card 4111111111111111")
    lines = _jdbc(gw, "masked")
    assert lines == [f"row {n} [EMAIL]|null|card [CARD]" for n in range(1, 8)]


def test_jdbc_sees_a_denied_statement_as_postgresql_would_show_it(gw):
    lines = _jdbc(gw, "denied", DENY_MARKER)
    assert lines == [
        "denied 42501 statements with the test marker are denied",
        "in transaction 25P02",
        "after rollback 1",
    ]


def test_asyncpg_binary_parameters_meet_the_write_back_guard_and_the_recordings_masking(
    gateway_factory, private_pg
):
    """asyncpg leaves parameter types to the server and sends binary values: the gateway
    reads them by the types the server described (a text value), and in the bytes their
    hex stands for where it has no decoder (a text array)."""
    from gateway.tests.dbdump import database_text
    from gateway.tests.postgres.test_masking import _engine_point, _masking_policy

    with private_pg.admin("shop") as admin:
        admin.execute("SET ROLE scram_user")
        admin.execute("DROP TABLE IF EXISTS contacts")
        admin.execute("CREATE TABLE contacts (id int, email text, tags text[])")
        admin.execute("INSERT INTO contacts VALUES (1, 'dana.secret@example.org', '{}')")
    gw = gateway_factory(decision_point_factory=_engine_point)
    _masking_policy({"columns": [{"match": "public.contacts.email", "method": "redact", "entity": "email"}]})

    async def scenario() -> Any:
        conn = await _connect(gw)
        try:
            shown = await conn.fetchval("SELECT email FROM contacts WHERE id = $1", 1)
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as as_text:
                await conn.execute("UPDATE contacts SET email = $1 WHERE id = $2", shown, 1)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE contacts SET tags = $1 WHERE id = $2", ["x", shown], 1)
            # An agent's own value holding a secret is recorded masked, binary or not.
            await conn.execute("UPDATE contacts SET tags = $1 WHERE id = $2", ["4111111111111111"], 1)
            await conn.execute("SELECT $1::text", "ping eve.secret@example.org")
            return shown, as_text.value.message
        finally:
            await conn.close()

    shown, message = _run(scenario())
    assert shown == "[EMAIL]"
    assert "placeholder" in message
    with private_pg.admin("shop") as admin:
        assert admin.execute("SELECT email, tags FROM contacts").fetchone() == (
            "dana.secret@example.org",
            ["4111111111111111"],
        )
    updates = _statements(gw, "UPDATE contacts SET tags = $1 WHERE id = $2")
    assert updates[-1]["action"] == "allow" and updates[-1]["params"][0].startswith("\\x")
    assert bytes.fromhex(updates[-1]["params"][0][2:]).endswith(b"[CARD]")
    pinged = _statements(gw, "SELECT $1::text")
    assert pinged[-1]["params"] == ["ping [EMAIL]"]
    text = database_text()
    for secret in ("dana.secret@example.org", "4111111111111111", "eve.secret@example.org"):
        assert secret not in text and secret.encode().hex() not in text


def test_a_description_gives_its_types_to_the_definition_it_described(gw):
    """The server's parameter types apply to the statement it described, not to a newer
    definition of that name the client sent meanwhile (which would misread its values)."""
    import struct

    from gateway.postgres import protocol as pg
    from gateway.tests.postgres.rawclient import SYNC, RawSession, bind, execute

    def bind_execute(name: bytes, value: bytes) -> bytes:
        return bind(b"", name, (value,), binary=True) + execute() + SYNC

    session = RawSession(gw.port)
    try:
        session.login("billing-bot", gw.token)
        # Described as int4, then redefined as text before the description comes back.
        session.send(
            pg.parse_message(b"s1", b"SELECT $1::int4")
            + pg.message(b"D", b"Ss1\0")
            + pg.message(b"C", b"Ss1\0")
            + pg.parse_message(b"s1", b"SELECT $1::text")
            + SYNC
        )
        assert [typ for typ, _ in session.until("Z")] == ["1", "t", "T", "3", "1", "Z"]
        session.send(bind_execute(b"s1", b"abcd"))
        rows = [body for typ, body in session.until("Z") if typ == "D"]
        assert rows == [struct.pack("!hi", 1, 4) + b"abcd"]
        # Described: binary values are read by the server's types.
        session.send(pg.parse_message(b"s2", b"SELECT $1::text") + pg.message(b"D", b"Ss2\0") + SYNC)
        session.until("Z")
        session.send(bind_execute(b"s2", b"abcd"))
        session.until("Z")
    finally:
        session.close()
    ran = [(s["text"], s["params"]) for s in _statements(gw) if s["text"].startswith("SELECT $1::")]
    # s1's newer definition was never described: its value stays in hex, not misread as an int4.
    assert ran == [("SELECT $1::text", ["\\x61626364"]), ("SELECT $1::text", ["abcd"])]


def test_a_portals_description_never_describes_a_redefined_statement(gateway_factory, private_pg):
    """A portal's description serves later runs of its statement (pgjdbc's pattern), but
    not when the statement was redefined meanwhile: then a run with no description is
    withheld rather than masked by the old definition's columns."""
    import struct

    from gateway.postgres import protocol as pg
    from gateway.tests.postgres.rawclient import SYNC, RawSession, bind, execute, fields
    from gateway.tests.postgres.test_masking import _masking_policy

    with private_pg.admin("shop") as admin:
        admin.execute("SET ROLE scram_user")
        admin.execute("DROP TABLE IF EXISTS pins")
        admin.execute("CREATE TABLE pins (id int, pin int)")
        admin.execute("INSERT INTO pins VALUES (1, 918273)")
    gw = gateway_factory()
    _masking_policy({"columns": [{"match": "public.pins.pin", "method": "redact"}]})

    session = RawSession(gw.port)
    try:
        session.login("billing-bot", gw.token)
        # The portal's statement is redefined before the portal's description comes back.
        session.send(
            pg.parse_message(b"s1", b"SELECT id FROM pins")
            + bind(b"p1", b"s1")
            + pg.message(b"C", b"Ss1\0")
            + pg.parse_message(b"s1", b"SELECT pin FROM pins")
            + pg.message(b"D", b"Pp1\0")
            + SYNC
        )
        assert [typ for typ, _ in session.until("Z")] == ["1", "2", "3", "1", "T", "Z"]
        session.send(bind(b"", b"s1") + execute() + SYNC)
        answer = session.until("Z")
        assert [typ for typ, _ in answer if typ in "DE"] == ["E"]
        assert "withheld" in fields(next(body for typ, body in answer if typ == "E"))["M"]
        # Described as it is now, the pin is masked.
        session.send(bind(b"", b"s1") + pg.message(b"D", b"P\0") + execute() + SYNC)
        rows = [body for typ, body in session.until("Z") if typ == "D"]
        assert rows == [struct.pack("!hi", 1, -1)]
    finally:
        session.close()
    assert "918273" not in repr(gw.events())


# -- pg_dump ----------------------------------------------------------------------------


def _pg_dump(gw: Any, *args: str) -> str:
    command = ["pg_dump", gw.conninfo(), "--no-owner", "--no-privileges", *args]
    return _client(command, env={"PGCONNECT_TIMEOUT": "10"}).stdout


def _restore(private_pg: Any, name: str, dump: str) -> None:
    with private_pg.admin() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    _client(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-h", private_pg.host, "-p", str(private_pg.port)]
        + ["-U", "postgres", "-d", name],
        input=dump,
    )


def test_pg_dump_through_the_gateway_restores_to_the_same_data(gw, private_pg):
    dump = _pg_dump(gw, "--table", "items")
    assert "COPY public.items (id, name, price) FROM stdin;" in dump
    _restore(private_pg, "restored_items", dump)
    with private_pg.admin("restored_items") as restored, private_pg.admin("shop") as original:
        query = "SELECT id, name, price FROM items ORDER BY id"
        assert restored.execute(query).fetchall() == original.execute(query).fetchall()
    # Every statement pg_dump ran was decided and recorded, its COPY among them.
    texts = [s["text"] for s in _statements(gw)]
    assert [t for t in texts if "COPY" in t] == ["COPY public.items (id, name, price) TO stdout"], texts
    assert gw.session().verify().ok


def test_pg_dump_through_the_gateway_is_masked_and_still_restores(gateway_factory, private_pg):
    from gateway.tests.dbdump import database_text
    from gateway.tests.postgres.test_masking import _masking_policy

    with private_pg.admin("shop") as admin:
        admin.execute("SET ROLE scram_user")
        admin.execute("DROP TABLE IF EXISTS dumped")
        admin.execute("CREATE TABLE dumped (id int PRIMARY KEY, email text, pin int, notes text)")
        admin.execute(
            "INSERT INTO dumped VALUES (1, 'dana.secret@example.org', 918273, 'token ghp_Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6'),"
            " (2, NULL, NULL, 'nothing here')"
        )
    gw = gateway_factory()
    _masking_policy(
        {
            "columns": [
                {"match": "public.dumped.email", "method": "redact", "entity": "email"},
                {"match": "public.dumped.pin", "method": "redact"},
            ]
        }
    )
    dump = _pg_dump(gw, "--table", "dumped")
    for secret in ("dana.secret", "918273", "ghp_Ab3dE6"):
        assert secret not in dump
    _restore(private_pg, "restored_dumped", dump)
    with private_pg.admin("restored_dumped") as restored:
        assert restored.execute("SELECT id, email, pin, notes FROM dumped ORDER BY id").fetchall() == [
            (1, "[EMAIL]", None, "token [GITHUB_TOKEN]"),
            (2, None, None, "nothing here"),
        ]
    text = database_text()
    for secret in ("dana.secret", "918273", "ghp_Ab3dE6"):
        assert secret not in text


# -- pgbench ----------------------------------------------------------------------------


def _pgbench(gw: Any, *args: str) -> str:
    dsn = gw.dsn()
    done = _client(
        ["pgbench", "-h", dsn["host"], "-p", str(dsn["port"]), "-U", dsn["user"], *args, dsn["dbname"]],
        env={"PGPASSWORD": gw.token, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"},
        timeout=300,
    )
    return done.stdout + done.stderr


@pytest.fixture
def pgbench_tables(private_pg):  # type: ignore[no-untyped-def]
    yield
    with private_pg.admin("shop") as admin:
        admin.execute(
            "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers"
        )


def test_pgbench_initialises_and_runs_through_the_gateway(gw, pgbench_tables):
    # -i through the gateway: DROP, CREATE, a 100,000-row COPY FROM STDIN, VACUUM, keys.
    _pgbench(gw, "-i", "-q", "-s", "1")
    with gw.pg.admin("shop") as admin:
        assert admin.execute("SELECT count(*) FROM pgbench_accounts").fetchone() == (100_000,)
    sessions = len(gw.recorded)
    # The TPC-B-like script (BEGIN, three UPDATEs, a SELECT, an INSERT, END) with
    # server-side prepared statements, four clients at once; then select-only, simple.
    out = _pgbench(gw, "-n", "-c", "4", "-j", "2", "-t", "50", "-M", "prepared")
    assert "number of transactions actually processed: 200/200" in out
    out = _pgbench(gw, "-n", "-S", "-c", "2", "-t", "100", "-M", "simple")
    assert "number of transactions actually processed: 200/200" in out
    with gw.pg.admin("shop") as admin:
        assert admin.execute("SELECT count(*) FROM pgbench_history").fetchone() == (200,)
    # Every client's session was recorded, whole, and verifies (each run also opens one
    # connection of its own, which reads the scale).
    assert len(gw.recorded) == sessions + (1 + 4) + (1 + 2)
    updates = 0
    for index in range(sessions, sessions + 8):
        session = gw.session(index)
        assert session.verify().ok
        for kind, payload in gw.events(index):
            if kind == "statement" and payload["text"].startswith("UPDATE pgbench_accounts SET abalance"):
                assert (
                    payload["text"] == "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;"
                )
                assert len(payload["params"]) == 2 and payload["result"]["command_tag"] == "UPDATE 1"
                updates += 1
    assert updates == 200


def test_asyncpg_binary_arrays_records_numbers_and_bytea_are_masked_by_content(gateway_factory):
    """asyncpg asks for every column in binary (MSK-03): a secret inside a text array, a
    record, a bigint or numeric card number, a bytea or an inet is found there too, and the value
    becomes NULL; values with nothing to mask arrive as they are."""
    from gateway.tests.dbdump import database_text
    from gateway.tests.postgres.test_masking import _masking_policy

    gw = gateway_factory()
    _masking_policy({"columns": []})  # content detection only

    async def scenario() -> Any:
        conn = await _connect(gw)
        try:
            return tuple(
                await conn.fetchrow(
                    "SELECT ARRAY['dana.secret@example.org', 'x']::text[] AS a, ROW('dana.secret@example.org', 1) AS r,"
                    " 4111111111111111::int8 AS i, 4111111111111111::numeric AS n, '4111111111111111'::bytea AS b,"
                    " ARRAY['plain', NULL]::text[] AS a2, 42::int8 AS i2, 3.14::numeric AS n2, 'ok'::bytea AS b2,"
                    " '10.1.2.3'::inet AS ip"
                )
            )
        finally:
            await conn.close()

    row = _run(scenario())
    assert row == (None, None, None, None, None, ["plain", None], 42, Decimal("3.14"), b"ok", None)
    (result,) = [p for p in recorded_results(gw.events()) if p.get("masked")]
    assert result["masked_entities"] == {"email": 2, "card": 3, "ip": 1}
    text = database_text()
    assert "dana.secret" not in text and "4111111111111111" not in text


def test_asyncpg_and_jdbc_connect_over_tls_verifying_the_gateways_certificate_asyncpg_also_directly(
    gateway_factory,
):
    import ssl

    from gateway.tls import server_certificate_paths, server_context

    gw = gateway_factory(tls_context=server_context())
    cert, _ = server_certificate_paths()
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario(**options: Any) -> Any:
        conn = await _connect(gw, **{"ssl": context, **options})
        try:
            return await conn.fetchval("SELECT 'over tls'")
        finally:
            await conn.close()

    assert _run(scenario()) == "over tls"
    # PostgreSQL 17's direct TLS, as libpq's parameters ask for it: asyncpg builds the
    # context itself and names the postgresql protocol in ALPN, which the gateway requires.
    dsn = (
        f"postgresql://127.0.0.1:{gw.port}/shop?sslmode=verify-full&sslrootcert={cert}&sslnegotiation=direct"
    )
    assert _run(scenario(dsn=dsn, ssl=None)) == "over tls"
    # verify-full: pgjdbc refuses a connection whose certificate it cannot verify.
    lines = _jdbc(gw, "query", "SELECT 'over tls'", ssl=f"sslmode=verify-full&sslrootcert={cert}")
    assert lines == ["over tls"]
