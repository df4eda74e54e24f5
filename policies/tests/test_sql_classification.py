"""Classification of PostgreSQL statements (policies.sql), statement by statement."""

from __future__ import annotations

import pytest
from pglast import ast as pg_ast

from policies.classification import StatementInfo
from policies.sql import INTERNAL_NODES, STATEMENT_OPERATIONS, classify, classify_function_call, normalize


def one(sql: str, session: dict | None = None) -> StatementInfo:
    result = classify(sql, session)
    assert result.error is None, result.error
    assert len(result.statements) == 1, result.statements
    return result.statements[0]


def test_every_statement_node_of_the_grammar_has_operations():
    nodes = {name for name in dir(pg_ast) if name.endswith("Stmt")}
    assert nodes - INTERNAL_NODES - set(STATEMENT_OPERATIONS) == set()


def test_it_splits_a_string_into_every_statement_with_its_own_text():
    result = classify("SELECT 1; /* x */ DELETE FROM t WHERE id = 2;\nselect 'é;'")
    assert [s.text for s in result.statements] == ["SELECT 1", "DELETE FROM t WHERE id = 2", "select 'é;'"]
    assert [s.statement for s in result.statements] == ["SelectStmt", "DeleteStmt", "SelectStmt"]


def test_a_string_that_does_not_parse_is_an_error_not_an_exception():
    result = classify("SELEC 1")
    assert result.error is not None and "syntax error" in result.error
    assert result.statements == ()


def test_an_empty_string_has_no_statements():
    assert classify("").statements == ()
    assert classify(" -- nothing\n /* at all */ ;").statements == ()


@pytest.mark.parametrize(
    ("sql", "operations"),
    [
        ("SELECT 1", {"read"}),
        ("VALUES (1), (2)", {"read"}),
        ("TABLE t", {"read"}),
        ("SHOW work_mem", {"read"}),
        ("FETCH 10 FROM c", {"read"}),
        ("INSERT INTO t VALUES (1)", {"write"}),
        ("INSERT INTO t SELECT * FROM u", {"write", "read"}),
        ("UPDATE t SET a = 1 WHERE id = 2", {"write"}),
        ("UPDATE t SET a = u.a FROM u WHERE u.id = t.id", {"write", "read"}),
        ("DELETE FROM t WHERE id = 1", {"write"}),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", {"write", "read"}),
        ("TRUNCATE t", {"write"}),
        ("SELECT * FROM t FOR UPDATE", {"read", "write"}),
        ("SELECT nextval('s')", {"read", "write"}),
        ("CREATE TABLE t (id int)", {"ddl"}),
        ("ALTER TABLE t ADD COLUMN b int", {"ddl"}),
        ("CREATE INDEX ON t (a)", {"ddl"}),
        ("CREATE VIEW v AS SELECT * FROM t", {"ddl"}),
        ("CREATE TABLE t2 AS SELECT * FROM t", {"ddl", "write", "read"}),
        ("SELECT * INTO t2 FROM t", {"ddl", "write", "read"}),
        ("DROP TABLE t", {"ddl"}),
        ("COMMENT ON TABLE t IS 'x'", {"ddl"}),
        ("GRANT SELECT ON t TO bob", {"dcl"}),
        ("REVOKE ALL ON t FROM bob", {"dcl"}),
        ("CREATE ROLE x LOGIN", {"dcl"}),
        ("ALTER ROLE x SUPERUSER", {"dcl"}),
        ("GRANT pg_read_server_files TO x", {"dcl"}),
        ("ALTER TABLE t OWNER TO bob", {"ddl", "dcl"}),
        ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", {"ddl", "dcl"}),
        ("ALTER SYSTEM SET work_mem = '1GB'", {"admin"}),
        ("VACUUM t", {"admin"}),
        ("ANALYZE t", {"admin"}),
        ("CHECKPOINT", {"admin"}),
        ("CREATE DATABASE d", {"admin", "ddl"}),
        ("CREATE EXTENSION dblink", {"admin", "ddl"}),
        ("SELECT pg_terminate_backend(1)", {"read", "admin"}),
        ("DO $$ BEGIN PERFORM 1; END $$", {"procedural"}),
        ("CALL p(1)", {"procedural"}),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {"ddl", "procedural"}),
        ("BEGIN", {"transaction"}),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", {"transaction"}),
        ("COMMIT", {"transaction"}),
        ("SAVEPOINT a", {"transaction"}),
        ("SET TRANSACTION READ ONLY", {"transaction"}),
        ("SET statement_timeout = 5", {"session"}),
        ("RESET ALL", {"session"}),
        ("SET ROLE bob", {"session"}),
        ("DISCARD ALL", {"session"}),
        ("SELECT set_config('work_mem', '1MB', false)", {"read", "session"}),
        ("LISTEN c", {"utility"}),
        ("NOTIFY c", {"utility"}),
        ("LOCK TABLE t", {"utility"}),
        ("DEALLOCATE ALL", {"utility"}),
        ("SELECT pg_advisory_lock(1)", {"read", "utility"}),
        ("COPY t TO STDOUT", {"read"}),
        ("COPY t FROM STDIN", {"write"}),
        ("EXPLAIN SELECT * FROM t", {"read"}),
        ("EXPLAIN DELETE FROM t", {"read"}),
        ("EXPLAIN ANALYZE DELETE FROM t", {"read", "write"}),
    ],
)
def test_it_classifies_operations(sql, operations):
    assert one(sql).operations == operations


