"""The recording's check of its canonical JSON as the gateway runs it: the C build against
the reference.

``recordings/_jsonscan.c`` is ``recordings.jsonscan.altered_by_jsonb`` in C (built by
``make venv`` as ``_airlock_jsonscan``); ``recordings.chain`` uses it when it was built from
both files as they are now. A "no" where the reference says "yes" would record an event
whose hash verification cannot reproduce from the stored event, so the build must answer
exactly as the reference on every text. ``make test`` runs with ``AIRLOCK_NATIVE=require``:
a missing or stale build fails, not skips.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tests.nativebuilds import built_or_fail, check_an_edited_c_source_makes_the_build_stale
from recordings import chain
from recordings import jsonscan as pure


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


CORPUS = [
    b"",
    b"e",
    b"+",
    b"e+",
    b"+e",
    b"E+",  # upper case: not what the reference looks for
    b"1e+17",
    b'{"a":1e+17}',
    b'{"a":"1e17 -0"}',
    b"-0.0",
    b"-0.",
    b"-0",
    b"x-0.0",
    b"-0.0x",
    b"--0.0",
    b"-0-0.0",
    b"\\u0000",
    b"\\u000",
    b"\\\\u0000",
    b"\\u00000",
    b"\\u0001",
    b"u0000",
    b"\\",
    b"ee++",
    b"e\x00+",
    b"\x00" * 8,
    "\u00e9e+".encode(),  # after a two-byte character
    "caf\u00e9 -0.0".encode(),
    b"x" * 4096 + b"e+",
    b"e+" + b"x" * 4096,
    b"-" * 4096,
    b"+" * 4096,
    b"\\" * 4096,
    b"2026-12-05 14:00:00.123456+00" * 10,
]


def _same(built: ModuleType, text: bytes) -> None:
    assert built.altered_by_jsonb(text) is pure.altered_by_jsonb(text), text
    assert built.altered_by_jsonb(bytearray(text)) is pure.altered_by_jsonb(bytearray(text)), text


@pytest.mark.parametrize("text", CORPUS)
def test_the_build_answers_as_the_reference_on_the_corpus(built: ModuleType, text: bytes) -> None:
    _same(built, text)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"e", b"E", b"+", b"-", b"0", b".", b"\\", b"u", b"1", b"\x00", b" "]), max_size=24
    ).map(b"".join)
)
def test_the_build_answers_as_the_reference_on_generated_texts(built: ModuleType, text: bytes) -> None:
    _same(built, text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_the_build_answers_as_the_reference_on_any_bytes(built: ModuleType, text: bytes) -> None:
    _same(built, text)


@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_the_build_answers_as_the_reference_on_encoded_payloads(built: ModuleType, value: object) -> None:
    _same(built, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def test_the_build_refuses_what_is_not_bytes(built: ModuleType) -> None:
    with pytest.raises(TypeError):
        pure.altered_by_jsonb("e+")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        built.altered_by_jsonb("e+")


def test_the_chain_uses_the_build_when_it_is_current(built: ModuleType) -> None:
    if os.environ.get("AIRLOCK_NATIVE") == "off":
        assert chain._altered_by_jsonb is pure.altered_by_jsonb
    else:
        assert chain._altered_by_jsonb is built.altered_by_jsonb
    assert chain.canonical_plain({"x": 1e17}) is None
    assert chain.canonical_plain({"x": -0.0}) is None
    assert chain.canonical_plain({"x": "\x00"}) is None
    assert chain.canonical_plain({"x": "1e17"}) == b'{"x":"1e17"}'


def test_an_edited_c_source_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_an_edited_c_source_makes_the_build_stale(pure, monkeypatch, tmp_path)
