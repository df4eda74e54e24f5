"""The reference from events to their session, kept by triggers (``recordings.integrity``):
what the foreign key refused is still refused, by the database itself."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from recordings import integrity
from recordings.models import Event, Session
from recordings.tests.embedded import embedded, script_result
from recordings.tests.factories import migrate_to, queued, session_row, write_chained


def _event(session_id: uuid.UUID, seq: int = 1) -> Event:
    return Event(
        session_id=session_id, seq=seq, at=datetime.now(UTC), offset_ms=0.0, kind="statement",
        payload={"text": "SELECT 1"}, hash="a" * 64,
    )  # fmt: skip


def _foreign_key_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'recordings_event'::regclass AND contype = 'f'"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db
def test_an_event_of_a_missing_session_is_refused():
    with pytest.raises(IntegrityError, match="recordings_event.session_id"), transaction.atomic():
        _event(uuid.uuid4()).save()
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_a_batch_copied_for_a_missing_session_is_refused_whole():
    session = session_row()
    _event(session.pk).save()
    items = queued([{"text": "x"}] * 300)
    with pytest.raises(IntegrityError):
        write_chained(uuid.uuid4(), items)
    assert Event.objects.count() == 1
    # The same batch for a session that exists goes in (the writer's path, COPY on PostgreSQL).
    Event.objects.filter(session=session).delete()
    write_chained(session.pk, items)
    assert Event.objects.filter(session=session).count() == 300


@pytest.mark.django_db
def test_an_event_moved_to_a_missing_session_is_refused():
    session = session_row()
    event = _event(session.pk)
    event.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.filter(pk=event.pk).update(session_id=uuid.uuid4())
    # Moving it to another session that exists is no violation of the reference.
    other = session_row()
    Event.objects.filter(pk=event.pk).update(session_id=other.pk)
    assert Event.objects.get(pk=event.pk).session_id == other.pk


@pytest.mark.django_db
def test_a_session_with_events_cannot_be_deleted_out_from_under_them():
    session = session_row()
    _event(session.pk).save()
    with pytest.raises(IntegrityError, match="recordings_session"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM recordings_session WHERE id = %s", [session.pk])
    assert Session.objects.filter(pk=session.pk).exists()
    if connection.vendor == "postgresql":
        # Whatever the deleting session's search path: the triggers read the tables the
        # application migrated (their functions keep the search path they were made with).
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            schema = cursor.fetchone()[0]
            cursor.execute("SET LOCAL search_path TO pg_catalog")
            cursor.execute(f'DELETE FROM "{schema}".recordings_session WHERE id = %s', [session.pk])
    # Nor renumbered away from them.
    with pytest.raises(IntegrityError), transaction.atomic():
        Session.objects.filter(pk=session.pk).update(id=uuid.uuid4())
    # A session without events is deleted as before, and so is one with events the ORM's
    # way: its events first (on_delete=CASCADE), then the session, in one transaction.
    empty = session_row()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM recordings_session WHERE id = %s", [empty.pk])
    session.delete()
    assert not Session.objects.exists() and not Event.objects.exists()


@pytest.mark.django_db
def test_truncating_sessions_alone_is_refused_but_with_the_events_it_is_not():
    if connection.vendor != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    session = session_row()
    _event(session.pk).save()
    with connection.cursor() as cursor:
        # The session row's own (deferred) foreign keys are checked now: PostgreSQL does
        # not truncate a table with trigger events pending in the transaction.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE recordings_session CASCADE")  # cascades to search words only
    assert Event.objects.count() == 1
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE recordings_event, recordings_session CASCADE")
    assert not Session.objects.exists()


@pytest.mark.django_db
def test_the_database_has_the_triggers_and_no_foreign_key_and_install_is_idempotent():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's catalog")
    assert _foreign_key_count() == 0
    integrity.install(connection)  # what post_migrate does after every migrate
    integrity.install(connection)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
            " AND tgrelid IN ('recordings_event'::regclass, 'recordings_session'::regclass) ORDER BY tgname"
        )
        names = [row[0] for row in cursor.fetchall()]
    assert names == [
        "recordings_event_session_insert",
        "recordings_event_session_update",
        "recordings_session_delete_events",
        "recordings_session_id_events",
        "recordings_session_truncate_events",
    ]
    with pytest.raises(IntegrityError), transaction.atomic():
        _event(uuid.uuid4()).save()


@pytest.mark.django_db(transaction=True)
def test_migrating_back_restores_the_foreign_key_and_forward_the_triggers():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's catalog")
    try:
        migrate_to([("recordings", "0009_event_payload_json")])
        assert _foreign_key_count() == 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'recordings_event_session_%'")
            assert cursor.fetchone()[0] == 0
    finally:
        migrate_to()
    assert _foreign_key_count() == 0
    with pytest.raises(IntegrityError), transaction.atomic():
        _event(uuid.uuid4()).save()


SQLITE_CHECKS = """
import json, uuid, django
from datetime import datetime, timezone
django.setup()
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from recordings.models import Event, Session

