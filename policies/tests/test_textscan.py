"""The decision path's text scans as the gateway runs them: the C build against the reference.

``policies/_textscan.c`` is ``policies.textscan`` in C (built by ``make venv`` as
``_airlock_textscan``); ``policies.sql`` uses it when it was built from both files as they
are now. The simple key chooses a statement's cached shape and so its cached decision;
``ascii_lacks`` decides whether a text can hold an EXECUTE (judged as what it executes), a
PREPARE, a COPY without the regular expression: the build must answer exactly as the
reference on every text, including the ones written to
slip past a filter (docs/security.md's families: Unicode look-alikes and digits, width
variants, NULs and lone surrogates, glued and prefixed constants, integer bounds). ``make
test`` runs with ``AIRLOCK_NATIVE=require``, so a missing or stale build fails, not skips.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.tests.nativebuilds import built_or_fail, check_an_edited_c_source_makes_the_build_stale
from policies import sql
from policies import textscan as pure


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


CORPUS = [
    "",
    "SELECT 1",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 412345;",
    "SELECT * FROM t WHERE id = 42 AND name = 'ann'",
    "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')",
    "'only a string'",
    "42",
    "'a'5",
    "5'a'",
    "x'a'",
    "x 'a'",
    "E'x'",
    "U&'x'",
    "&'x'",
    "_'x'",
    "a&1",
    "a & 1",
    "a_1",
    "a1",
    "1a",
    "1.5",
    ".5",
    "5.",
    "1e3",
    "t.1",
    "12ab 34",
    "ab12 34 56cd 78",
    # int4 and its neighbours, with and without leading zeros
    "2147483647",
    "2147483648",
    "02147483647",
    "000000000002147483648",
    "0000000000",
    "9999999999",
    "999999999",
    "1000000000",
    "4294967296",
    "99999999999999999999999999",
    # Unicode: letters and digits other scripts call letters and digits
    "SELECT é'x'",
    "SELECT ﬁ1",
    "SELECT ٣1",  # an Arabic-Indic digit (\w) glued to an ASCII one
    "SELECT １２",  # fullwidth digits: not [0-9]
    "SELECT a\u200b1",  # a zero-width space before a digit
    "SELECT \u0301'x'",  # a combining accent before a string (not alphanumeric)
    "SELECT ²1",  # a superscript digit: isalnum
    "SELECT ⅷ1",  # a Roman numeral: isalnum
    "SELECT 😀 1 '😀'",  # four-byte characters (the widest kind)
    "SELECT 'ñ' , 1",  # the one-byte kind beyond ASCII (latin-1)
    "SELECT 'Ω' , 1, ΩΩ2",  # the two-byte kind
    "SELECT '\x00', 1\x00",
    "SELECT '\ud800', 1",  # a lone surrogate
    "SELECT 'multi\nline', 2\n",
    # marks: anywhere, inside strings too
    "SELECT '\\', 1",
    'SELECT "a", 1',
    "SELECT $1",
    "SELECT 1 -- c",
    "SELECT 1 - -1",
    "SELECT '-' || '-'",
    "SELECT '/' || '*'",
    "SELECT 1 /* c */",
    "SELECT 'it''s'",
    "SELECT 'unbalanced",
    "SELECT 'a', 'b",
    "SELECT ''",
    "'",
    "''",
    "'''",
]

ALPHABET = list("'0123456789._&-/*\\\"$ eEuUx,;()=\n") + [
    "é",  # latin-1 letter
    "Ω",  # two-byte kind letter
    "٣",  # Arabic-Indic digit
    "１",  # fullwidth digit
    "²",  # superscript two
    "\u0301",  # combining acute accent
    "\u200b",  # zero-width space
    "\x00",
    "😀",  # four-byte kind
    "\ud800",  # lone surrogate
]


def _same(built: ModuleType, text: str) -> None:
    want = pure.simple_key(text)
    got = built.simple_key(text)
    assert got == want, text
    if want is not None:
        assert type(got) is tuple and type(got[0]) is tuple and type(got[2]) is list, text
        assert all(type(part) is str for part in got[0]) and type(got[1]) is str, text


@pytest.mark.parametrize("text", CORPUS)
def test_the_build_answers_as_the_reference_on_the_corpus(built: ModuleType, text: str) -> None:
    _same(built, text)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join))
@example("a'1'2 '3'b4&'5'")
def test_the_build_answers_as_the_reference_on_generated_texts(built: ModuleType, text: str) -> None:
    _same(built, text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_the_build_answers_as_the_reference_on_any_text(built: ModuleType, text: str) -> None:
    _same(built, text)


@settings(max_examples=500, deadline=None)
@given(
    st.from_regex(
        r"SELECT [a-z]+ FROM [a-z]+ WHERE [a-z]+ = ('[a-z ]*'|[0-9]{1,22})( AND [a-z]+ = [0-9]+)?;?",
        fullmatch=True,
    )
)
def test_the_build_answers_as_the_reference_on_statements(built: ModuleType, text: str) -> None:
    _same(built, text)


def test_long_texts_and_many_constants(built: ModuleType) -> None:
    text = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(5000))
    _same(built, text)
    assert len(built.simple_key(text)[2]) == 10_000


def test_the_build_refuses_what_is_not_text(built: ModuleType) -> None:
    with pytest.raises(TypeError, match="must be str"):
        built.simple_key(b"SELECT 1")


WORDS = [
    ("execute",),
    ("prepare", "deallocate", "discard"),
    ("copy",),
    ("",),
    (),
    ("EXECUTE",),  # not lower-case: the reference never finds it in a lowered text
    ("exécute", "execute"),  # a word no ASCII text holds, then one it may
    ("a", "ab", "abc"),
    ("quiz", "zap"),  # the ends of the alphabet
]

LACKS_CORPUS = [
    "",
    "SELECT 1",
    "EXECUTE p(1)",
    "eXeCuTe p",
    "select 'execute'",
    "executE",
    "execut",
    "xexecutex",
    "PREPARE p AS SELECT 1",
    "DEALLOCATE ALL",
    "discard all",
    "COPY t TO STDOUT",
    "ſelect",  # a long s: upper-cases to S, so the text is searched by the regex
    "EXECUTİ",  # a dotted capital I
    "ExecutE\u212a",  # a Kelvin sign, which lower-cases to k
    "ExecutE\\u212a",  # the same escaped: still ASCII
    "execute\x00",
    "\x00execute",
    "a" * 10_000 + "EXECUTE",
    "QUIZ",
    "ZAP",
    "@[`{",  # the characters beside A-Z and a-z
]


def _same_lacks(built: ModuleType, text: str, words: tuple[str, ...]) -> None:
    assert built.ascii_lacks(text, words) is pure.ascii_lacks(text, words), (text, words)


@pytest.mark.parametrize("words", WORDS)
def test_ascii_lacks_answers_as_the_reference_on_the_corpus(
    built: ModuleType, words: tuple[str, ...]
) -> None:
    for text in LACKS_CORPUS + CORPUS:
        _same_lacks(built, text, words)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.sampled_from(list("eExXcCuUtTpPrRaAdDlLoOyY ;'ıİſK\x00")), max_size=30).map("".join),
    st.sampled_from(WORDS),
)
def test_ascii_lacks_answers_as_the_reference_on_generated_texts(
    built: ModuleType, text: str, words: tuple[str, ...]
) -> None:
    _same_lacks(built, text, words)


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=30),
    st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz@[`{", max_size=3), max_size=3).map(tuple),
)
def test_ascii_lacks_answers_as_the_reference_on_any_ascii(
    built: ModuleType, text: str, words: tuple[str, ...]
) -> None:
    _same_lacks(built, text, words)


def test_ascii_lacks_refuses_what_the_reference_refuses(built: ModuleType) -> None:
    for text, words in [("SELECT 1", (b"select",)), ("SELECT 1", 5), (b"SELECT 1", ("select",))]:
        with pytest.raises((TypeError, AttributeError)):
            pure.ascii_lacks(text, words)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            built.ascii_lacks(text, words)
    # Past the first word found, and for a text that is not ASCII, the words are not read.
    assert built.ascii_lacks("select", ("select", 5)) is pure.ascii_lacks("select", ("select", 5)) is False  # type: ignore[arg-type]
    assert built.ascii_lacks("sélect", 5) is pure.ascii_lacks("sélect", 5) is False  # type: ignore[arg-type]


def test_policies_use_the_build_when_it_is_current(built: ModuleType) -> None:
    if os.environ.get("AIRLOCK_NATIVE") == "off":
        assert sql._simple_key is pure.simple_key
        assert sql._ascii_lacks is pure.ascii_lacks
    else:
        assert sql._simple_key is built.simple_key
        assert sql._ascii_lacks is built.ascii_lacks
        assert sql.mentions("ExEcUtE p", sql._EXECUTE, sql._EXECUTE_WORDS)
        assert not sql.mentions("SELECT 1", sql._EXECUTE, sql._EXECUTE_WORDS)
        assert sql.mentions("EXECUTE p", sql._EXECUTE, sql._EXECUTE_WORDS)


def test_an_edited_c_source_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_an_edited_c_source_makes_the_build_stale(pure, monkeypatch, tmp_path)
