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
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser as pg_parser

from policies import pgquery, sql

PATH = sql.DEFAULT_SEARCH_PATH


@pytest.fixture(autouse=True)
def fresh_caches():
    clear()
    yield
    clear()


def clear():
    sql._shapes.clear()
    sql._simple_shapes.clear()
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
            clear()
            sql.classify(sibling)
            try:
                same_shape = pg_parser.normalize(sibling) == pg_parser.normalize(text)
            except Exception:
                same_shape = False
            shared += same_shape and isinstance(next(iter(sql._shapes.values()), None), sql._Shape)
            assert sql.classify(text) == fresh(text), (sibling, text)
    assert shared > 50  # the cache was really exercised


def test_siblings_found_by_their_simple_key_classify_and_normalize_as_afresh():
    """The same corpus through the parser-free path: a sibling makes the simple entry,
    then the text is served from it; its classification and its normalized text (what
    ``regex`` rules see, built from the shape's template) equal a fresh parse's."""
    served = 0
    for text in _corpus():
        for sibling in _siblings(text):
            clear()
            sql.classify(sibling)
            sql.classify(sibling)  # an entry is made when the shape is known
            simple = sql._simple_key(text)
            entry = sql._simple_shapes.get((simple[0], simple[1], PATH)) if simple else None
            got = sql.classify(text)
            assert got == fresh(text), (sibling, text)
            if len(got.statements) == 1:
                assert got.normalized(0) == sql.normalize(got.statements[0].text), (sibling, text)
            served += entry is not None and entry.parts is not None
    assert served > 100


def test_texts_the_simple_path_cannot_vouch_for_take_the_parser():
    for text in [
        "SELECT * FROM t WHERE a = E'x\\ny'",  # escapes
        "SELECT * FROM t WHERE a = 'it''s'",  # a doubled quote
        'SELECT * FROM "T\'1" WHERE a = 1',  # a quoted identifier
        "SELECT $$x$$, $1",  # dollar quotes, parameters
        "SELECT 1 -- 'comment",
        "SELECT /* ' */ 1",
        "SELECT B'101', X'1F', N'x', U&'x'",
        "SELECT 'unbalanced",
    ]:
        assert sql._simple_key(text) is None, text
    # Constants PostgreSQL does not replace (ORDER BY 1), or replaces with more around them
    # (-5): the simple key is not PostgreSQL's normalization, so no entry is made.
    for text in ["SELECT a FROM t ORDER BY 1", "SELECT a FROM t WHERE b = -5", "SELECT 1.5, 1e3"]:
        sql.classify(text)
        sql.classify(text)
        assert not sql._simple_shapes, text


@settings(max_examples=300, deadline=None)
@given(
    template=st.sampled_from(
        [
            "SELECT abalance FROM pgbench_accounts WHERE aid = {0};",
            "select name, email from customers where id in ({0}, {1}) and note <> {2} limit {0}",
            "UPDATE accounts SET balance = {0}, note = {2} WHERE id = {1}",
            "INSERT INTO t (a, b, c) VALUES ({0}, {2}, {1}) RETURNING a",
            "SELECT {2}::date, interval {2}, {0}::int8 FROM t WHERE x LIKE {2}",
            "SELECT * FROM t WHERE a = {1} OR b BETWEEN {0} AND {1}",
        ]
    ),
    numbers=st.lists(st.integers(min_value=0, max_value=10**12), min_size=2, max_size=2),
    padded=st.booleans(),
    text=st.text(st.characters(blacklist_characters="'\\\x00", blacklist_categories=("Cs",)), max_size=12),
)
def test_a_normalized_text_built_from_the_template_is_the_deparsers(template, numbers, padded, text):
    first = [f"{n:03d}" if padded else str(n) for n in numbers]
    for constants in ([str(n + 1) for n in numbers] + ["'seed'"], [*first, f"'{text}'"]):
        statement = template.format(*constants)
        got = sql.classify(statement)
        assert got == fresh(statement), statement
        assert got.normalized(0) == pgquery.deparse(statement), statement


def test_a_shape_copies_every_field_of_a_statement():
    assert tuple(f.name for f in dataclasses.fields(sql.StatementInfo)) == sql.SHAPE_FIELDS


# --- decisions shared by statements of the same shape (CompiledPolicy._shapes) -----------