def event(session_id, seq=1):
    return Event(session_id=session_id, seq=seq, at=datetime.now(timezone.utc), offset_ms=0.0,
                 kind="statement", payload={}, hash="a" * 64)

def refused(fn):
    try:
        with transaction.atomic():
            fn()
    except IntegrityError as exc:
        return str(exc)
    return None

out = {}
session = Session.objects.create(protocol="postgres", agent_name="bot", connection_name="crm")
event(session.pk).save()
out["orphan_insert"] = refused(lambda: event(uuid.uuid4(), 2).save())
out["orphan_move"] = refused(lambda: Event.objects.update(session_id=uuid.uuid4()))
def raw_delete():
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM recordings_session WHERE id = %s", [session.pk.hex])
out["raw_delete"] = refused(raw_delete)
out["renumber"] = refused(lambda: Session.objects.filter(pk=session.pk).update(id=uuid.uuid4()))
# A later migrate (which may rebuild tables, dropping their triggers) puts them back.
with connection.cursor() as cursor:
    cursor.execute("DROP TRIGGER recordings_event_session_insert")
call_command("migrate", verbosity=0)
out["orphan_insert_after_migrate"] = refused(lambda: event(uuid.uuid4(), 3).save())
session.delete()
out["cascade_left"] = [Session.objects.count(), Event.objects.count()]
print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_the_embedded_sqlite_default_keeps_the_reference_too(tmp_path):
    out = script_result(embedded(tmp_path), SQLITE_CHECKS)
    for case in ("orphan_insert", "orphan_move", "raw_delete", "renumber", "orphan_insert_after_migrate"):
        assert out[case] and "recordings_" in out[case], (case, out[case])
    assert out["cascade_left"] == [0, 0]


def _raw_connection() -> psycopg.Connection:
    """A connection of its own to the test database, outside Django's."""

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params)


def _second_waits_for_first(
    first_sql: str, first_args: list, second_sql: str, second_args: list
) -> Exception | None:
    """Run ``first_sql`` in a transaction left open, then ``second_sql`` (and a commit) on
    another connection in a thread; check that it waits, commit the first, and return what
    the second raised (None if it committed)."""
    import threading

    outcome: list[Exception | None] = []
    with _raw_connection() as first, _raw_connection() as second:
        first.execute(first_sql, first_args)

        def run_second() -> None:
            try:
                second.execute(second_sql, second_args)
                second.commit()
                outcome.append(None)
            except psycopg.Error as exc:
                second.rollback()
                outcome.append(exc)

        thread = threading.Thread(target=run_second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second transaction should wait for the first"
        first.commit()
        thread.join(10)
    return outcome[0]


@pytest.mark.django_db(transaction=True)
def test_a_session_deleted_while_its_batch_is_written_keeps_its_events_either_way():
    """The insert's check locks the session as the foreign key's did: whichever of the
    batch and a deletion of its session comes first, the other waits for it and then
    fails, and no event is left without its session."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's row locks")
    insert = (
        "INSERT INTO recordings_event (session_id, seq, at, offset_ms, kind, payload, hash)"
        " VALUES (%s, 1, now(), 0, 'statement', '{}', %s)"
    )
    delete = "DELETE FROM recordings_session WHERE id = %s"

    session = session_row()
    failed = _second_waits_for_first(insert, [session.pk, "a" * 64], delete, [session.pk])
    assert isinstance(failed, psycopg.errors.ForeignKeyViolation)
    assert (
        Session.objects.filter(pk=session.pk).exists() and Event.objects.filter(session=session).count() == 1
    )

    session = session_row()
    failed = _second_waits_for_first(delete, [session.pk], insert, [session.pk, "b" * 64])
    assert isinstance(failed, psycopg.errors.ForeignKeyViolation)
    assert not Session.objects.filter(pk=session.pk).exists()
    assert not Event.objects.filter(session_id=session.pk).exists()
