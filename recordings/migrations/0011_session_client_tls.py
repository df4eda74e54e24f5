"""Each session records the TLS of its agent's connection (``Session.client_tls``).

On SQLite adding a column rebuilds ``recordings_session``, and SQLite refuses to rename
the rebuilt table while triggers on ``recordings_event`` name it (``recordings.integrity``):
the triggers are dropped around the change and created again after it.
"""

from django.db import migrations, models

from recordings.integrity import around_sqlite_rebuild


class Migration(migrations.Migration):
    dependencies = [
        ("recordings", "0010_event_session_triggers"),
    ]

    operations = around_sqlite_rebuild(
        migrations.AddField(
            model_name="session",
            name="client_tls",
            field=models.CharField(blank=True, max_length=64),
        ),
    )
