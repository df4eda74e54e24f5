"""Classifications shared by statements of the same shape (policies/sql.py ``_shapes``).

A statement sent again with new literals reuses the classification of its shape; nothing
that depends on a literal's value is ever shared, and each statement keeps its own text.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from pglast import parser as pg_parser

from policies import sql

PATH = sql.DEFAULT_SEARCH_PATH


@pytest.fixture(autouse=True)
def fresh_caches():
    sql._shapes.clear()
    sql._classify_cached.cache_clear()
    yield
    sql._shapes.clear()
    sql._classify_cached.cache_clear()


@pytest.fixture
def walks(monkeypatch):
    """Counts the full classifications (parse and walk) made."""
    calls: list[str] = []
    real = sql._classify

    def counting(text, path, prepared, shape_of=None):
        calls.append(text)
        return real(text, path, prepared, shape_of)

    monkeypatch.setattr(sql, "_classify", counting)
    return calls


def fresh(text: str) -> sql.Classification:
    return sql._classify(text, PATH, {})


def test_a_statement_with_new_literals_is_classified_once_per_shape(walks):
    first = sql.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 412345;")
    second = sql.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 7;")
    assert len(walks) == 1
    assert second.statements[0].text == "SELECT abalance FROM pgbench_accounts WHERE aid = 7"
    assert second == fresh("SELECT abalance FROM pgbench_accounts WHERE aid = 7;")
    assert first.statements[0].text.endswith("412345")
    assert second.normalized(0) == "SELECT abalance FROM pgbench_accounts WHERE aid = 7"


def test_each_statement_keeps_its_own_text_around_comments_and_multibyte_literals(walks):
    template = "/* lead ü */ SELECT name FROM customers WHERE note = '{}' AND id = {} ; -- tail é"
    sql.classify(template.format("é", 1))
    text = template.format("日本語のテキスト", 123456789)
    got = sql.classify(text)
    assert len(walks) == 1
    assert got == fresh(text)
    assert got.statements[0].text.endswith("note = '日本語のテキスト' AND id = 123456789")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # The setting changed is named by a literal.
        ("SELECT set_config('application_name', 'x', false)", "SELECT set_config('role', 'admin', false)"),
        ("SELECT pg_catalog.set_config('search_path', 'a', true)", "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)"),
        # EXPLAIN ANALYZE runs the statement; EXPLAIN (ANALYZE false) does not.
        ("EXPLAIN (ANALYZE false) DELETE FROM t", "EXPLAIN (ANALYZE true) DELETE FROM t"),
        ("EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t"),
        ("SET default_transaction_read_only = on", "SET default_transaction_read_only = off"),
        ("SET search_path = public", "SET search_path = evil"),
        ("SET TRANSACTION READ ONLY", "SET TRANSACTION READ WRITE"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
        ("PREPARE p AS SELECT 1", "PREPARE p AS SELECT 2"),
        ("ALTER SYSTEM SET work_mem = '4MB'", "ALTER SYSTEM SET shared_preload_libraries = 'x'"),
    ],
)  # fmt: skip
def test_a_classification_that_reads_a_literal_is_never_shared(first, second):
    sql.classify(first)
    assert sql.classify(second) == fresh(second)
    assert sql.classify(first) == fresh(first)


def _siblings(text: str) -> list[str]:
    """``text`` with its numbers and string literals changed (the same shape or not)."""
    changed_numbers = re.sub(r"(?<![\w$.])(\d+)(?![\w.])", lambda m: str(int(m.group(1)) + 17), text)
    changed_strings = re.sub(r"'([^'\\]*)'", lambda m: "'" + m.group(1)[::-1] + "zz'", text)
    return [changed_numbers, changed_strings, f"{changed_numbers} "]


def _corpus() -> list[str]:
    """Every SQL text written in the classification, engine and security-case tests."""
    texts: list[str] = []
    here = Path(__file__).parent
    for name in (
        "test_sql_classification.py",
        "test_security_cases.py",
        "test_engine.py",
        "test_properties.py",
    ):
        tree = ast.parse((here / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value:
                try:
                    pg_parser.parse_sql(node.value)
                except pg_parser.ParseError:
                    pass  # prose, not SQL
                else:
                    texts.append(node.value)
    return sorted(set(texts))


def test_every_known_statement_and_its_siblings_classify_as_afresh():
    """The security cases, ordinary statements and classification cases, each after a
    sibling with other literals: whatever the shape cache serves equals a fresh parse."""
    corpus = _corpus()
    assert len(corpus) > 300
    shared = 0
    for text in corpus:
        for sibling in _siblings(text):
            sql._shapes.clear()
            sql._classify_cached.cache_clear()
            sql.classify(sibling)
            try:
                same_shape = pg_parser.normalize(sibling) == pg_parser.normalize(text)
            except Exception:
                same_shape = False
            shared += same_shape and isinstance(next(iter(sql._shapes.values()), None), sql._Shape)
            assert sql.classify(text) == fresh(text), (sibling, text)
    assert shared > 50  # the cache was really exercised


def test_a_shape_copies_every_field_of_a_statement():
    assert tuple(f.name for f in dataclasses.fields(sql.StatementInfo)) == sql.SHAPE_FIELDS
