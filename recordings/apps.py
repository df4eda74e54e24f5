from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_event_triggers(sender: AppConfig, *, using: str, apps: Any = None, **kwargs: Any) -> None:
    """Re-create the event-session triggers after every ``migrate`` once the migration
    that introduced them is applied: SQLite drops a table's triggers when a migration
    rebuilds the table (``recordings.integrity``)."""
    from django.db import connections

    from recordings import integrity

    if apps is None:
        return
    try:
        event = apps.get_model("recordings", "Event")
    except LookupError:
        return  # migrated back before the recordings app's tables
    if event._meta.get_field("session").db_constraint:
        return  # a state before the triggers: the foreign key keeps the reference
    integrity.install(connections[using])


class RecordingsConfig(AppConfig):
    name = "recordings"
    verbose_name = "Recordings"

    def ready(self) -> None:
        post_migrate.connect(_ensure_event_triggers, sender=self, dispatch_uid="recordings-event-triggers")