@pytest.mark.parametrize(
    ("sql", "read", "written"),
    [
        ("SELECT * FROM t JOIN s.u ON true", {"public.t", "s.u"}, set()),
        ("SELECT * FROM db.s.t", {"s.t"}, set()),
        ('SELECT * FROM "Odd"."T x"', {"Odd.T x"}, set()),
        ("SELECT * FROM PUBLIC.T", {"public.t"}, set()),
        (
            "SELECT (SELECT max(a) FROM u WHERE u.x IN (SELECT x FROM w)) FROM t",
            {"public.t", "public.u", "public.w"},
            set(),
        ),
        ("INSERT INTO t SELECT * FROM u", {"public.u"}, {"public.t"}),
        ("UPDATE t SET a = 1 FROM u WHERE u.id = t.id", {"public.u"}, {"public.t"}),
        ("DELETE FROM t USING u WHERE u.id = t.id", {"public.u"}, {"public.t"}),
        (
            "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = 1",
            {"public.u"},
            {"public.t"},
        ),
        ("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", set(), {"public.t"}),
        ("COPY t TO STDOUT", {"public.t"}, set()),
        ("COPY t FROM STDIN", set(), {"public.t"}),
        ("COPY (SELECT * FROM t) TO STDOUT", {"public.t"}, set()),
        ("DROP TABLE a.b, c", set(), {"a.b", "public.c"}),
        ("TRUNCATE t, s.u", set(), {"public.t", "s.u"}),
        ("CREATE TABLE t (id int REFERENCES u)", {"public.u"}, {"public.t"}),
        ("CREATE VIEW v AS SELECT * FROM t", {"public.t"}, {"public.v"}),
        ("CREATE TABLE t2 AS SELECT * FROM t", {"public.t"}, {"public.t2"}),
        ("ALTER TABLE s.t DROP COLUMN a", set(), {"s.t"}),
        ("GRANT SELECT ON s.t TO bob", set(), {"s.t"}),
        ("COMMENT ON TABLE s.t IS 'x'", set(), {"s.t"}),
        ("SECURITY LABEL ON TABLE t IS 'x'", set(), {"public.t"}),
        ("VACUUM s.t", set(), {"s.t"}),
        ("LOCK TABLE t", {"public.t"}, set()),
        ("SELECT * FROM t a FOR UPDATE OF a", {"public.t"}, set()),
        ("EXPLAIN DELETE FROM t", {"public.t"}, set()),
        ("EXPLAIN ANALYZE DELETE FROM t", set(), {"public.t"}),
        ("SELECT * FROM pg_class", {"pg_catalog.pg_class"}, set()),
    ],
)
def test_it_finds_tables_read_and_written_schema_qualified(sql, read, written):
    info = one(sql)
    assert info.tables_read == read
    assert info.tables_written == written


def test_cte_names_are_not_tables_but_shadowing_follows_scopes():
    assert one("WITH t AS (SELECT 1) SELECT * FROM t").tables == frozenset()
    # The CTE named x is visible only inside the subquery: the outer x is a real table.
    info = one("SELECT * FROM x, (WITH x AS (SELECT 1) SELECT * FROM x) s")
    assert info.tables_read == {"public.x"}
    # A non-recursive CTE does not see itself or later siblings: there, the name is a table.
    info = one("WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b")
    assert info.tables_read == {"public.b"}
    info = one("WITH RECURSIVE a AS (SELECT 1 UNION ALL SELECT * FROM a) SELECT * FROM a")
    assert info.tables_read == frozenset()
    # A write target is always a table, even when a CTE has its name.
    info = one("WITH t AS (SELECT 1) DELETE FROM t WHERE id = 1")
    assert info.tables_written == {"public.t"}


