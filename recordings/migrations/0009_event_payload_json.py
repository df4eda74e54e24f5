"""Event payloads in a ``json`` column on PostgreSQL instead of ``jsonb``
(``recordings.models.PayloadField``: the recording database no longer parses every
recorded payload into jsonb's binary form). PostgreSQL rewrites the events table to
convert it, holding an exclusive lock on it meanwhile: on a large installation, run it in
a maintenance window (docs/deployment.md, "Upgrading"). Other databases are unchanged."""

import recordings.models
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('recordings', '0008_event_session_index_in_the_unique_one'),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='payload',
            field=recordings.models.PayloadField(default=dict),
        ),
    ]
