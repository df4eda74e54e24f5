"""Values masked per entity, from a real gateway session to the replay page and dashboard."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from gateway.tests.postgres.test_masking import PLANTED, mgw, users_table  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.timeout(120)]


def test_the_replay_page_and_dashboard_count_what_the_gateway_masked(mgw, carol):  # noqa: F811
    with mgw.connect() as conn:
        conn.execute("SELECT email, ssn, card FROM users ORDER BY id").fetchall()
        conn.execute("SELECT lower(email) FROM users WHERE id = 1").fetchall()
    session = mgw.session()
    assert session.masked_count == 4  # email by rule, ssn by rule, card by content, lower(email) by content
    client = Client()
    client.force_login(carol)
    page = client.get(reverse("recordings:session_detail", args=[session.pk])).content.decode()
    assert '<span id="masked-entities">2 EMAIL, 1 CARD, 1 SSN</span>' in page
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert '<span class="num" id="recent-masked">4</span>' in dashboard
    assert '<td class="masked">2 EMAIL, 1 CARD, 1 SSN</td>' in dashboard
    for secret in PLANTED:
        assert secret not in page and secret not in dashboard