@pytest.mark.parametrize(
    ("sql", "functions"),
    [
        ("SELECT lower(a), COUNT(*) FROM t WHERE upper(b) = 'X' GROUP BY 1", {"lower", "count", "upper"}),
        ('SELECT "pg_catalog"."lower"(a) FROM t', {"lower"}),
        ("SELECT PG_CATALOG.LOWER(a) FROM t", {"lower"}),
        ("SELECT s.f(1)", {"s.f"}),
        ("SELECT * FROM generate_series(1, 3)", {"generate_series"}),
        ("INSERT INTO t VALUES (now())", {"now"}),
        ("CREATE TABLE t (id int DEFAULT nextval('s'))", {"nextval"}),
        ("SELECT 1 FROM t WHERE a IN (SELECT f(x) FROM (SELECT g(y) AS x FROM u) s)", {"f", "g"}),
        ("SELECT sum(a) FILTER (WHERE h(a)) OVER (ORDER BY k(a)) FROM t", {"sum", "h", "k"}),
        ("SELECT EXTRACT(year FROM now())", {"extract", "now"}),
        ("CALL s.proc(f(1))", {"s.proc", "f"}),
        ("EXECUTE p(f(1))", {"f"}),
    ],
)
def test_it_finds_every_function_called_anywhere_normalized(sql, functions):
    session = {"prepared": {"p": ["PREPARE p(int) AS SELECT $1"]}}
    assert one(sql, session).functions == functions


def test_functions_outside_the_catalog_are_unknown_code():
    info = one("SELECT my_func(1), lower('a')")
    assert info.unknown_functions == {"my_func"}
    assert "procedural" in info.operations
    assert "unknown_function" in info.facts
    assert info.known_operations == {"read"}
    # Quoted upper case is a different function than the built-in.
    assert one('SELECT "LOWER"(1)').unknown_functions == {"LOWER"}
    # A function of another schema is not the built-in even when named like one.
    assert one("SELECT public.lower('x')").unknown_functions == {"public.lower"}


def test_user_defined_operators_are_unknown_code():
    assert one("SELECT 1 === 2").unknown_functions == {"operator(===)"}
    assert one("SELECT 1 OPERATOR(public.+) 2").unknown_functions == {"operator(public.+)"}
    assert one("SELECT 1 OPERATOR(pg_catalog.+) 2").unknown_functions == frozenset()
    assert (
        one("SELECT a FROM t WHERE a ~~* 'x' AND b @> '{1}' AND c->>'k' = 'v'").unknown_functions
        == frozenset()
    )


def test_a_search_path_that_puts_another_schema_before_pg_catalog_makes_names_unknown():
    session = {"search_path": ("evil", "pg_catalog")}
    info = one("SELECT lower('x') FROM pg_authid", session)
    assert info.unknown_functions == {"lower"}
    assert info.tables_read == {"evil.pg_authid", "pg_catalog.pg_authid"}


