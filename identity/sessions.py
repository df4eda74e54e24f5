"""The console's session store: Django's database store, with the session read by a
statement compiled once.

Every console request, API call and websocket connection reads its session. Django's store
builds that query with the ORM each time (0.5-1 ms of Python against 0.14 ms of
PostgreSQL, docs/performance.md); this store builds the same query once per database and
runs it again (``console.prebuilt``). Sessions are the same rows and the same encoding: switching
``SESSION_ENGINE`` between the two logs nobody out.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends import db
from django.core.exceptions import SuspiciousOperation
from django.db import connections
from django.utils import timezone

from console.prebuilt import BuiltQuery

# Values built into the statement where the session's key and the time go.
_PLACEHOLDER_KEY = "airlock-placeholder-session-key"
_PLACEHOLDER_TIME = datetime(2000, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
_statements: dict[tuple[type, str], BuiltQuery] = {}


def _as_sent(model: Any, alias: str, at: datetime) -> Any:
    """``at`` as the ORM sends an ``expire_date`` to the database (text on SQLite)."""
    return model._meta.get_field("expire_date").get_db_prep_value(at, connections[alias], prepared=False)


class SessionStore(db.SessionStore):
    """``django.contrib.sessions.backends.db.SessionStore`` reading with a precompiled statement."""

    def _get_session_from_db(self) -> Any:
        model = self.model
        alias = model.objects.db
        try:
            built = _statements.get((model, alias))
            if built is None:
                marker = _as_sent(model, alias, _PLACEHOLDER_TIME)
                reads = model.objects.db_manager(alias).filter(
                    session_key=_PLACEHOLDER_KEY, expire_date__gt=_PLACEHOLDER_TIME
                )
                built = _statements[(model, alias)] = BuiltQuery.of(reads, _PLACEHOLDER_KEY, marker)
            found = next(iter(built.run(self.session_key, _as_sent(model, alias, timezone.now()))), None)
        except SuspiciousOperation as exc:  # as Django's store: logged, the session not loaded
            logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(str(exc))
            found = None
        if found is None:
            self._session_key = None
        return found

    async def _aget_session_from_db(self) -> Any:
        return await sync_to_async(self._get_session_from_db)()
