"""The reference from events to their session kept by triggers instead of a foreign key
(``recordings.integrity``: one check per statement and session instead of one query per
recorded row). Dropping the constraint and creating the triggers is quick: no table is
rewritten. Migrating back re-creates the foreign key, which PostgreSQL validates against
every event."""

import django.db.models.deletion
from django.db import migrations, models


def install(apps, schema_editor):
    from recordings import integrity

    integrity.install(schema_editor.connection)


def remove(apps, schema_editor):
    from recordings import integrity

    integrity.remove(schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ('recordings', '0009_event_payload_json'),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='session',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='events', to='recordings.session'),
        ),
        migrations.RunPython(install, remove),
    ]