@pytest.mark.parametrize(
    ("sql", "fact"),
    [
        ("DELETE FROM t", "no_where"),
        ("UPDATE t SET a = 1", "no_where"),
        ("UPDATE t SET a = 1 WHERE true", "no_where"),
        ("DELETE FROM t WHERE 1 = 1", "no_where"),
        ("DELETE FROM t USING u WHERE u.id = 1", "no_where"),
        ("DELETE FROM t WHERE EXISTS (SELECT 1)", "no_where"),
        ("MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE", "no_where"),
        ("MERGE INTO t USING u ON t.id = u.id WHEN NOT MATCHED BY SOURCE THEN DELETE", "no_where"),
        ("TRUNCATE t", "no_where"),
        ("SELECT rolpassword FROM pg_authid", "catalog_secrets"),
        ("SELECT * FROM pg_catalog.pg_shadow", "catalog_secrets"),
        ("SELECT umoptions FROM pg_user_mappings", "catalog_secrets"),
        ("SELECT subconninfo FROM pg_subscription", "catalog_secrets"),
        ("TABLE pg_authid", "catalog_secrets"),
        ("CREATE VIEW v AS SELECT * FROM pg_authid", "catalog_secrets"),
        ("COPY t TO '/tmp/x'", "server_file_access"),
        ("COPY t FROM '/etc/passwd'", "server_file_access"),
        ("SELECT pg_read_file('/etc/passwd')", "server_file_access"),
        ("SELECT lo_import('/etc/passwd')", "server_file_access"),
        ("LOAD 'x'", "server_file_access"),
        ("CREATE TABLESPACE s LOCATION '/tmp'", "server_file_access"),
        ("COPY t TO PROGRAM 'sh'", "program_execution"),
        ("COPY t FROM PROGRAM 'curl x'", "program_execution"),
        ("ALTER SYSTEM SET archive_command = 'sh -c x'", "program_execution"),
        ("EXPLAIN ANALYZE SELECT 1", "explain_analyze"),
        ("EXPLAIN (ANALYZE, VERBOSE) SELECT 1", "explain_analyze"),
        ("EXPLAIN (ANALYZE on) SELECT 1", "explain_analyze"),
        ("SET ROLE postgres", "role_change"),
        ("SET SESSION AUTHORIZATION postgres", "role_change"),
        ("SET LOCAL role = 'postgres'", "role_change"),
        ("SELECT set_config('role', 'postgres', false)", "role_change"),
        ("SELECT set_config(current_setting('x'), 'postgres', false)", "role_change"),
        ("ALTER ROLE me SET role = 'postgres'", "role_change"),
        ("SET default_transaction_read_only = off", "read_only_off"),
        ("SET transaction_read_only TO false", "read_only_off"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "read_only_off"),
        ("SET TRANSACTION READ WRITE", "read_only_off"),
        ("BEGIN READ WRITE", "read_only_off"),
        ("START TRANSACTION READ WRITE", "read_only_off"),
        ("RESET default_transaction_read_only", "read_only_off"),
        ("RESET ALL", "read_only_off"),
        ("SELECT set_config('default_transaction_read_only', 'off', false)", "read_only_off"),
        ("SELECT * FROM t FOR SHARE", "locking"),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "locking"),
        ("DROP TABLE t", "destructive"),
        ("DROP SCHEMA s CASCADE", "destructive"),
        ("DROP DATABASE d", "destructive"),
        ("ALTER TABLE t DROP COLUMN a", "destructive"),
        ("ALTER TABLE t ALTER COLUMN a TYPE text", "destructive"),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", "destructive"),
        ("DROP OWNED BY bob", "destructive"),
        ("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT 1", "cte_write"),
        ("COPY (DELETE FROM t RETURNING *) TO STDOUT", "no_where"),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET role = 'postgres' AS 'SELECT 1'", "role_change"),
        ("DECLARE c CURSOR FOR SELECT * FROM pg_authid", "catalog_secrets"),
    ],
)
def test_it_records_facts(sql, fact):
    assert fact in one(sql).facts


@pytest.mark.parametrize(
    ("sql", "fact"),
    [
        ("DELETE FROM t WHERE id = 1", "no_where"),
        ("UPDATE t SET a = 1 WHERE t.id = 1", "no_where"),
        ("UPDATE t AS x SET a = 1 WHERE x.id = 1", "no_where"),
        ("DELETE FROM t WHERE CURRENT OF c", "no_where"),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", "no_where"),
        ("EXPLAIN DELETE FROM t", "no_where"),
        ("SELECT * FROM pg_roles", "catalog_secrets"),
        ("COPY t TO STDOUT", "server_file_access"),
        ("COPY t FROM STDIN", "program_execution"),
        ("EXPLAIN (ANALYZE false) SELECT 1", "explain_analyze"),
        ("EXPLAIN (ANALYZE off) SELECT 1", "explain_analyze"),
        ("RESET ROLE", "role_change"),
        ("SET ROLE NONE", "role_change"),
        ("SET SESSION AUTHORIZATION DEFAULT", "role_change"),
        ("SET default_transaction_read_only = on", "read_only_off"),
        ("BEGIN READ ONLY", "read_only_off"),
        ("SET statement_timeout = 0", "read_only_off"),
        ("CREATE VIEW v AS SELECT 1", "destructive"),
    ],
)
def test_it_does_not_record_facts_that_do_not_hold(sql, fact):
    assert fact not in one(sql).facts


