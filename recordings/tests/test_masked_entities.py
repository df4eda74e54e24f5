"""Values masked per entity: the replay page, the dashboard (per session and over 24 h)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recordings.models import Event, masked_by_entity
from recordings.tests.factories import recorded

pytestmark = pytest.mark.django_db(transaction=True)


def result(masked: dict[str, int]) -> tuple[str, dict[str, Any]]:
    return (
        Event.Kind.RESULT,
        {
            "rows": 2,
            "command_tag": "SELECT 2",
            "masked": sum(masked.values()),
            "masked_entities": masked,
        },
    )


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_the_replay_page_shows_the_values_masked_per_entity(carol):
    session = recorded(
        [
            (Event.Kind.STATEMENT, {"text": "SELECT email, card FROM customers", "params": []}),
            result({"email": 10, "card": 3}),
            result({"email": 2}),
        ]
    )
    assert session.masked_count == 15
    page = _client(carol).get(reverse("recordings:session_detail", args=[session.pk])).content.decode()
    assert '<span id="masked-entities">12 EMAIL, 3 CARD</span>' in page


def test_a_result_joined_to_its_statement_counts_like_a_result_event(carol):
    # What the gateway records for the usual statement: its result inside its event.
    joined = {"command_tag": "SELECT 2", "rows": 2, "masked": 3, "masked_entities": {"email": 2, "card": 1}}
    session = recorded(
        [
            (
                Event.Kind.STATEMENT,
                {"text": "SELECT email, card FROM customers", "params": [], "result": joined},
            ),
            result({"email": 1}),
        ]
    )
    assert session.masked_count == 4
    assert masked_by_entity([session.pk]) == {session.pk: {"email": 3, "card": 1}}
    page = _client(carol).get(reverse("recordings:session_detail", args=[session.pk])).content.decode()
    assert '<span id="masked-entities">3 EMAIL, 1 CARD</span>' in page


def test_the_dashboard_shows_each_sessions_entities_and_the_last_days_totals(alice):
    first = recorded([result({"email": 4, "ssn": 1})])
    second = recorded([result({"email": 1, "card": 2})])
    clean = recorded()
    # An event older than a day counts for its session, not for the last 24 hours.
    Event.objects.filter(session=second).filter(kind="result").update(at=timezone.now() - timedelta(days=2))
    page = _client(alice).get(reverse("dashboard")).content.decode()
    assert '<span class="num" id="recent-masked">5</span>' in page
    assert '<small id="recent-masked-entities">4 EMAIL, 1 SSN</small>' in page
    assert '<td class="masked">4 EMAIL, 1 SSN</td>' in page
    assert '<td class="masked">2 CARD, 1 EMAIL</td>' in page
    assert masked_by_entity([clean.pk]) == {}
    assert masked_by_entity([first.pk, second.pk]) == {
        first.pk: {"email": 4, "ssn": 1},
        second.pk: {"card": 2, "email": 1},
    }
