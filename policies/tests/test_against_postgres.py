"""The engine's knowledge checked against a real PostgreSQL server.

* Every built-in function of the server is known, and every volatile one (the only kind
  that can change anything) has been reviewed: it is in a function set or in the
  reviewed list of harmless ones.
* PostgreSQL's own read-only mode agrees with the read-only-agent pack: no statement that
  PostgreSQL refuses in a read-only transaction (SQLSTATE 25006) is allowed by the pack.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql as pgsql

from policies.engine import compile_policy
from policies.functions import FUNCTION_OPERATIONS, FUNCTION_SETS, HARMLESS_VOLATILE, KNOWN_FUNCTIONS
from policies.packs import pack
from policies.pg_catalog_data import BUILTIN_OPERATORS, CATALOG_RELATIONS
from policies.sql import classify
from policies.tests.test_security_cases import ATTACKS, ORDINARY_READS, ORDINARY_WRITES
from policies.types import Action, Request

READ_ONLY = compile_policy("read-only-agent", 1, pack("read-only-agent"))
SCHEMA = "airlock_probe"
SETUP = """
CREATE SCHEMA {schema};
SET search_path = {schema};
CREATE TABLE users (id int PRIMARY KEY, email text, name text);
CREATE TABLE "Users" ("Name" text);
CREATE TABLE admins (id int);
CREATE TABLE orders (id int, total numeric, created timestamptz, uid int, note text);
CREATE TABLE t (id int PRIMARY KEY, a int, b text, x int, n int);
CREATE TABLE u (id int, a int, x int, y int);
CREATE TABLE sessions (expires timestamptz);
CREATE TABLE log (id int);
CREATE TABLE scratch_existing (id int);
CREATE SEQUENCE s;
CREATE SEQUENCE orders_id_seq;
INSERT INTO users VALUES (1, 'a@example.com', 'a');
INSERT INTO t VALUES (1, 1, 'b', 1, 1);
"""
# Side effects that a rolled-back read-only transaction does not undo: never run these.
UNSAFE_SETS = ("backend_control", "replication", "backup", "server_files", "maintenance")
UNSAFE_FACTS = {"program_execution", "server_file_access", "fastpath"}
# Statements that cannot run inside a transaction block, or end it.
UNTESTABLE = {"TransactionStmt", "VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "DiscardStmt"}


@pytest.fixture
def server(django_db_setup, django_db_blocker):
    from django.db import connection

    with django_db_blocker.unblock():
        params = connection.get_connection_params()
    conn = psycopg.connect(
        host=params.get("host") or "127.0.0.1",
        port=params.get("port") or 5432,
        user=params.get("user") or "postgres",
        dbname=params["dbname"],
        autocommit=True,
        connect_timeout=10,
    )
    conn.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(SCHEMA)))
    try:
        yield conn
    finally:
        conn.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(SCHEMA)))
        conn.close()


def _catalog(conn, query: str) -> set[str]:
    return {row[0] for row in conn.execute(query)}


def test_every_built_in_function_operator_and_catalog_relation_is_known(server):
    functions = _catalog(
        server,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pg_catalog'",
    )
    operators = _catalog(
        server,
        "SELECT o.oprname FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace "
        "WHERE n.nspname = 'pg_catalog'",
    )
    relations = _catalog(
        server,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'pg_catalog' AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
    )
    hint = "regenerate policies/pg_catalog_data.py with policies/tools/generate_pg_catalog.py"
    assert functions - KNOWN_FUNCTIONS == set(), hint
    assert operators - BUILTIN_OPERATORS == set(), hint
    assert relations - CATALOG_RELATIONS == set(), hint


def test_every_volatile_built_in_has_been_reviewed(server):
    volatile = _catalog(
        server,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'pg_catalog' AND p.provolatile = 'v'",
    )
    in_sets = set().union(*FUNCTION_SETS.values())
    unreviewed = {
        name
        for name in volatile
        if name not in FUNCTION_OPERATIONS
        and name not in in_sets
        and name not in HARMLESS_VOLATILE
        and not name.startswith("binary_upgrade_")
    }
    assert unreviewed == set()


def _runnable(text: str) -> bool:
    result = classify(text)
    if result.error or len(result.statements) != 1:
        return False
    info = result.statements[0]
    if info.error or info.statement in UNTESTABLE or info.facts & UNSAFE_FACTS:
        return False
    unsafe = set().union(*(FUNCTION_SETS[name] for name in UNSAFE_SETS))
    return not (info.functions & unsafe)


def _corpus() -> list[str]:
    texts = list(ORDINARY_READS) + list(ORDINARY_WRITES) + [case[1] for case in ATTACKS if case[2] is None]
    texts += [
        "SELECT 1 FOR UPDATE",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "LOCK TABLE t IN ACCESS SHARE MODE",
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT lo_create(0)",
        "SELECT txid_current()",
        "CREATE TEMP TABLE tmp (id int)",
        "REFRESH MATERIALIZED VIEW mv",
        "COMMENT ON TABLE t IS 'x'",
        "SELECT set_config('search_path', 'public', true)",
        "NOTIFY channel",
        "LISTEN channel",
        "TRUNCATE t",
        "SELECT * FROM users WHERE id = (SELECT max(id) FROM users)",
        "SELECT query_to_xml('SELECT 1', true, true, '')",
    ]
    # Each statement of a multi-statement string on its own.
    statements = []
    for text in texts:
        result = classify(text)
        for info in result.statements:
            if info.text not in statements:
                statements.append(info.text)
    return [s for s in statements if _runnable(s)]


def _run(conn, statement: str) -> None:
    if classify(statement).statements[0].statement == "CopyStmt":
        # COPY ... STDIN/STDOUT switches the protocol into copy mode: drive it to the end.
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for _ in copy:
                pass
        return
    conn.execute(statement, prepare=False)


def test_postgresql_read_only_mode_agrees_with_the_read_only_pack(server):
    server.execute(SETUP.format(schema=SCHEMA))
    refused, ran, other = [], [], []
    for statement in _corpus():
        decision = READ_ONLY.evaluate(
            Request(protocol="postgres", connection="c", agent="a", groups=frozenset(), statement=statement)
        )
        with server.transaction(force_rollback=True):
            server.execute("SET TRANSACTION READ ONLY")
            server.execute(pgsql.SQL("SET LOCAL search_path = {}").format(pgsql.Identifier(SCHEMA)))
            try:
                with server.transaction():  # a savepoint: the statement's error stays inside
                    _run(server, statement)
                ran.append(statement)
            except psycopg.Error as exc:
                if exc.sqlstate == "25006":  # read_only_sql_transaction
                    refused.append(statement)
                    assert decision.action is not Action.ALLOW, (statement, decision.reasons)
                else:
                    other.append((statement, exc.sqlstate))
    # The corpus must exercise both sides, or the comparison proves nothing.
    assert len(refused) >= 20, refused
    assert len(ran) >= 20, ran
