"""Each session records the TLS of its agent's connection (``Session.client_tls``).

On SQLite adding a column rebuilds ``recordings_session``, and SQLite refuses to rename
the rebuilt table while triggers on ``recordings_event`` name it (``recordings.integrity``):
the triggers are dropped around the change and created again after it.
"""

from django.db import migrations, models


def _sqlite_only(action):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "sqlite":
            from recordings import integrity

            getattr(integrity, action)(schema_editor.connection)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("recordings", "0010_event_session_triggers"),
    ]

    operations = [
        migrations.RunPython(_sqlite_only("remove"), _sqlite_only("install")),
        migrations.AddField(
            model_name="session",
            name="client_tls",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.RunPython(_sqlite_only("install"), _sqlite_only("remove")),
    ]
