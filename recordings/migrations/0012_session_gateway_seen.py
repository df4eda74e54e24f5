"""A live session says when its gateway last vouched for it (``Session.gateway_seen_at``),
and a session whose gateway stopped without ending it can be closed as ``interrupted``.

On SQLite adding a column rebuilds ``recordings_session``, which SQLite refuses while the
triggers on ``recordings_event`` name it (``recordings.integrity``): they are dropped
around the change and created again after it, as in 0011.
"""

from django.db import migrations, models

from recordings.integrity import around_sqlite_rebuild


class Migration(migrations.Migration):
    dependencies = [
        ("recordings", "0011_session_client_tls"),
    ]

    operations = around_sqlite_rebuild(
        migrations.AddField(
            model_name="session",
            name="gateway_seen_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="session",
            name="status",
            field=models.CharField(
                choices=[
                    ("live", "Live"),
                    ("ended", "Ended"),
                    ("terminated", "Terminated"),
                    ("interrupted", "Interrupted"),
                ],
                db_index=True,
                default="live",
                max_length=12,
            ),
        ),
    )
