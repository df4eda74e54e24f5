"""The export format and its offline check, on chains built in memory (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recordings import chain, export

KEY = Ed25519PrivateKey.generate()
KEYS = {chain.key_id(KEY.public_key()): KEY.public_key()}
T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def exported(count: int = 4, *, sealed: bool = True) -> list[bytes]:
    session_id = uuid.uuid4()
    lines = [export.header_line({"id": str(session_id), "event_count": count})]
    prev = chain.genesis_hash(session_id)
    for seq in range(1, count + 1):
        at, payload = T0 + timedelta(milliseconds=seq), {"text": f"SELECT {seq}", "n": seq * 0.1}
        prev = chain.event_hash(prev, chain.canonical_event(seq, at, seq * 1.5, "statement", payload))
        lines.append(export.event_line(seq, at, seq * 1.5, "statement", payload, prev))
    signature = chain.seal(KEY, session_id, prev, count) if sealed else None
    lines.append(export.seal_line(signature, chain.key_id(KEY.public_key()), prev, count, T0.isoformat()))
    return [line.rstrip(b"\n") for line in lines]


def test_an_intact_export_verifies():
    check = export.verify_lines(exported(), KEYS)
    assert (check.ok, check.event_count, check.sealed) == (True, 4, True)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda lines: [], "the file is empty"),
        (lambda lines: [b"not json", *lines[1:]], "line 1 is not JSON"),
        (
            lambda lines: [b'{"format": "other"}', *lines[1:]],
            "line 1 is not the header of an Airlock recording export",
        ),
        (
            lambda lines: [lines[0].replace(b'"version":1', b'"version":9'), *lines[1:]],
            "unsupported export version 9",
        ),
        (
            lambda lines: [orjson.dumps({**orjson.loads(lines[0]), "genesis_hash": "0" * 64}), *lines[1:]],
            "the header's genesis hash does not match its session id",
        ),
        (lambda lines: [lines[0], b"{oops", *lines[2:]], "line 2 is not JSON"),
        (lambda lines: [lines[0], b'{"seq": "1"}', *lines[2:]], "line 2 is not an event ('at')"),
        (lambda lines: [*lines, lines[1]], "lines follow the seal"),
        (
            lambda lines: [lines[0], lines[2], lines[1], *lines[3:]],
            "event 1 is missing (next stored event is 2)",
        ),
        (
            lambda lines: [
                orjson.dumps(
                    {
                        **orjson.loads(lines[0]),
                        "session": {**orjson.loads(lines[0])["session"], "event_count": 9},
                    }
                ),
                *lines[1:],
            ],
            "the header says 9 events, the sealed chain has 4",
        ),
    ],
)
def test_a_broken_export_is_refused_with_a_reason(mangle, reason):
    check = export.verify_lines(mangle(exported()), KEYS)
    assert not check.ok
    assert check.reason == reason


def test_a_changed_number_is_found_at_its_event():
    lines = exported()
    event = orjson.loads(lines[3])
    event["payload"]["n"] = 0.31
    check = export.verify_lines([*lines[:3], orjson.dumps(event), *lines[4:]], KEYS)
    assert (check.ok, check.first_broken_seq) == (False, 3)


def test_an_unsealed_export_says_it_was_live():
    check = export.verify_lines(exported(sealed=False), KEYS)
    assert (check.ok, check.event_count) == (False, 4)
    assert "live when exported" in check.reason


def test_asciicast_lines_keep_output_and_input_only():
    assert export.cast_line(1500.0, "output", {"data": "hi\r\n"}) == b'[1.5,"o","hi\\r\\n"]\n'
    assert export.cast_line(2.0, "input", {"data": "l"}) == b'[0.002,"i","l"]\n'
    assert export.cast_line(1.0, "statement", {"text": "ls"}) is None
    assert export.cast_line(1.0, "output", {"data": 3}) is None