@pytest.mark.parametrize(
    ("sql", "settings"),
    [
        ("SET statement_timeout = 5", {"statement_timeout"}),
        ('SET "Work_Mem" = 1', {"work_mem"}),
        ("SET TIME ZONE 'UTC'", {"timezone"}),
        ("RESET search_path", {"search_path"}),
        ("SET ROLE x", {"role"}),
        ("RESET ALL", {"*"}),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", {"transaction_isolation"}),
        ("SELECT set_config('Work_Mem', '1MB', true)", {"work_mem"}),
        ("SELECT set_config(name, 'x', true) FROM t", {"*"}),
        ("ALTER ROLE x SET work_mem = 1", set()),
        ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = x AS 'SELECT 1'", set()),
    ],
)
def test_it_records_the_settings_a_statement_changes_now(sql, settings):
    assert one(sql).settings == settings


def test_a_definition_records_what_it_names_but_not_what_it_would_do():
    info = one("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = x AS 'SELECT 1'")
    assert info.effects == ()
    info = one("CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u")
    assert info.operations == {"ddl"}
    assert info.tables == {"public.t", "public.u"}
    assert "no_where" not in info.facts
    info = one("COPY (DELETE FROM t RETURNING *) TO STDOUT")
    assert info.operations == {"read", "write"}


def test_prepare_is_judged_as_its_body_and_remembered_as_an_effect():
    info = one("PREPARE p(int) AS DELETE FROM t WHERE id = $1")
    assert info.operations == {"write"}
    assert info.tables_written == {"public.t"}
    assert info.effects == (("prepare", "p", "PREPARE p(int) AS DELETE FROM t WHERE id = $1"),)


def test_execute_is_judged_as_the_prepared_body():
    session = {"prepared": {"p": ["PREPARE p AS DELETE FROM t"]}}
    info = one("EXECUTE p", session)
    assert info.operations == {"write"}
    assert "no_where" in info.facts
    assert one("EXPLAIN ANALYZE EXECUTE p", session).tables_written == {"public.t"}
    assert one("CREATE TABLE x AS EXECUTE p", session).tables_written == {"public.t", "public.x"}


def test_execute_of_several_possible_bodies_is_judged_as_all_of_them():
    session = {"prepared": {"p": ["PREPARE p AS SELECT 1", "DELETE FROM t"]}}
    assert one("EXECUTE p", session).operations == {"read", "write"}


def test_execute_of_an_unknown_prepared_statement_cannot_be_judged():
    info = one("EXECUTE nowhere")
    assert info.error is not None and "nowhere" in info.error


def test_a_prepare_earlier_in_the_same_string_is_seen_by_execute():
    result = classify("PREPARE p AS DELETE FROM t; EXECUTE p; DEALLOCATE p; EXECUTE p")
    first, execute, _deallocate, after = result.statements
    assert execute.error is None and execute.operations == {"write"}
    assert after.error is not None


def test_a_search_path_set_earlier_in_the_string_widens_table_resolution():
    result = classify("SET search_path = secret, public; SELECT * FROM tokens")
    assert result.statements[0].effects == (("search_path", "secret", "public"),)
    assert result.statements[1].tables_read == {"public.tokens", "secret.tokens"}


def test_a_search_path_computed_at_run_time_makes_unqualified_names_any_schema():
    result = classify("SELECT set_config('search_path', x, false) FROM cfg; SELECT * FROM tokens")
    assert result.statements[1].tables_read == {"public.tokens", "*.tokens"}


def test_the_function_call_message_is_classified_by_the_function_it_calls():
    info = classify_function_call("lo_import").statements[0]
    assert "fastpath" in info.facts and "server_file_access" in info.facts
    info = classify_function_call("oid:16384").statements[0]
    assert info.unknown_functions == {"oid:16384"}
    assert "procedural" in info.operations


def test_normalize_removes_comments_whitespace_case_and_needless_quotes():
    assert normalize('/* x */ delete   FROM "t"  where "id"=1 -- y') == "DELETE FROM t WHERE id = 1"
    assert normalize('SELECT "Mixed" FROM t') == 'SELECT "Mixed" FROM t'


def test_deeply_nested_input_is_an_error_not_a_crash():
    for deep in ("SELECT " + "+".join(["a"] * 3000), "SELECT " + "(SELECT " * 3000 + "1" + ")" * 3000):
        result = classify(deep)
        assert result.error is not None
        assert result.statements == ()
