"""The reference from events to their session, kept by triggers instead of a foreign key.

What a foreign key from ``recordings_event.session_id`` to ``recordings_session.id``
guaranteed still holds: an event names a session that exists, and a session that still
has events cannot be deleted, truncated or renumbered away from them. A foreign key checks
each inserted row with a query of its own at commit; a recorded batch is hundreds of rows
of one session, and those checks were a quarter of the recording database's work per
event (docs/performance-log.md, "The one-client tail is the recording database's CPU").
Here the check runs once per statement and session instead:

- PostgreSQL: after each INSERT (a batch's COPY) or UPDATE of events, a statement-level
  trigger reads the statement's new rows (a transition table) and locks each session
  they name ``FOR KEY SHARE``, as the foreign key's check does, so that a concurrent
  DELETE of the session waits for the recording's transaction and then sees its events.
  A missing session raises ``foreign_key_violation`` (SQLSTATE 23503, Django's
  ``IntegrityError``). After a DELETE or TRUNCATE of sessions, and after a session's id
  changes, a trigger checks that no event names a session that is gone.
- SQLite (the embedded default): row-level triggers with the same checks.

The difference from the foreign key: the insert's check runs at the end of each
statement, not at commit (a session row must exist before its events are written, as
``writer._persist`` does). Django still knows the relation (``db_constraint=False``):
joins, ``select_related`` and the cascade of ``Session.delete()`` are unchanged.

The functions keep the search path they were created with (``SET search_path FROM
CURRENT``): whoever changes the tables, with whatever search path, the triggers read the
tables the application migrated. ``install`` is idempotent. The migration that dropped the foreign key calls it, and so does
``post_migrate`` after every ``migrate`` (``recordings.apps``): SQLite drops a table's
triggers when a later migration rebuilds the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_POSTGRES_FUNCTIONS = [
    """
    CREATE OR REPLACE FUNCTION recordings_event_session_exists() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        named uuid;
    BEGIN
        FOR named IN SELECT DISTINCT session_id FROM new_events LOOP
            PERFORM 1 FROM recordings_session WHERE id = named FOR KEY SHARE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'insert or update on table "recordings_event" violates the reference from recordings_event.session_id to recordings_session.id'
                    USING ERRCODE = 'foreign_key_violation',
                          DETAIL = format('Session %s does not exist.', named);
            END IF;
        END LOOP;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE OR REPLACE FUNCTION recordings_session_keeps_events() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        orphaned uuid;
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            SELECT session_id INTO orphaned FROM recordings_event LIMIT 1;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT o.id INTO orphaned FROM old_sessions o
             WHERE EXISTS (SELECT 1 FROM recordings_event e WHERE e.session_id = o.id) LIMIT 1;
        ELSE
            SELECT session_id INTO orphaned FROM recordings_event WHERE session_id = OLD.id LIMIT 1;
        END IF;
        IF FOUND THEN
            RAISE EXCEPTION '% on table "recordings_session" violates the reference from recordings_event.session_id to recordings_session.id', lower(TG_OP)
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Session %s still has events.', orphaned);
        END IF;
        RETURN NULL;
    END
    $$
    """,
]

# Created after the old ones are dropped (``_POSTGRES_DROP``): CREATE TRIGGER has no
# OR REPLACE before PostgreSQL 14.
_POSTGRES_TRIGGERS = [
    """
    CREATE TRIGGER recordings_event_session_insert AFTER INSERT ON recordings_event
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION recordings_event_session_exists()
    """,
    """
    CREATE TRIGGER recordings_event_session_update AFTER UPDATE ON recordings_event
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION recordings_event_session_exists()
    """,
    """
    CREATE TRIGGER recordings_session_delete_events AFTER DELETE ON recordings_session
    REFERENCING OLD TABLE AS old_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION recordings_session_keeps_events()
    """,
    """
    CREATE TRIGGER recordings_session_truncate_events AFTER TRUNCATE ON recordings_session
    FOR EACH STATEMENT EXECUTE FUNCTION recordings_session_keeps_events()
    """,
    """
    CREATE TRIGGER recordings_session_id_events AFTER UPDATE OF id ON recordings_session
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION recordings_session_keeps_events()
    """,
]

# (trigger, table) of every trigger above, read from their definitions.
_POSTGRES_NAMES = re.findall(r"CREATE TRIGGER (\w+)\s.*?\sON (\w+)", "".join(_POSTGRES_TRIGGERS), re.S)
_POSTGRES_DROP = [f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, table in _POSTGRES_NAMES]
_POSTGRES = _POSTGRES_FUNCTIONS + _POSTGRES_DROP + _POSTGRES_TRIGGERS
_POSTGRES_REMOVE = [
    *_POSTGRES_DROP,
    "DROP FUNCTION IF EXISTS recordings_event_session_exists()",
    "DROP FUNCTION IF EXISTS recordings_session_keeps_events()",
]


SQLITE = [
    """
    CREATE TRIGGER IF NOT EXISTS recordings_event_session_insert
    BEFORE INSERT ON recordings_event
    WHEN NOT EXISTS (SELECT 1 FROM recordings_session WHERE id = NEW.session_id)
    BEGIN SELECT RAISE(ABORT, 'insert or update on table recordings_event violates the reference from recordings_event.session_id to recordings_session.id: no such session'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS recordings_event_session_update
    BEFORE UPDATE OF session_id ON recordings_event
    WHEN NOT EXISTS (SELECT 1 FROM recordings_session WHERE id = NEW.session_id)
    BEGIN SELECT RAISE(ABORT, 'insert or update on table recordings_event violates the reference from recordings_event.session_id to recordings_session.id: no such session'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS recordings_session_delete_events
    BEFORE DELETE ON recordings_session
    WHEN EXISTS (SELECT 1 FROM recordings_event WHERE session_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, 'delete or update on table recordings_session violates the reference from recordings_event.session_id to recordings_session.id: the session has events'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS recordings_session_id_events
    BEFORE UPDATE OF id ON recordings_session
    WHEN OLD.id <> NEW.id AND EXISTS (SELECT 1 FROM recordings_event WHERE session_id = OLD.id)
    BEGIN SELECT RAISE(ABORT, 'delete or update on table recordings_session violates the reference from recordings_event.session_id to recordings_session.id: the session has events'); END
    """,
]

_SQLITE_REMOVE = [
    f"DROP TRIGGER IF EXISTS {name}"
    for name in re.findall(r"CREATE TRIGGER IF NOT EXISTS (\w+)", "".join(SQLITE))
]


def _statements(connection: Any, postgres: list[str], sqlite: list[str]) -> list[str]:
    if connection.vendor == "postgresql":
        return postgres
    if connection.vendor == "sqlite":
        return sqlite
    raise NotImplementedError(f"recordings: no event-session triggers for {connection.vendor}")


def install(connection: Any) -> None:
    """Create (or replace) the triggers on ``connection``'s database."""
    with connection.cursor() as cursor:
        for sql in _statements(connection, _POSTGRES, SQLITE):
            cursor.execute(sql)


def remove(connection: Any) -> None:
    """Drop the triggers (migrating back to the foreign key)."""
    with connection.cursor() as cursor:
        for sql in _statements(connection, _POSTGRES_REMOVE, _SQLITE_REMOVE):
            cursor.execute(sql)


def _on_sqlite(action: Callable[[Any], None]) -> Callable[[Any, Any], None]:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "sqlite":
            action(schema_editor.connection)

    return run


def around_sqlite_rebuild(*operations: Any) -> list[Any]:
    """Migration ``operations`` on ``recordings_session`` that SQLite carries out by
    rebuilding the table (adding a column does), with the triggers set aside around them:
    SQLite refuses to rename the rebuilt table while triggers on ``recordings_event`` name
    it. Other databases run the operations as they are."""
    from django.db import migrations

    return [
        migrations.RunPython(_on_sqlite(remove), _on_sqlite(install)),
        *operations,
        migrations.RunPython(_on_sqlite(install), _on_sqlite(remove)),
    ]
