"""The shell around the pages: login page, navigation by role, dashboard, audit log."""

import re
from datetime import timedelta

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from audit.actions import record
from console.context_processors import navigation_for
from recordings.models import Session

NAV_RE = re.compile(r'<nav aria-label="Main">(.*?)</nav>', re.S)


def _nav_labels(client) -> list[str]:
    html = client.get("/", follow=True).content.decode()
    nav = NAV_RE.search(html)
    # A link's own text (the approvals link also holds a count badge).
    return [label.strip() for label in re.findall(r"<a[^>]*>([^<]+)", nav.group(1))] if nav else []


@pytest.mark.parametrize(
    ("persona", "labels"),
    [
        (
            "alice",
            [
                "Dashboard",
                "Connections",
                "Agents",
                "Policies",
                "People & groups",
                "Sessions",
                "Audit log",
                "API tokens",
            ],
        ),
        ("bob", ["Dashboard", "Approvals", "API tokens"]),
        ("carol", ["Dashboard", "Sessions", "Audit log", "API tokens"]),
        ("mallory", []),
    ],
)
def test_each_role_sees_only_its_own_navigation(client, persona, labels, request):
    client.force_login(request.getfixturevalue(persona))
    assert [label.replace("&amp;", "&") for label in _nav_labels(client)] == labels


def test_navigation_links_only_to_pages_that_exist():
    # Pages arrive with their apps; until their URLs exist, nobody is offered a link to them.
    assert [item["label"] for item in navigation_for({"reviewer"})] == [
        "Dashboard",
        "Approvals",
        "API tokens",
    ]


def test_anonymous_visitors_are_sent_to_the_login_page(client, db):
    response = client.get("/agents/")
    assert response["Location"] == "/accounts/login/?next=/agents/"
    html = client.get(response["Location"]).content.decode()
    assert 'name="login"' in html and 'name="password"' in html
    assert "Sign in with" not in html


def test_open_sign_up_is_closed(client, db):
    html = client.get("/accounts/signup/").content.decode()
    assert "Sign Up Closed" in html
    assert 'name="password1"' not in html


@override_settings(
    OIDC_ISSUER="https://idp.example.test",
    OIDC_PROVIDER_NAME="Example SSO",
    SOCIALACCOUNT_PROVIDERS={
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "oidc",
                    "name": "Example SSO",
                    "client_id": "airlock",
                    "secret": "",
                    "settings": {"server_url": "https://idp.example.test"},
                }
            ]
        }
    },
)
def test_the_login_page_offers_single_sign_on_when_an_issuer_is_configured(client, db):
    html = client.get("/accounts/login/").content.decode()
    button = re.search(r'<form method="post" action="([^"]+)">.*?id="oidc-login">([^<]+)<', html, re.S)
    assert button.group(2) == "Sign in with Example SSO"
    assert button.group(1).startswith("/accounts/oidc/oidc/login/")


def test_logging_out_ends_the_session(client, alice):
    client.force_login(alice)
    response = client.post(reverse("account_logout"))
    assert response["Location"] == "/accounts/login/"
    assert client.get("/")["Location"] == "/accounts/login/?next=/"


def test_the_dashboard_counts_live_sessions_and_denials_of_the_last_day(client, carol):
    now = timezone.now()
    Session.objects.create(protocol="postgres", agent_name="bot-a", connection_name="shop", denied_count=2)
    Session.objects.create(
        protocol="ssh",
        agent_name="bot-b",
        connection_name="web",
        status=Session.Status.ENDED,
        started_at=now - timedelta(hours=3),
        ended_at=now - timedelta(hours=2),
        denied_count=3,
    )
    Session.objects.create(
        protocol="postgres",
        agent_name="bot-c",
        connection_name="shop",
        status=Session.Status.ENDED,
        started_at=now - timedelta(days=3),
        ended_at=now - timedelta(days=3),
        denied_count=40,
    )
    client.force_login(carol)
    html = client.get("/").content.decode()
    assert '<span class="num" id="live-sessions">1</span>' in html
    assert '<span class="num" id="pending-approvals">0</span>' in html
    assert '<span class="num" id="recent-denials">5</span>' in html
    table = html.split('id="recent-sessions"')[1]
    assert table.index("bot-a") < table.index("bot-b") < table.index("bot-c")


def test_the_dashboard_says_when_there_are_no_sessions(client, bob):
    client.force_login(bob)
    assert 'id="no-sessions"' in client.get("/").content.decode()


def test_the_audit_log_filters_by_actor_action_and_target_and_pages(client, carol, alice):
    client.force_login(carol)  # first: the login is an audit record too
    for index in range(60):
        record(alice, "connection.update", None, after={"n": index})
    record("apply", "agent.create", carol, after={"name": "x"})
    page1 = client.get(reverse("audit_log")).content.decode()
    assert page1.count("<code>connection.update</code>") == 49
    assert "page 1 of 2" in page1
    page2 = client.get(reverse("audit_log"), {"action": "connection", "page": 2}).content.decode()
    assert page2.count("<code>connection.update</code>") == 10
    assert "action=connection&amp;page=1" in page2
    by_actor = client.get(reverse("audit_log"), {"actor": "apply"}).content.decode()
    assert by_actor.count("<code>agent.create</code>") == 1
    assert "<code>connection.update</code>" not in by_actor
    by_target = client.get(reverse("audit_log"), {"target": "carol"}).content.decode()
    assert by_target.count("<tr>") == 2  # the header row and carol's record
    nothing = client.get(reverse("audit_log"), {"actor": "nobody"}).content.decode()
    assert "No records match these filters." in nothing
