"""The recording writer's chain and COPY text in one pass: the reference against the
writer's general path, and the C build against the reference.

``recordings.chainrows.chain_copy`` must give, for every batch it takes, the hashes and
the COPY text that ``writer._chain_rows`` and ``writer._copy_text`` give (a different byte
is a chain that ``manage.py recordings verify`` cannot reproduce), and decline every batch
it does not take. ``recordings/_chainrows.c`` (built by ``make venv`` as
``_airlock_chainrows``) must answer exactly as the reference. ``make test`` runs with
``AIRLOCK_NATIVE=require``: a missing or stale build fails, not skips.
"""

from __future__ import annotations

import math
import random
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tests.nativebuilds import built_or_fail, check_an_edited_c_source_makes_the_build_stale
from recordings import chain, writer
from recordings import chainrows as pure


@pytest.fixture(scope="module")
def built() -> ModuleType:
    return built_or_fail(pure)


SESSION = uuid.UUID("6d9f3c4e-2b1a-4c5d-8e7f-0a1b2c3d4e5f")
NOW = 1_796_000_000.0  # 2026-12-01


def _item(
    payload: Any, kind: str = "statement", wall: float = NOW, offset_ms: float = 12.5
) -> tuple[Any, ...]:
    snapshot, canonical, facts = writer._take(kind, payload)
    return (0.0, wall, offset_ms, kind, snapshot, canonical, facts)


def _general(base: writer._ChainState, items: list[tuple[Any, ...]]) -> tuple[bytes, str]:
    rows, state = writer._chain_rows(SESSION, base, items)
    return writer._copy_text(SESSION, rows).encode(), state.last_hash


PAYLOADS = [
    {},
    {"text": "SELECT 1", "params": [], "action": "allow"},
    {"text": "SELECT '\\x41', E'a\\\\b' -- \t tab\nnew line", "params": ["\\x00ff", None]},
    {"text": "SELECT 'é Ω 😀 \u200b'", "result": {"rows": 2, "masked": 3, "first_rows": [["a\\b", None]]}},
    {"n": 1.5, "m": -0.25, "big": 12345678901234567890, "t": True, "f": False, "z": None},
    {"data": "ls -la\r\n\x1b[0m"},
]
KINDS = ["statement", "result", "decision", "notice", "output", "input", "error", "session_start", "approval"]
# Walls around second and rounding edges: .9999995 rounds up into the next second.
WALLS = [NOW, NOW + 0.9999995, NOW + 0.0000005, NOW + 0.0000015, 0.0, 1.0, 86399.9999996, 253402300798.0]
OFFSETS = [0.0, -0.0, 0.1, 12.5, 1234.5678901234, 0.001, 0.0001, 999999999999999.9, -3.5]


def _batches(seed: int, count: int) -> list[list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    batches = []
    for _ in range(count):
        items = []
        for _ in range(rng.randrange(0, 12)):
            items.append(
                _item(
                    rng.choice(PAYLOADS),
                    rng.choice(KINDS),
                    rng.choice(WALLS) + rng.choice([0.0, rng.random(), rng.random() * 1000]),
                    rng.choice(OFFSETS) + rng.choice([0.0, rng.random() * 1e4]),
                )
            )
        batches.append(items)
    return batches


def test_the_reference_gives_what_the_general_path_gives_on_every_batch_it_takes() -> None:
    taken = 0
    for items in _batches(20261205, 400):
        base = writer._ChainState(chain.genesis_hash(SESSION))
        copied = pure.chain_copy(str(SESSION), base.last_hash, base.seq, items)
        if copied is not None:
            assert copied == _general(base, items)
            taken += 1
    assert taken > 240  # most batches are taken: the comparison is not vacuous


def test_the_reference_chains_after_a_committed_state() -> None:
    first = [_item(p) for p in PAYLOADS]
    second = [_item(p, "result") for p in PAYLOADS]
    base = writer._ChainState(chain.genesis_hash(SESSION))
    rows, state = writer._chain_rows(SESSION, base, first)
    copied = pure.chain_copy(str(SESSION), state.last_hash, state.seq, second)
    assert copied == _general(state, second)
    assert copied is not None and copied[0].startswith(f"{SESSION}\t{len(first) + 1}\t".encode())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda i: i[:5] + (None,) + i[6:], "no canonical bytes: the writer decodes the snapshot"),
        (lambda i: i[:3] + ("Statement",) + i[4:], "a kind with a capital"),
        (lambda i: i[:3] + ("",) + i[4:], "an empty kind"),
        (lambda i: i[:3] + ("k" * 21,) + i[4:], "a kind longer than the column"),
        (lambda i: i[:3] + ("statemént",) + i[4:], "a kind that is not ASCII"),
        (lambda i: i[:2] + (1e16,) + i[3:], "an offset repr writes with an exponent"),
        (lambda i: i[:2] + (0.00001,) + i[3:], "an offset orjson writes otherwise than repr"),
        (lambda i: i[:2] + (math.inf,) + i[3:], "an infinite offset"),
        (lambda i: i[:2] + (math.nan,) + i[3:], "an offset that is not a number"),
        (lambda i: i[:2] + (12,) + i[3:], "an integer offset"),
        (lambda i: i[:1] + (NOW.__int__(),) + i[2:], "an integer time"),
        (lambda i: i[:1] + (-1.0,) + i[2:], "a time before 1970"),
        (lambda i: i[:1] + (253402300799.0,) + i[2:], "a time whose rounding could reach year 10000"),
        (lambda i: i[:1] + (math.nan,) + i[2:], "a time that is not a number"),
        (lambda i: list(i), "an item that is not a tuple"),
        (lambda i: i[:6], "an item of six fields"),
        (lambda i: i[:5] + (bytearray(i[5]),) + i[6:], "canonical bytes that are not bytes"),
    ],
)
def test_anything_but_a_plain_item_is_declined(built: ModuleType, change: Any, why: str) -> None:
    items = [_item(p) for p in PAYLOADS]
    items[2] = change(items[2])
    genesis = chain.genesis_hash(SESSION)
    assert pure.chain_copy(str(SESSION), genesis, 0, items) is None, why
    assert built.chain_copy(str(SESSION), genesis, 0, items) is None, why


