"""Session.verify() on recordings made by the writer and then tampered with in PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection
from django.db.models import F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recordings import chain
from recordings.models import Event, Session
from recordings.tests.factories import BILLING_BOT, record_session, statement_events
from recordings.writer import SessionRecorder

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def recorded(count: int = 3) -> Session:
    """A closed session of 2 + 3 * count events (start, statement/decision/result..., end)."""
    recorder = asyncio.run(asyncio.wait_for(record_session(statement_events(count)), 30))
    return Session.objects.get(pk=recorder.session_id)


def reload(session: Session) -> Session:
    return Session.objects.get(pk=session.pk)


def shift_seqs(session: Session, from_seq: int, by: int) -> None:
    # Two steps so the (session, seq) unique constraint never sees a duplicate.
    events = Event.objects.filter(session=session, seq__gte=from_seq)
    events.update(seq=F("seq") + 1_000_000)
    Event.objects.filter(session=session, seq__gte=1_000_000).update(seq=F("seq") - 1_000_000 + by)


def test_an_intact_recording_verifies():
    session = recorded()
    result = session.verify()
    assert result.ok, result.reason
    assert (result.event_count, result.last_hash) == (11, session.last_hash)


def test_an_edited_payload_is_found_at_its_event():
    session = recorded()
    Event.objects.filter(session=session, seq=4).update(payload={"rows": 0, "command_tag": "SELECT 0"})
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_a_deleted_event_is_found_at_its_place():
    session = recorded()
    Event.objects.filter(session=session, seq=6).delete()
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, 6)
    assert result.reason == "event 6 is missing (next stored event is 7)"


def test_a_deleted_last_event_is_found_by_the_count():
    session = recorded()
    Event.objects.filter(session=session, seq=11).delete()
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, 11)
    assert result.reason == "event 11 is missing (the session records 11 events)"


def test_an_inserted_event_is_found_where_it_was_inserted():
    session = recorded()
    shift_seqs(session, 3, 1)
    Event.objects.create(
        session=session, seq=3, at=session.started_at, offset_ms=1.0, kind="decision",
        payload={"action": "allow", "rule": "reads"}, hash="0" * 64,
    )  # fmt: skip
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_an_event_appended_after_the_seal_is_found():
    session = recorded()
    Event.objects.create(
        session=session, seq=12, at=session.started_at, offset_ms=99.0, kind="statement",
        payload={"text": "SELECT 1"}, hash="0" * 64,
    )  # fmt: skip
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, 12)


def test_swapped_events_are_found_at_the_first_of_them():
    session = recorded()
    Event.objects.filter(session=session, seq=4).update(seq=1_000_000)
    Event.objects.filter(session=session, seq=5).update(seq=4)
    Event.objects.filter(session=session, seq=1_000_000).update(seq=5)
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_a_recomputed_chain_passes_the_chain_check_but_not_the_seal():
    session = recorded()
    Event.objects.filter(session=session, seq=6).update(payload={"action": "allow", "rule": "reads"})
    # The attacker rewrites every hash after the edit, and the session's last hash.
    prev = chain.genesis_hash(session.pk)
    for event in Event.objects.filter(session=session).order_by("seq"):
        prev = chain.event_hash(
            prev, chain.canonical_event(event.seq, event.at, event.offset_ms, event.kind, event.payload)
        )
        Event.objects.filter(pk=event.pk).update(hash=prev)
    Session.objects.filter(pk=session.pk).update(last_hash=prev)
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, None)
    assert result.reason == "the seal does not match the session's last hash and event count"


def test_a_seal_made_with_another_key_fails():
    session = recorded()
    other = Ed25519PrivateKey.generate()
    Session.objects.filter(pk=session.pk).update(seal=chain.seal(other, session.pk, session.last_hash, 11))
    result = reload(session).verify()
    assert (
        not result.ok and result.reason == "the seal does not match the session's last hash and event count"
    )
    # Claiming the other key by its id does not help: it is not one of ours.
    Session.objects.filter(pk=session.pk).update(signing_key_id=chain.key_id(other.public_key()))
    result = reload(session).verify()
    assert not result.ok and result.reason.startswith("the seal was made by an unknown key")


def test_the_other_key_verifies_when_it_is_the_one_given():
    session = recorded()
    other = Ed25519PrivateKey.generate()
    key_id = chain.key_id(other.public_key())
    Session.objects.filter(pk=session.pk).update(
        seal=chain.seal(other, session.pk, session.last_hash, 11), signing_key_id=key_id
    )
    assert reload(session).verify({key_id: other.public_key()}).ok


@pytest.mark.parametrize(
    "field,value,seq",
    [
        ("agent_name", "innocent-bot", 1),
        ("connection_name", "staging", 1),
        ("client_address", "10.0.0.1:1", 1),
        ("client_tls", "TLSv1.3, direct", 1),  # a plain session made to look encrypted
        ("status", "terminated", 11),
        ("end_reason", "nothing happened", 11),
    ],
)
def test_an_edited_session_row_is_found_against_its_start_and_end_events(field, value, seq):
    session = recorded()
    Session.objects.filter(pk=session.pk).update(**{field: value})
    result = reload(session).verify()
    assert (result.ok, result.first_broken_seq) == (False, seq)


def test_an_unsealed_ended_session_fails():
    session = recorded()
    Session.objects.filter(pk=session.pk).update(seal="")
    result = reload(session).verify()
    assert not result.ok and result.reason == "the session has ended but is not sealed"


def test_a_live_session_with_no_events_verifies_as_empty():
    session = Session.objects.create(protocol="postgres", agent_name="billing-bot", connection_name="shop")
    result = session.verify()
    assert result.ok and result.event_count == 0


def test_an_ended_session_with_no_events_fails():
    session = Session.objects.create(
        protocol="postgres", agent_name="billing-bot", connection_name="shop", status="ended"
    )
    result = session.verify()
    assert not result.ok and result.reason == "the session has ended but is not sealed"


def test_a_live_session_verifies_up_to_what_it_has_counted():
    async def scenario() -> tuple[chain.VerifyResult, chain.VerifyResult]:
        recorder = await SessionRecorder.start(**BILLING_BOT)
        for kind, payload in statement_events(2):
            recorder.append(kind, payload)
        while recorder._state.seq < 7:
            await asyncio.sleep(0.01)
        live = await asyncio.to_thread(lambda: Session.objects.get(pk=recorder.session_id).verify())
        await recorder.close(reason="done")
        ended = await asyncio.to_thread(lambda: Session.objects.get(pk=recorder.session_id).verify())
        return live, ended

    live, ended = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert live.ok and live.event_count == 7, live
    assert ended.ok and ended.event_count == 8, ended


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(st.characters(codec=None, exclude_categories=())),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(json_values)
def test_canonical_payloads_come_back_from_jsonb_unchanged(value):
    text = chain.canonical_payload(value)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb::text", [text.decode()])
        (stored,) = cursor.fetchone()
    assert chain.canonical_payload(json.loads(stored)) == text
    assert chain.canonical_decoded_payload(json.loads(stored)) == text
