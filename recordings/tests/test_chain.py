"""The pure hash chain and seal: tampering of every kind is found at the right event."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from recordings import chain

SESSION = uuid.UUID("8c1d3f7e-35a4-4b55-9a4e-3b4f2a1e0c11")
T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Ev:
    seq: int
    at: datetime
    offset_ms: float
    kind: str
    payload: Any
    hash: str


def build(payloads: list[tuple[str, Any]], session_id: uuid.UUID = SESSION) -> list[Ev]:
    events, prev = [], chain.genesis_hash(session_id)
    for n, (kind, payload) in enumerate(payloads, start=1):
        at, offset = T0 + timedelta(milliseconds=n * 1.5), n * 1.5
        digest = chain.event_hash(prev, chain.canonical_event(n, at, offset, kind, payload))
        events.append(Ev(n, at, offset, kind, payload, digest))
        prev = digest
    return events


def renumber(events: list[Ev]) -> list[Ev]:
    return [dataclasses.replace(e, seq=n) for n, e in enumerate(events, start=1)]


EVENTS = [
    ("session_start", {"agent": "billing-bot", "connection": "shop"}),
    ("statement", {"text": "SELECT * FROM invoices", "params": []}),
    ("decision", {"action": "allow", "rule": "reads"}),
    ("result", {"rows": 2, "command_tag": "SELECT 2", "first_rows": [["1", "9.99"], ["2", None]]}),
    ("statement", {"text": "DELETE FROM invoices", "params": []}),
    ("decision", {"action": "deny", "rule": "no-deletes"}),
    ("session_end", {"reason": "client disconnected", "status": "ended"}),
]


def test_an_intact_chain_verifies():
    events = build(EVENTS)
    result = chain.verify_chain(SESSION, events)
    assert result == chain.VerifyResult(True, None, "", 7, events[-1].hash)


def test_a_session_with_no_events_is_an_empty_intact_chain():
    assert chain.verify_chain(SESSION, []) == chain.VerifyResult(
        True, None, "", 0, chain.genesis_hash(SESSION)
    )


def test_an_edited_payload_breaks_the_chain_at_that_event():
    events = build(EVENTS)
    events[3] = dataclasses.replace(events[3], payload={**events[3].payload, "rows": 0})
    result = chain.verify_chain(SESSION, events)
    assert (result.ok, result.first_broken_seq, result.event_count) == (False, 4, 3)
    assert "does not match its hash" in result.reason


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "notice"},
        {"offset_ms": 6.001},
        {"at": T0 + timedelta(seconds=1)},
        {"hash": "0" * 64},
    ],
)
def test_any_edited_field_breaks_the_chain_at_that_event(change):
    events = build(EVENTS)
    events[2] = dataclasses.replace(events[2], **change)
    assert chain.verify_chain(SESSION, events).first_broken_seq == 3


def test_a_deleted_event_is_named_as_missing():
    events = build(EVENTS)
    del events[2]
    result = chain.verify_chain(SESSION, events)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert result.reason == "event 3 is missing (next stored event is 4)"


def test_a_deleted_event_with_the_rest_renumbered_breaks_at_the_gap():
    events = build(EVENTS)
    del events[2]
    result = chain.verify_chain(SESSION, renumber(events))
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_an_inserted_event_breaks_the_chain_where_it_was_inserted():
    events = build(EVENTS)
    forged = Ev(3, T0, 4.0, "decision", {"action": "allow", "rule": "x"}, "f" * 64)
    result = chain.verify_chain(SESSION, renumber([*events[:2], forged, *events[2:]]))
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_an_inserted_event_with_a_well_chained_hash_breaks_the_chain_at_the_next_event():
    events = build(EVENTS)
    canonical = chain.canonical_event(3, T0, 4.0, "decision", {"action": "allow"})
    forged = Ev(3, T0, 4.0, "decision", {"action": "allow"}, chain.event_hash(events[1].hash, canonical))
    result = chain.verify_chain(SESSION, renumber([*events[:2], forged, *events[2:]]))
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_swapped_events_break_the_chain_at_the_first_of_them():
    events = build(EVENTS)
    events[3], events[4] = events[4], events[3]
    assert chain.verify_chain(SESSION, renumber(events)).first_broken_seq == 4
    # Swapped without renumbering: the sequence itself is out of order.
    events = build(EVENTS)
    events[3], events[4] = events[4], events[3]
    result = chain.verify_chain(SESSION, events)
    assert (result.first_broken_seq, result.reason) == (4, "event 4 is missing (next stored event is 5)")


def test_a_repeated_event_is_detected():
    events = build(EVENTS)
    result = chain.verify_chain(SESSION, [*events[:3], events[2], *events[3:]])
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "appears again" in result.reason


def test_events_moved_to_another_session_do_not_verify_there():
    events = build(EVENTS)
    result = chain.verify_chain(uuid.uuid4(), events)
    assert (result.ok, result.first_broken_seq) == (False, 1)


def test_a_chain_recomputed_after_an_edit_verifies_but_its_seal_does_not():
    key = Ed25519PrivateKey.generate()
    events = build(EVENTS)
    signature = chain.seal(key, SESSION, events[-1].hash, len(events))
    forged = build([*EVENTS[:5], ("decision", {"action": "allow", "rule": "no-deletes"}), EVENTS[6]])
    assert chain.verify_chain(SESSION, forged).ok
    assert not chain.verify_seal(key.public_key(), SESSION, forged[-1].hash, len(forged), signature)
    assert chain.verify_seal(key.public_key(), SESSION, events[-1].hash, len(events), signature)


def test_a_seal_made_with_another_key_fails():
    events = build(EVENTS)
    signature = chain.seal(Ed25519PrivateKey.generate(), SESSION, events[-1].hash, len(events))
    assert not chain.verify_seal(
        Ed25519PrivateKey.generate().public_key(), SESSION, events[-1].hash, 7, signature
    )


@pytest.mark.parametrize(
    "field,value",
    [("session", uuid.UUID(int=1)), ("last_hash", "a" * 64), ("count", 6)],
)
def test_a_seal_covers_the_session_the_last_hash_and_the_count(field, value):
    key = Ed25519PrivateKey.generate()
    args = {"session": SESSION, "last_hash": "b" * 64, "count": 7}
    signature = chain.seal(key, args["session"], args["last_hash"], args["count"])
    args[field] = value
    assert not chain.verify_seal(
        key.public_key(), args["session"], args["last_hash"], args["count"], signature
    )


def test_a_malformed_seal_is_simply_invalid():
    key = Ed25519PrivateKey.generate()
    assert not chain.verify_seal(key.public_key(), SESSION, "b" * 64, 7, "not base64!")
    assert not chain.verify_seal(key.public_key(), SESSION, "b" * 64, 7, "")


def test_the_canonical_form_is_compact_sorted_utf8_json():
    canonical = chain.canonical_event(5, T0, 12.5, "statement", {"text": "SELECT 'é'", "params": [1, None]})
    assert (
        canonical
        == (
            '{"at":"2026-11-24T09:30:00.000000+00:00","kind":"statement","offset_ms":12.5,'
            '"payload":{"params":[1,null],"text":"SELECT \'é\'"},"seq":5}'
        ).encode()
    )
    assert json.loads(canonical)["payload"]["text"] == "SELECT 'é'"


def test_key_order_and_local_time_zones_do_not_change_the_canonical_form():
    here = T0.astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    a = chain.canonical_event(1, T0, 0.0, "notice", {"a": 1, "b": 2})
    b = chain.canonical_event(1, here, 0.0, "notice", {"b": 2, "a": 1})
    assert a == b


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        chain.canonical_event(1, datetime(2026, 1, 1), 0.0, "notice", {})  # noqa: DTZ001


def test_an_unreadable_event_breaks_the_chain_instead_of_raising():
    events = build(EVENTS)
    events[1] = dataclasses.replace(events[1], payload={"x": object()})
    result = chain.verify_chain(SESSION, events)
    assert (result.ok, result.first_broken_seq) == (False, 2) and "cannot be read" in result.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_payloads_survive_a_json_round_trip_unchanged(value):
    # What the database gives back is json.loads of what was stored: the canonical text
    # of that must be the canonical text that was hashed.
    text = chain.canonical_payload(value)
    assert chain.canonical_payload(json.loads(text)) == text
    assert chain.canonical_decoded_payload(json.loads(text)) == text
    assert chain.canonical_decoded_payload(json.loads(json.dumps(value, allow_nan=True))) == text
    assert b"\\u0000" not in text


@given(json_values)
def test_the_one_pass_canonical_form_is_the_canonical_form_or_declines(value):
    # The writer builds canonical bytes at append time when the payload is plain JSON;
    # they must be exactly what the chain would compute after a round trip, or None.
    payload = {"v": value, "text": "x"}
    fast = chain.canonical_plain(payload)
    if fast is not None:
        assert fast == chain.canonical_payload(payload)
        assert chain.canonical_decoded_payload(json.loads(fast)) == fast


@pytest.mark.parametrize(
    "value",
    [
        {"nul": "a\x00b"},
        {"lone": "x\udcffy"},
        {"negzero": -0.0},
        {"big": 1e17},
        {"huge": 2**64},
        {3: "int key"},
        {"raw": b"bytes"},
    ],
)
def test_the_one_pass_canonical_form_declines_what_needs_normalising(value):
    assert chain.canonical_plain(value) is None


def test_the_one_pass_canonical_form_of_plain_data():
    payload = {"text": "SELECT 1", "params": ("a", None), "rows": 1, "ms": 0.5, "nested": {"b": 1, "a": True}}
    assert chain.canonical_plain(payload) == chain.canonical_payload(payload)
    # The bytes its check looks for first ("+", "\\") without what follows them in a
    # number or an escape that jsonb alters: still the one pass.
    rows = {"first_rows": [["2026-11-05 10:44:00+00", 'say "hi"', "a+b", "x\\y", "-0.5"]], "ms": -0.25}
    assert chain.canonical_plain(rows) == chain.canonical_payload(rows)


@pytest.mark.parametrize("text", ["1e+17 as text", "NUL as text: \\u0000", "-0.0 as text"])
def test_the_one_pass_canonical_form_declines_text_that_looks_altered(text):
    # Only the encoded text is looked at: a string that reads like what jsonb would alter
    # takes the slow path, whose result is the same canonical form.
    assert chain.canonical_plain({"text": text}) is None
    assert chain.canonical_decoded_payload({"text": text}) == chain.canonical_payload({"text": text})


@pytest.mark.parametrize(
    "value,stored",
    [
        ({"nul": "a\x00b"}, {"nul": "a\ufffdb"}),
        ({"lone": "x\udcffy"}, {"lone": "x\ufffdy"}),
        ({"nan": math.nan, "inf": math.inf}, {"nan": None, "inf": None}),
        ({"negzero": -0.0}, {"negzero": 0.0}),
        ({"big": 1e17, "bigger": 1e20, "small": 1e-7}, {"big": 10**17, "bigger": str(10**20), "small": 1e-7}),
        (
            {"huge": 2**64, "max": 2**64 - 1, "min": -(2**63)},
            {"huge": str(2**64), "max": 2**64 - 1, "min": -(2**63)},
        ),
        ({3: "int key", True: "bool key"}, {"3": "int key", "true": "bool key"}),
        ({"t": (1, 2)}, {"t": [1, 2]}),
    ],
)
def test_payloads_are_normalised_to_what_jsonb_keeps(value, stored):
    assert json.loads(chain.canonical_payload(value)) == stored


def test_payload_values_that_are_not_json_are_refused():
    with pytest.raises(TypeError, match="only JSON values, not set"):
        chain.canonical_payload({"s": {1}})
    with pytest.raises(TypeError, match="keys are strings, not tuple"):
        chain.canonical_payload({(1, 2): "x"})


@given(
    st.one_of(
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),  # 1970 to 2100
        # Microsecond halves and the last microsecond of a second: where rounding decides.
        st.builds(
            lambda s, us, d: s + us / 1e6 + d,
            st.integers(1_600_000_000, 2_000_000_000),
            st.integers(0, 999_999),
            st.sampled_from([0.0, 4.9e-7, 5e-7, 5.1e-7, 9.999e-7]),
        ),
    )
)
def test_an_event_time_formatted_from_its_wall_clock_is_the_time_the_database_stores(wall):
    """The writer formats an event's ``time.time()`` directly (``format_wall``); what it
    hashes must be exactly what ``format_time`` gives for the time written to the row."""
    assert chain.format_wall(wall) == chain.format_time(datetime.fromtimestamp(wall, UTC))