@pytest.mark.parametrize(
    ("session", "prev", "seq"),
    [
        ("sessión", "0" * 64, 0),
        (str(SESSION), "ü" * 64, 0),
        (str(SESSION), "0" * 64, -1),
        (str(SESSION), "0" * 64, 1 << 62),
        (str(SESSION), "0" * 64, (1 << 62) - 1),
        (str(SESSION), "0" * 64, 1 << 80),
        (str(SESSION), "0" * 64, 1.0),
        (str(SESSION), "0" * 64, True),
        (b"6d9f", "0" * 64, 0),
        (str(SESSION), None, 0),
    ],
)
def test_a_session_hash_or_seq_out_of_range_is_declined(
    built: ModuleType, session: Any, prev: Any, seq: Any
) -> None:
    items = [_item(p) for p in PAYLOADS]
    assert pure.chain_copy(session, prev, seq, items) is None
    assert built.chain_copy(session, prev, seq, items) is None


def test_the_build_answers_as_the_reference_on_generated_batches(built: ModuleType) -> None:
    taken = 0
    for index, items in enumerate(_batches(41, 600)):
        prev = chain.genesis_hash(SESSION) if index % 2 else "ab" * 32
        seq = index * 1000
        expected = pure.chain_copy(str(SESSION), prev, seq, items)
        assert built.chain_copy(str(SESSION), prev, seq, items) == expected
        assert built.chain_copy(str(SESSION), prev, seq, tuple(items)) == expected
        taken += expected is not None
    assert taken > 380


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(
                st.text(max_size=6), st.one_of(st.text(), st.integers(-(2**63), 2**63), st.booleans())
            ),
            st.sampled_from(KINDS),
            st.floats(min_value=0, max_value=253402300798.0),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=8,
    ),
    st.text(max_size=70),
    st.integers(min_value=-2, max_value=2**63),
)
def test_the_build_answers_as_the_reference_on_any_values(
    built: ModuleType, events: list[tuple[Any, str, float, float]], prev: str, seq: int
) -> None:
    items = [_item(payload, kind, wall, offset) for payload, kind, wall, offset in events]
    assert built.chain_copy(str(SESSION), prev, seq, items) == pure.chain_copy(str(SESSION), prev, seq, items)


def test_a_large_payload_full_of_backslashes_is_written_whole(built: ModuleType) -> None:
    items = [_item({"text": "\\" * 300_000 + "x" * 70_000}), _item({"text": "\\\\"})]
    genesis = chain.genesis_hash(SESSION)
    expected = _general(writer._ChainState(genesis), items)
    assert pure.chain_copy(str(SESSION), genesis, 0, items) == expected
    assert built.chain_copy(str(SESSION), genesis, 0, items) == expected


def test_the_build_refuses_bad_calls(built: ModuleType) -> None:
    with pytest.raises(TypeError):
        built.chain_copy(str(SESSION), "0" * 64, 0)
    with pytest.raises(TypeError):
        built.chain_copy(str(SESSION), "0" * 64, 0, 5)
    assert built.chain_copy(str(SESSION), "0" * 64, 0, []) == (b"", "0" * 64)


def test_the_writer_uses_the_build_when_it_is_current(built: ModuleType) -> None:
    assert writer._chain_copy is built.chain_copy


def test_an_edited_c_source_makes_the_build_stale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check_an_edited_c_source_makes_the_build_stale(pure, monkeypatch, tmp_path)
