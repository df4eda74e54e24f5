"""The check in front of the masking engine's RE2 scans: the C build against the reference.

``masking/_triggerscan.c`` writes out each of the trigger's shapes (``masking.detectors
.TRIGGER_SHAPES``) over the bytes of an ASCII text; the reference asks RE2. A "no" from
the build where RE2 finds a shape would leave a secret unmasked, in a result or in a
recording, so the two must agree on every text: each shape's own texts, alone and inside
other text, the near misses of each shape (one digit short, a separator off, a case
changed), and generated text over the shapes' alphabet. ``make test`` runs with
``AIRLOCK_NATIVE=require``: a missing or stale build fails, not skips.
"""

from __future__ import annotations

import re
import re._constants as _c
import re._parser as _parser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tests.nativebuilds import built_or_fail, check_an_edited_c_source_makes_the_build_stale
from masking import triggerscan as pure
from masking.detectors import TRIGGER, TRIGGER_SHAPES
from masking.tests.cases import NEGATIVE, POSITIVE


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


def test_the_build_was_written_for_the_trigger_in_use(built: ModuleType) -> None:
    # An edited shape must be brought to the C before the gateway uses it again.
    assert built.TRIGGER_SOURCE == TRIGGER == pure.TRIGGER_SOURCE


ALPHABET = "0123456789 -.:+()@/_=;,'\"\nABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

NEAR_MISSES = [
    "",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 412345;",
    "SELECT * FROM customers WHERE id BETWEEN 5 AND 5 + 9",
    "2026-12-05 10:00:00.123456+00",
    "12:30:00",
    "10:00:00+05:30",
    "1:2:3",
    ":abcd:ef01:2345",
    ":abcde:1:2:",
    "1.2.3",
    "1.2.3.",
    "1.2345.6.7",
    "+1 555",
    "+1 55a5555",
    "(199)",
    "(2a0)",
    "411111111111",
    "4111 1111 1111",
    "4111  1111 1111 1111",
    "4111-1111-1111-111",
    "555 201 334",
    "555.201.33a4",
    "123-45-678",
    "123.45.6789",
    "0 123 456",
    "01234 12 123",
    "020 79 123",
    "Gb82",
    "GB8",
    "----BEGIN",
    "-----begin",
    "eyj",
    "AKI",
    "ASI",
    "A3",
    "AIz",
    "ke",
    "kez",
    "pas",
    "pw",
    "beare",
    "authorizatio",
    "ghx_",
    "gh_",
    "github_pat",
    "glpat_",
    "glagen-",
    "xoxz-",
    "xap-",
    "sk_live",
    "tk_live_",
    "rk_tes_",
    "whsec",
]


CORPUS = (
    NEAR_MISSES
    + [text for cases in POSITIVE.values() for text, _ in cases]
    + [text for texts in NEGATIVE.values() for text in texts]
)


@pytest.mark.parametrize("text", CORPUS)
def test_the_build_answers_as_the_reference_on_the_corpus(built: ModuleType, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    assert built.may_trigger(data) is pure.may_trigger(data)
    assert built.shapes(data) == pure.shapes(data)
    for around in (b"x", b"0", b" ", b"-", b":", b"A"):
        assert built.may_trigger(around + data + around) is pure.may_trigger(around + data + around)
        assert built.shapes(around + data + around) == pure.shapes(around + data + around)


@pytest.mark.parametrize(("index", "shape"), list(enumerate(shape for shape, _ in TRIGGER_SHAPES)))
def test_every_shape_is_found_alone_and_inside_other_text(built: ModuleType, index: int, shape: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(
        st.from_regex(re.compile(shape.encode("ascii")), fullmatch=True),
        st.binary(max_size=6),
        st.binary(max_size=6),
    )
    def check(text: bytes, before: bytes, after: bytes) -> None:
        if not text.isascii():
            return
        assert built.may_trigger(text) is True
        assert built.shapes(text) == pure.shapes(text) and built.shapes(text) & 1 << index
        for data in (before + text + after, text[:-1], text[1:]):
            assert built.may_trigger(data) is pure.may_trigger(data), data
            assert built.shapes(data) == pure.shapes(data), data

    check()


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_the_build_answers_as_the_reference_on_generated_text(built: ModuleType, text: str) -> None:
    data = text.encode()
    assert built.may_trigger(data) is pure.may_trigger(data)
    assert built.shapes(data) == pure.shapes(data)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["0", "1", "5", "9", " ", "-", ".", ":", "a", "F", "+", "(", ")", "0"]), max_size=30
    )
)
def test_the_build_answers_as_the_reference_on_digits_and_separators(
    built: ModuleType, parts: list[str]
) -> None:
    data = "".join(parts).encode()
    assert built.may_trigger(data) is pure.may_trigger(data)
    assert built.shapes(data) == pure.shapes(data)


