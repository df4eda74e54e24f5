"""Migration 0006 recounts the reviewed statements of sessions recorded before
``approval`` events were counted."""

from __future__ import annotations

import importlib

from django.apps import apps
from django.utils import timezone

from recordings.models import Event, Session

recount = importlib.import_module("recordings.migrations.0006_recount_reviewed").recount


def _event(session: Session, seq: int, kind: str, payload: dict) -> None:
    Event.objects.create(
        session=session, seq=seq, at=timezone.now(), offset_ms=seq, kind=kind, payload=payload, hash="0" * 64
    )


def test_the_recount_adds_approval_outcomes_to_review_decisions(db):
    waited = Session.objects.create(protocol="postgres", agent_name="bot", connection_name="shop")
    _event(waited, 1, "approval", {"action": "allow", "rule": "writes", "message": "approved"})
    _event(waited, 2, "statement", {"text": "DELETE FROM t WHERE id = 1", "action": "allow"})
    _event(waited, 3, "decision", {"action": "review", "rule": "writes"})
    _event(waited, 4, "approval", {"action": "deny", "rule": "writes", "message": "rejected"})
    _event(waited, 5, "decision", {"action": "deny", "rule": "writes"})
    untouched = Session.objects.create(
        protocol="postgres", agent_name="bot", connection_name="shop", review_count=7
    )
    _event(untouched, 1, "decision", {"action": "deny", "rule": "ddl"})

    recount(apps, None)

    assert Session.objects.get(pk=waited.pk).review_count == 3
    assert Session.objects.get(pk=untouched.pk).review_count == 7  # no approval event: left alone
