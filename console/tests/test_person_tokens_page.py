"""The API tokens page: a person's own tokens, made once-shown, and revoked; admins see all.

Who may reach each URL is in test_access.py; the browser's view is in test_browser_console.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from identity.actions import PersonTokenRefused, authenticate_person_token, do_create_person_token
from identity.models import PersonToken

pytestmark = pytest.mark.django_db


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _nonce(client: Client) -> str:
    return client.get(reverse("person_tokens")).context["form"].initial["nonce"]


def _token(user, name="script"):  # type: ignore[no-untyped-def]
    return do_create_person_token(user, user, name=name, expires_at=timezone.now() + timedelta(days=30))


def test_a_person_creates_a_token_that_is_shown_once(bob):
    client = _client(bob)
    data = {"name": "slack bot", "expires_in_days": "30", "nonce": _nonce(client)}

    created = client.post(reverse("person_token_create"), data)

    assert created.status_code == 200 and created["Cache-Control"].startswith("max-age=0")
    raw = created.context["issued"].raw
    assert f'<div class="token" id="new-token">{raw}</div>' in created.content.decode()
    token = authenticate_person_token(raw)
    assert (token.user, token.name) == (bob, "slack bot")
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    # The same form again (a reload) neither shows it again nor makes a second one.
    again = client.post(reverse("person_token_create"), data, follow=True)
    assert "That form was already used" in again.content.decode()
    assert raw not in again.content.decode()
    listed = client.get(reverse("person_tokens")).content.decode()
    assert f"<code>{token.prefix}…</code>" in listed and raw not in listed
    assert PersonToken.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        ({"name": "", "expires_in_days": "30"}, "name", "This field is required."),
        ({"name": "   ", "expires_in_days": "30"}, "name", "This field is required."),
        ({"name": "bot", "expires_in_days": "366"}, "expires_in_days", "less than or equal to 365"),
        ({"name": "bot", "expires_in_days": ""}, "expires_in_days", "This field is required."),
        ({"name": "x" * 101, "expires_in_days": "30"}, "name", "at most 100 characters"),
    ],
)
def test_a_bad_form_is_shown_again_with_the_error_at_its_field_and_makes_nothing(bob, data, field, error):
    client = _client(bob)
    response = client.post(reverse("person_token_create"), {**data, "nonce": _nonce(client)})

    assert response.status_code == 200
    assert error in " ".join(response.context["form"].errors[field])
    assert not PersonToken.objects.exists()


def test_a_person_sees_and_revokes_only_their_own_tokens(bob, carol):
    mine, theirs = _token(bob, "mine"), _token(carol, "theirs")
    client = _client(bob)

    page = client.get(reverse("person_tokens")).content.decode()
    assert mine.token.prefix in page and theirs.token.prefix not in page
    assert 'id="everyone-tokens"' not in page and "Everyone&#x27;s tokens" not in page

    refused = client.post(reverse("person_token_revoke", kwargs={"pk": theirs.token.pk}))
    assert refused.status_code == 404
    assert authenticate_person_token(theirs.raw).user == carol

    done = client.post(reverse("person_token_revoke", kwargs={"pk": mine.token.pk}), follow=True)
    assert f"Token {mine.token.prefix}… revoked." in done.content.decode()
    with pytest.raises(PersonTokenRefused, match="was revoked"):
        authenticate_person_token(mine.raw)


def test_an_admin_sees_everyones_tokens_and_revokes_any(alice, bob, carol):
    bobs, carols = _token(bob, "bobs"), _token(carol, "carols")
    client = _client(alice)

    page = client.get(reverse("person_tokens")).content.decode()
    everyone = page.split('id="everyone-tokens"', 1)[1]
    assert bobs.token.prefix in everyone and carols.token.prefix in everyone
    assert "<td>bob</td>" in everyone and "<td>carol</td>" in everyone

    done = client.post(reverse("person_token_revoke", kwargs={"pk": bobs.token.pk}), follow=True)
    assert f"Token {bobs.token.prefix}… of bob revoked." in done.content.decode()
    revoked = PersonToken.objects.get(pk=bobs.token.pk)
    assert revoked.revoked_by == alice and revoked.status == "revoked"
    assert authenticate_person_token(carols.raw).user == carol


def test_the_page_never_shows_a_raw_token_or_its_hash(alice, bob):
    issued = _token(bob)
    for user in (alice, bob):
        page = _client(user).get(reverse("person_tokens")).content.decode()
        assert issued.token.prefix in page
        assert issued.raw not in page and issued.token.token_hash not in page
