import re
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session as WebSession
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from console.tests.factories import make_agent
from identity import actions as identity_actions
from identity.models import Agent, AgentToken

TOKEN_RE = re.compile(r"alk_[A-Za-z0-9_\-]{40,}")


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def _issue_form(client, agent, **data):
    page = client.get(reverse("agent_detail", kwargs={"pk": agent.pk})).content.decode()
    nonce = re.search(r'name="nonce" value="([^"]+)"', page).group(1)
    return {"nonce": nonce, "label": "", "expires_in_days": "", **data}


def test_an_admin_creates_an_agent_with_groups_and_a_person_it_acts_for(admin_client, alice, bob, db):
    from django.contrib.auth.models import Group

    agents = Group.objects.create(name="agents")
    response = admin_client.post(
        reverse("agent_create"),
        {
            "name": "billing-bot",
            "groups": [agents.pk],
            "on_behalf_of": "bob",
            "owner": "alice",
            "enabled": "on",
        },
    )
    agent = Agent.objects.get(name="billing-bot")
    assert response["Location"] == reverse("agent_detail", kwargs={"pk": agent.pk})
    assert agent.group_names() == ["agents"]
    assert (agent.on_behalf_of, agent.owner, agent.enabled) == (bob, alice, True)
    assert AuditRecord.objects.filter(action="agent.create", actor="alice").exists()


def test_an_agent_name_must_be_new_and_well_formed(admin_client, db):
    make_agent("billing-bot")
    assert b"already exists" in admin_client.post(reverse("agent_create"), {"name": "billing-bot"}).content
    assert b"Use letters, digits" in admin_client.post(reverse("agent_create"), {"name": "bad name!"}).content
    assert Agent.objects.count() == 1


def test_editing_changes_groups_and_enabled_but_never_the_name(admin_client, db):
    agent = make_agent("billing-bot")
    response = admin_client.post(
        reverse("agent_edit", kwargs={"pk": agent.pk}), {"name": "renamed", "description": "nightly billing"}
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.name, agent.description, agent.enabled, agent.group_names()) == (
        "billing-bot",
        "nightly billing",
        False,
        [],
    )


def test_a_token_is_shown_once_on_the_page_that_issued_it(admin_client, db):
    agent = make_agent()
    response = admin_client.post(
        reverse("token_issue", kwargs={"pk": agent.pk}), _issue_form(admin_client, agent, label="ci")
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = TOKEN_RE.search(response.content.decode()).group(0)
    token = AgentToken.objects.get(agent=agent)
    assert identity_actions.authenticate_token("billing-bot", raw) == token
    assert token.label == "ci"
    assert token.created_by.username == "alice"
    # Nowhere else: not on the agent page, not in the session store, not in messages.
    assert raw not in admin_client.get(reverse("agent_detail", kwargs={"pk": agent.pk})).content.decode()
    assert token.prefix in admin_client.get(reverse("agent_detail", kwargs={"pk": agent.pk})).content.decode()
    for stored in WebSession.objects.all():
        assert raw not in str(stored.get_decoded())
        assert raw not in stored.session_data


def test_sending_the_issue_form_again_neither_shows_nor_issues_a_token(admin_client, db):
    agent = make_agent()
    form = _issue_form(admin_client, agent)
    first = admin_client.post(reverse("token_issue", kwargs={"pk": agent.pk}), form)
    assert TOKEN_RE.search(first.content.decode())
    again = admin_client.post(reverse("token_issue", kwargs={"pk": agent.pk}), form, follow=True)
    html = again.content.decode()
    assert TOKEN_RE.search(html) is None
    assert "That form was already used" in html
    assert AgentToken.objects.filter(agent=agent).count() == 1


def test_a_token_can_expire_after_a_number_of_days(admin_client, db):
    agent = make_agent()
    admin_client.post(
        reverse("token_issue", kwargs={"pk": agent.pk}),
        _issue_form(admin_client, agent, expires_in_days="30"),
    )
    token = AgentToken.objects.get(agent=agent)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)


def test_a_bad_expiry_is_refused_and_the_form_can_be_sent_again(admin_client, db):
    agent = make_agent()
    response = admin_client.post(
        reverse("token_issue", kwargs={"pk": agent.pk}), _issue_form(admin_client, agent, expires_in_days="0")
    )
    html = response.content.decode()
    assert "Ensure this value is greater than or equal to 1." in html
    assert not AgentToken.objects.exists()
    nonce = re.search(r'name="nonce" value="([^"]+)"', html).group(1)
    admin_client.post(
        reverse("token_issue", kwargs={"pk": agent.pk}), {"nonce": nonce, "label": "", "expires_in_days": "7"}
    )
    assert AgentToken.objects.count() == 1


def test_revoking_a_token_shows_it_as_revoked_and_it_no_longer_authenticates(admin_client, db):
    agent = make_agent()
    issued = identity_actions.do_issue_token(None, agent)
    response = admin_client.post(
        reverse("token_revoke", kwargs={"pk": agent.pk, "token_pk": issued.token.pk})
    )
    assert response.status_code == 302
    assert identity_actions.authenticate_token(agent.name, issued.raw) is None
    html = admin_client.get(reverse("agent_detail", kwargs={"pk": agent.pk})).content.decode()
    row = re.search(rf'<tr data-token="{re.escape(issued.token.prefix)}">.*?</tr>', html, re.S).group(0)
    assert ">revoked<" in row
    assert "Revoke" not in row


def test_the_token_list_tells_expired_from_active(admin_client, db):
    agent = make_agent()
    old = identity_actions.do_issue_token(
        None, agent, expires_at=timezone.now() + timedelta(days=1), label="old"
    )
    # The token lived its day: an expiry in the past cannot be issued, only reached.
    AgentToken.objects.filter(pk=old.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    identity_actions.do_issue_token(None, agent, label="new")
    html = admin_client.get(reverse("agent_detail", kwargs={"pk": agent.pk})).content.decode()
    assert re.search(r"<td>old</td>.*?>expired<", html, re.S)
    assert re.search(r"<td>new</td>.*?>active<", html, re.S)
    listing = admin_client.get(reverse("agent_list")).content.decode()
    assert re.search(r'<td class="n">1</td>', listing)


def test_a_token_of_another_agent_cannot_be_revoked_through_this_one(admin_client, db):
    one, other = make_agent("one"), make_agent("other")
    issued = identity_actions.do_issue_token(None, other)
    response = admin_client.post(reverse("token_revoke", kwargs={"pk": one.pk, "token_pk": issued.token.pk}))
    assert response.status_code == 404
    issued.token.refresh_from_db()
    assert issued.token.revoked_at is None