@pytest.mark.parametrize(
    "data", ["caf\u00e9".encode(), "\u212aey".encode(), "pa\u017fs".encode(), b"\xff", b"\x80abc"]
)
def test_text_that_is_not_ascii_is_left_to_re2(built: ModuleType, data: bytes) -> None:
    assert built.may_trigger(data) is True is pure.may_trigger(data)
    assert built.shapes(data) is None is pure.shapes(data)


def test_the_shapes_are_every_one_that_matches() -> None:
    # The reference itself: one bit per shape of TRIGGER_SHAPES that RE2 finds.
    assert pure.shapes(b"") == 0
    assert pure.shapes(b"mail bob@example.com, key ghp_x") == 1 << 0 | 1 << 16 | 1 << 20
    assert pure.shapes(b"4111 1111 1111 1111") == 1 << 7


def test_only_bytes(built: ModuleType) -> None:
    with pytest.raises(TypeError):
        built.may_trigger("key")
    with pytest.raises(TypeError):
        built.dirty_spans("key")
    with pytest.raises(TypeError):
        built.shapes("key")


# The first bytes of the trigger's texts, derived from its expressions (``re._parser``'s
# tree of each shape): the build's table of where a shape may begin must hold every pair.


def _starts(items: list[tuple[Any, Any]], most: int, folded: bool) -> set[tuple[str, bool]]:
    """The texts of at most ``most`` characters that a match of ``items`` (a parsed
    sequence) begins with: (text, whole), whole when the match is all of it (a shorter
    text is always whole)."""
    found = {("", True)}
    for op, arg in items:
        grown: set[tuple[str, bool]] = set()
        for text, whole in found:
            if not whole or len(text) == most:
                grown.add((text, False))
                continue
            for more, more_whole in _item_starts(op, arg, most - len(text), folded):
                grown.add((text + more, more_whole))
        found = grown
    return found


def _chars(op: Any, arg: Any, folded: bool) -> set[str]:
    if op is _c.LITERAL:
        chars = {chr(arg)}
    else:
        assert op is _c.IN, op
        chars = set()
        for kind, value in arg:
            if kind is _c.LITERAL:
                chars.add(chr(value))
            else:
                assert kind is _c.RANGE, kind
                chars.update(chr(c) for c in range(value[0], value[1] + 1))
    return {f for c in chars for f in {c, c.lower(), c.upper()}} if folded else chars


def _item_starts(op: Any, arg: Any, most: int, folded: bool) -> set[tuple[str, bool]]:
    if op in (_c.LITERAL, _c.IN):
        return {(c, True) for c in _chars(op, arg, folded)}
    if op is _c.BRANCH:
        return {found for branch in arg[1] for found in _starts(list(branch), most, folded)}
    if op is _c.SUBPATTERN:
        return _starts(list(arg[3]), most, folded or bool(arg[1] & re.IGNORECASE))
    assert op is _c.MAX_REPEAT, op
    low, high, items = arg
    found: set[tuple[str, bool]] = {("", True)}
    result: set[tuple[str, bool]] = set()
    for done in range(high + 1):
        if done >= low:
            result |= found
        if done == high:
            break
        grown = set()
        for text, whole in found:
            if not whole or len(text) == most:
                grown.add((text, False))
                continue
            for more, more_whole in _starts(list(items), most - len(text), folded):
                grown.add((text + more, more_whole))
        if grown == found:  # every text cut short: more rounds begin the same way
            result |= found
            break
        found = grown
    return result


