"""An event's payload column: ``json`` on PostgreSQL (stored as written), queried as JSON."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models.fields.json import KeyTextTransform

from recordings import chain
from recordings.models import Event, Session, masked_by_entity
from recordings.tests.factories import migrate_to, queued, session_row, write_chained

BEFORE = [("recordings", "0008_event_session_index_in_the_unique_one")]
AFTER = [("recordings", "0009_event_payload_json")]


def _column_type() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'recordings_event' AND column_name = 'payload'"
        )
        return str(cursor.fetchone()[0])


@pytest.mark.django_db
def test_the_payload_column_is_json_not_jsonb():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's column type")
    assert _column_type() == "json"


@pytest.mark.django_db
def test_key_lookups_and_reads_behave_as_on_any_json_field():
    session = session_row()
    at = datetime.now(UTC)
    Event.objects.create(
        session=session, seq=1, at=at, offset_ms=0.0, kind="statement", hash="a" * 64,
        payload={"text": "SELECT email FROM users", "result": {"masked": 2, "masked_entities": {"EMAIL": 2}}},
    )  # fmt: skip
    Event.objects.create(
        session=session, seq=2, at=at, offset_ms=1.5, kind="approval", hash="b" * 64,
        payload={"by": "rita", "approved": True},
    )  # fmt: skip
    events = Event.objects.filter(session=session)
    assert events.filter(payload__text="SELECT email FROM users").count() == 1
    assert events.filter(payload__text="SELECT 1").count() == 0
    assert events.filter(payload__text__icontains="EMAIL from").count() == 1
    assert events.filter(payload__result__masked__gt=1).count() == 1
    assert events.filter(payload__result__masked__gt=2).count() == 0
    assert events.filter(payload__approved=True).count() == 1
    assert list(events.order_by("seq").values_list("payload__result__masked_entities", flat=True)) == [
        {"EMAIL": 2},
        None,
    ]
    assert events.alias(by=KeyTextTransform("by", "payload")).filter(by="rita").count() == 1
    assert events.filter(payload__contains={"by": "rita"}).count() == 1
    assert events.filter(payload__has_key="result").count() == 1
    assert events.filter(payload={"by": "rita", "approved": True}).count() == 1
    assert events.filter(payload__isnull=False).count() == 2
    assert events.get(seq=2).payload == {"by": "rita", "approved": True}
    assert list(events.order_by("seq").values_list("payload", flat=True))[0]["result"]["masked"] == 2
    assert masked_by_entity([session.pk]) == {session.pk: {"EMAIL": 2}}


@pytest.mark.django_db
def test_the_writer_stores_the_bytes_the_chain_hashes():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL keeps json text as written")
    session = session_row()
    payloads = [
        {"text": "SELECT 1", "params": ["a\tb"], "result": {"duration_ms": 0.25, "rows": 1}},
        # Made canonical on the writer's side (text a jsonb column would have altered).
        {"text": "SELECT 1e+17", "params": ["\u0000?"], "n": -0.0},
    ]
    items = queued(payloads, wall=1_700_000_000.25)
    assert items[0][5] is not None and items[1][5] is None
    rows = write_chained(session.pk, items)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT payload::text FROM recordings_event WHERE session_id = %s ORDER BY seq", [session.pk]
        )
        stored = [text for (text,) in cursor.fetchall()]
    assert stored == [row[5] for row in rows]
    assert stored[0].encode() == items[0][5]
    events = session.events.values_list("seq", "at", "offset_ms", "kind", "payload", "hash", named=True)
    assert chain.verify_chain(session.pk, events).ok


@pytest.mark.django_db(transaction=True)
def test_events_written_as_jsonb_still_verify_after_the_migration_and_back():
    if connection.vendor != "postgresql":
        pytest.skip("the conversion is PostgreSQL's")
    migrate_to(BEFORE)
    session_id = uuid.uuid4()
    try:
        assert _column_type() == "jsonb"
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO recordings_session (id, protocol, agent_name, on_behalf_of_name, connection_name,"
                " client_address, application_name, status, started_at, end_reason, event_count,"
                " statement_count, denied_count, review_count, error_count, masked_count, dropped_events,"
                " last_hash, seal, signing_key_id, legal_hold)"
                " VALUES (%s, 'postgres', 'bot', '', 'crm', '', '', 'live', now(), '', 0, 0, 0, 0, 0, 0, 0,"
                " '', '', '', false)",
                [session_id],
            )
        payloads = [{"text": "SELECT 'a'", "n": 1.0}, {"result": {"rows": 3, "first_rows": [["x", None]]}}]
        write_chained(session_id, queued(payloads))

        def verified() -> bool:
            # Read as text and decoded here: the model in use describes the json column.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT seq, at, offset_ms, kind, payload::text, hash FROM recordings_event"
                    " WHERE session_id = %s ORDER BY seq",
                    [session_id],
                )
                found = [
                    Event(
                        seq=seq, at=at, offset_ms=offset_ms, kind=kind, payload=json.loads(text), hash=digest
                    )
                    for seq, at, offset_ms, kind, text, digest in cursor.fetchall()
                ]
            return len(found) == len(payloads) and chain.verify_chain(session_id, found).ok

        migrate_to(AFTER)
        assert _column_type() == "json"
        assert verified()
        migrate_to(BEFORE)
        assert _column_type() == "jsonb"
        assert verified()
    finally:
        # Back to the latest schema first: the model describes it, not this test's older one.
        migrate_to()
        Session.objects.filter(pk=session_id).delete()
