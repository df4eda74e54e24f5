"""Events lose the index Django gave their ``session`` foreign key: the unique
``(session_id, seq)`` index already serves every lookup by session (its first column),
and the second index cost every recorded event one more index insertion.

Only the index is dropped (the state's ``db_index=False``): the ``AlterField`` Django
would run drops and re-adds the foreign key constraint, and re-adding it checks every
event row under a lock that would stop recording for as long on a large table.
"""

from django.db import migrations, models

TABLE = "recordings_event"


def _session_indexes(schema_editor):
    """Names of the plain indexes on exactly (session_id) of the events table."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, TABLE)
    return [
        name
        for name, info in found.items()
        if info["index"]
        and not info["unique"]
        and not info["primary_key"]
        and info["columns"] == ["session_id"]
    ]


def drop_index(apps, schema_editor):
    quote = schema_editor.quote_name
    for name in _session_indexes(schema_editor):
        schema_editor.execute(f"DROP INDEX {quote(name)}")


def create_index(apps, schema_editor):
    if _session_indexes(schema_editor):
        return
    Event = apps.get_model("recordings", "Event")
    field = Event._meta.get_field("session")
    name = schema_editor._create_index_name(TABLE, [field.column])
    schema_editor.execute(
        f"CREATE INDEX {schema_editor.quote_name(name)} ON {schema_editor.quote_name(TABLE)} ({schema_editor.quote_name(field.column)})"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("recordings", "0007_search_words_per_batch"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="session",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.CASCADE,
                        related_name="events",
                        to="recordings.session",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_index, create_index)],
        ),
    ]