def test_the_table_of_first_bytes_holds_every_start_of_every_shape(built: ModuleType) -> None:
    start, alone = built.start_pairs()
    assert len(start) == 128 * 128 and len(alone) == 128
    pairs = {(c0, c1) for c0 in range(128) for c1 in range(128) if start[c0 << 7 | c1]}
    singles = {c for c in range(128) if alone[c]}
    for shape, _ in TRIGGER_SHAPES:
        begins = _starts(list(_parser.parse(shape)), 2, False)
        assert begins, shape
        for text, _whole in begins:
            assert text.isascii(), (shape, text)
            if len(text) == 2:
                assert (ord(text[0]), ord(text[1])) in pairs, (shape, text)
            else:  # a whole match of one character
                assert len(text) == 1 and ord(text) in singles, (shape, text)
    # And the table is no wider than the shapes: it spares the checks it is there to spare.
    derived = {
        text for shape, _ in TRIGGER_SHAPES for text, _ in _starts(list(_parser.parse(shape)), 2, False)
    }
    assert pairs == {(ord(t[0]), ord(t[1])) for t in derived if len(t) == 2} | {
        (ord("@"), c) for c in range(128)
    }
    assert singles == {ord(t) for t in derived if len(t) == 1} == {ord("@")}


def test_the_derivation_of_first_bytes_reads_each_kind_of_expression() -> None:
    def firsts(shape: str) -> set[str]:
        return {text for text, _ in _starts(list(_parser.parse(shape)), 2, False)}

    assert firsts("ab|c") == {"ab", "c"}
    assert firsts("(?i:ke)y") == {"ke", "kE", "Ke", "KE"}
    assert firsts("[0-1](?:[ -]?[2]){3}") == {"0 ", "0-", "02", "1 ", "1-", "12"}
    assert firsts("x{0,2}y") == {"y", "xy", "xx"}


def _joined_values() -> Any:
    return st.lists(
        st.one_of(
            st.text(alphabet=ALPHABET, max_size=20).map(str.encode),
            st.sampled_from([t.encode() for t in CORPUS if "\x00" not in t]),
            st.binary(max_size=8).map(lambda b: b.replace(b"\x00", b"")),
        ),
        max_size=12,
    ).map(b"\x00".join)


@settings(max_examples=1500, deadline=None)
@given(_joined_values())
def test_the_dirty_values_of_a_join_are_the_references(built: ModuleType, joined: bytes) -> None:
    assert built.dirty_spans(joined) == pure.dirty_spans(joined)
    for index, start, stop in pure.dirty_spans(joined):
        assert joined[start:stop] == joined.split(b"\x00")[index]


def test_the_dirty_values_of_a_join_at_its_edges(built: ModuleType) -> None:
    assert built.dirty_spans(b"") == pure.dirty_spans(b"") == []
    assert built.dirty_spans(b"\x00") == []
    assert built.dirty_spans(b"@") == [(0, 0, 1)]
    assert built.dirty_spans(b"a\x00@") == [(1, 2, 3)]
    assert built.dirty_spans(b"@\x00\x00x@y\x00") == [(0, 0, 1), (2, 3, 6)]
    # A shape never spans two values: the card's digits, a word, the IPv4 dots.
    assert built.dirty_spans(b"4111 1111\x001111 1111 1") == []
    assert built.dirty_spans(b"ke\x00y") == built.dirty_spans(b"1.2\x00.3.4") == []
    assert built.dirty_spans(b"caf\xc3\xa9\x00plain") == [(0, 0, 5)]  # not ASCII: for the detectors
    assert built.dirty_spans(b"x" * 100_000 + b"\x00" + b"1.2.3.4") == [(1, 100_001, 100_008)]


def test_an_edited_c_source_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_an_edited_c_source_makes_the_build_stale(pure, monkeypatch, tmp_path)