REGEX_POLICY = {
    "default": "deny",
    "rules": [
        # Regular expressions that look at constants: statements of one shape differ here.
        {"name": "no-drop-notes", "match": {"regex": r"'[^']*drop[^']*'"}, "action": "deny"},
        {"name": "watch-seven", "match": {"regex": r"\b7\b"}, "action": "observe", "would": "review"},
        {"name": "vault", "match": {"tables": ["vault.*"]}, "action": "deny", "message": "no"},
        {"name": "ops-writes", "match": {"groups": ["ops"], "operations": ["write"]}, "action": "allow"},
        {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
    ],
}


def everything(decision) -> dict:
    """Every field of a decision, the classification too (``Decision.__eq__`` skips it)."""
    return {f.name: getattr(decision, f.name) for f in dataclasses.fields(decision)}


def ask(policy, text: str, group: str = "agents"):
    from policies.types import Request

    return policy.evaluate(
        Request(
            protocol="postgres", connection="shop", agent="bot", groups=frozenset({group}), statement=text
        )
    )


def compiled(spec=REGEX_POLICY, cache_size: int = 10_000):
    from policies.engine import compile_policy

    return compile_policy("shapes", 1, spec, cache_size=cache_size)


def test_statements_of_one_shape_are_decided_once_and_get_their_own_text():
    policy = compiled()
    first = ask(policy, "SELECT abalance FROM pgbench_accounts WHERE aid = 412345;")
    second = ask(policy, "SELECT abalance FROM pgbench_accounts WHERE aid = 99;")
    assert policy.shape_hits == 1
    assert everything(second) == everything(
        ask(compiled(), "SELECT abalance FROM pgbench_accounts WHERE aid = 99;")
    )
    assert (
        second.classification["statements"][0]["text"]
        == "SELECT abalance FROM pgbench_accounts WHERE aid = 99"
    )
    assert first.classification["statements"][0]["text"].endswith("412345")
    assert first.action == second.action == "allow"


def test_a_regex_that_sees_a_constant_splits_a_shape():
    policy = compiled()
    template = "SELECT note FROM notes WHERE note = '{}' AND id = {}"
    assert ask(policy, template.format("fine", 1)).action == "allow"
    assert ask(policy, template.format("fine", 2)).action == "allow"
    assert policy.shape_hits == 1
    dropped = ask(policy, template.format("please drop it", 3))
    assert (dropped.action, dropped.rule) == ("deny", "no-drop-notes")
    seven = ask(policy, template.format("fine", 7))
    assert (seven.action, seven.observed) == ("allow", ("watch-seven",))
    assert ask(policy, template.format("fine", 8)).observed == ()
    assert ask(policy, template.format("drop", 8)).action == "deny"
    assert policy.shape_hits == 3  # ids 2 and 8 and the second drop


def test_the_request_context_is_part_of_a_shape_decision():
    policy = compiled()
    assert ask(policy, "UPDATE accounts SET balance = 1 WHERE id = 2", "ops").action == "allow"
    assert ask(policy, "UPDATE accounts SET balance = 3 WHERE id = 4", "agents").action == "deny"
    assert ask(policy, "UPDATE accounts SET balance = 5 WHERE id = 6", "ops").action == "allow"


def test_every_known_statement_and_its_siblings_are_decided_as_afresh():
    """The corpus of classification and security cases, each after siblings with other
    literals, through a policy whose regular expressions look at literals: a decision
    served for the shape equals, field for field, the decision made with no cache."""
    corpus = _corpus()
    policy = compiled(cache_size=64)
    for text in corpus:
        for sibling in _siblings(text):
            ask(policy, sibling)
            ask(policy, sibling, "ops")
        for group in ("agents", "ops"):
            assert everything(ask(policy, text, group)) == everything(ask(compiled(), text, group)), text
    assert policy.shape_hits > 100  # the shape cache was really exercised


def test_a_protocol_given_another_classifier_is_not_decided_by_the_old_shapes(monkeypatch):
    """Shapes are the SQL classifier's: a protocol whose classifier is replaced is asked
    about every statement, not answered from shapes its old classifier found."""
    from policies import engine
    from policies.classification import Classification, plain_statement

    policy = compiled()
    ask(policy, "SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
    asked = []

    def classify(request):
        asked.append(request.statement)
        return Classification(statements=(plain_statement(request.statement, "Opaque"),))

    monkeypatch.setattr(engine, "_CLASSIFIERS", dict(engine._CLASSIFIERS))
    monkeypatch.setattr(engine, "_SHAPERS", dict(engine._SHAPERS))
    engine.register_classifier("postgres", classify, engine._postgres_session_key)
    ask(policy, "SELECT abalance FROM pgbench_accounts WHERE aid = 2;")
    assert asked == ["SELECT abalance FROM pgbench_accounts WHERE aid = 2;"]
    assert policy.shape_hits == 0
