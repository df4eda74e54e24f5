"""libpg_query called with the GIL held (policies/pgquery.py) gives exactly what pglast gives."""

from __future__ import annotations

import pytest
from pglast import parser as pg_parser

from policies import pgquery
from policies.tests.test_shapes import _corpus, _siblings


def test_the_bindings_load_from_the_pinned_pglast():
    # Without them the gateway silently falls back to pglast's GIL-releasing calls.
    assert pgquery.AVAILABLE


def outcome(function, text):
    try:
        return ("ok", function(text))
    except pg_parser.ParseError as exc:
        return ("error", type(exc), exc.args, str(exc))


def pglast_deparse(text):
    return str(pg_parser.deparse_protobuf(pg_parser.parse_sql_protobuf(text)))


TEXTS = [
    *_corpus(),
    *(sibling for text in _corpus()[:200] for sibling in _siblings(text)),
    "SELECT 'é日本語' AS \"ü\", $$dollar ' quoted$$ FROM t WHERE x = E'\\n'",
    "SELEC 1",
    "SELECT 'ü' FROM",
    "SELECT ((((1",
    "",
    ";;",
    "/* only a comment */",
    "SELECT 1; SELECT 2; UPDATE t SET a = 'x' WHERE b = 4",
]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (pgquery.normalize, pg_parser.normalize),
        (pgquery.parse_json, pg_parser.parse_sql_json),
        (pgquery.deparse, pglast_deparse),
    ],
    ids=["normalize", "parse_json", "deparse"],
)
def test_every_corpus_text_gives_pglasts_result_or_error(ours, theirs):
    assert len(TEXTS) > 500
    errors = 0
    for text in TEXTS:
        expected = outcome(theirs, text)
        assert outcome(ours, text) == expected, text
        errors += expected[0] == "error"
    assert errors >= 3  # the error path was exercised


def test_a_long_statement_and_many_calls_keep_memory_flat():
    import resource

    text = "SELECT " + ", ".join(f"'{i}' AS c{i}" for i in range(2000)) + " FROM t"
    for _ in range(20):
        pgquery.deparse(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(200):
        pgquery.deparse(text)
        pgquery.normalize(text)
        pgquery.parse_json(text)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB
