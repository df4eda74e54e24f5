"""People's API tokens: made, refused, revoked and used through identity.actions and the
``manage.py user token`` command, against the real PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditRecord
from identity import tokens
from identity.actions import (
    PersonTokenRefused,
    authenticate_person_token,
    do_create_person_token,
    do_revoke_person_token,
    do_set_user_active,
    note_person_token_used,
)
from identity.models import PersonToken
from identity.tests.factories import issue, make_agent

pytestmark = pytest.mark.django_db


def _days(n: float):  # type: ignore[no-untyped-def]
    return timezone.now() + timedelta(days=n)


def make_token(user, name="chat bot", days=30):  # type: ignore[no-untyped-def]
    return do_create_person_token(user, user, name=name, expires_at=_days(days))


def test_a_token_has_its_own_prefix_and_is_stored_as_a_hash_only(bob):
    issued = make_token(bob)

    assert issued.raw.startswith("alp_") and len(issued.raw) == 47
    assert tokens.looks_like_person_token(issued.raw) and not tokens.looks_like_token(issued.raw)
    token = PersonToken.objects.get()
    assert token.token_hash == tokens.token_hash(issued.raw) and token.prefix == issued.raw[:12]
    assert (token.user, token.name, token.created_by, token.status) == (bob, "chat bot", bob, "active")
    assert authenticate_person_token(issued.raw) == token


def test_a_token_authenticates_its_person_only_and_agents_tokens_are_not_person_tokens(alice, bob):
    mine, hers = make_token(bob), make_token(alice)
    assert authenticate_person_token(mine.raw).user == bob
    assert authenticate_person_token(hers.raw).user == alice
    agent_token = issue(make_agent()).raw
    with pytest.raises(PersonTokenRefused, match="not an Airlock personal API token"):
        authenticate_person_token(agent_token)
    with pytest.raises(PersonTokenRefused, match="unknown token"):
        authenticate_person_token(tokens.PERSON_TOKEN_PREFIX + "x" * 43)


def test_revoked_expired_and_disabled_tokens_are_refused_saying_why(alice, bob):
    revoked, expired, disabled = make_token(bob, "a"), make_token(bob, "b"), make_token(bob, "c")
    assert do_revoke_person_token(bob, revoked.token) is True
    assert do_revoke_person_token(bob, revoked.token) is False  # once only
    PersonToken.objects.filter(pk=expired.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    with pytest.raises(PersonTokenRefused, match=rf"token {revoked.token.prefix}… was revoked"):
        authenticate_person_token(revoked.raw)
    with pytest.raises(PersonTokenRefused, match=rf"token {expired.token.prefix}… expired at"):
        authenticate_person_token(expired.raw)
    assert authenticate_person_token(disabled.raw).user == bob
    do_set_user_active(alice, bob, False)
    with pytest.raises(PersonTokenRefused, match="is disabled"):
        authenticate_person_token(disabled.raw)
    revoked.token.refresh_from_db()
    assert revoked.token.revoked_by == bob and revoked.token.status == "revoked"


@pytest.mark.parametrize(
    ("name", "days", "error"),
    [
        ("", 30, "needs a name"),
        ("   ", 30, "needs a name"),
        ("x" * 101, 30, "too long"),
        ("bot", -1, "must be in the future"),
        ("bot", 366, "at most 365 days"),
    ],
)
def test_a_bad_token_request_is_refused_and_makes_nothing(bob, name, days, error):
    with pytest.raises(ValueError, match=error):
        do_create_person_token(bob, bob, name=name, expires_at=_days(days))
    assert not PersonToken.objects.exists()
    assert not AuditRecord.objects.filter(action__startswith="person_token").exists()


def test_a_disabled_person_gets_no_new_token(alice, bob):
    do_set_user_active(alice, bob, False)
    with pytest.raises(ValueError, match="bob is disabled"):
        make_token(bob)


def test_create_and_revoke_are_audited_without_the_token(alice, bob):
    issued = make_token(bob)
    do_revoke_person_token(alice, issued.token)

    records = list(AuditRecord.objects.filter(action__startswith="person_token").order_by("id"))
    assert [(r.action, r.actor, r.target_repr) for r in records] == [
        ("person_token.create", "bob", "bob"),
        ("person_token.revoke", "alice", "bob"),
    ]
    assert records[0].after["token"] == issued.token.prefix and records[0].after["name"] == "chat bot"
    text = json.dumps([[r.before, r.after, r.detail, r.target_repr] for r in records])
    assert issued.raw not in text and issued.raw.removeprefix("alp_") not in text
    assert issued.token.token_hash not in text


def test_use_is_noted_and_audited_at_most_once_a_minute(bob):
    issued = make_token(bob)
    token = authenticate_person_token(issued.raw)

    assert note_person_token_used(token, source_address="10.0.0.7", path="/api/approvals/") is True
    assert note_person_token_used(token, source_address="10.0.0.7", path="/api/approvals/") is False
    uses = AuditRecord.objects.filter(action="person_token.use")
    assert uses.count() == 1
    use = uses.get()
    assert (use.actor, use.source_address, use.detail) == (
        "bob",
        "10.0.0.7",
        {"token": issued.token.prefix, "path": "/api/approvals/"},
    )
    first = PersonToken.objects.get().last_used_at
    assert first is not None
    # A minute later the next use is noted again.
    PersonToken.objects.update(last_used_at=first - timedelta(seconds=61))
    assert note_person_token_used(token) is True
    assert uses.count() == 2 and PersonToken.objects.get().last_used_at > first


def test_the_command_creates_lists_and_revokes_a_persons_tokens(bob):
    out, err = StringIO(), StringIO()
    call_command(
        "user", "token", "create", "bob", "--name", "slack", "--expires", "7d", stdout=out, stderr=err
    )
    raw = out.getvalue().strip()
    assert tokens.looks_like_person_token(raw) and "shown only this once" in err.getvalue()
    token = authenticate_person_token(raw)
    assert token.name == "slack" and timedelta(days=6) < token.expires_at - timezone.now() <= timedelta(
        days=7
    )
    assert AuditRecord.objects.get(action="person_token.create").actor == "cli"

    listing = StringIO()
    call_command("user", "token", "list", stdout=listing)
    assert f"bob     {token.prefix}…  slack  active" in listing.getvalue()
    assert raw not in listing.getvalue()

    call_command("user", "token", "revoke", "bob", token.prefix, stderr=StringIO())
    with pytest.raises(PersonTokenRefused, match="was revoked"):
        authenticate_person_token(raw)
    with pytest.raises(CommandError, match="revoked already"):
        call_command("user", "token", "revoke", "bob", token.prefix, stderr=StringIO())


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["create", "nobody", "--name", "x"], "no person named 'nobody'"),
        (["create", "bob", "--name", "x", "--expires", "400d"], "at most 365 days"),
        (["create", "bob", "--name", "x", "--expires", "soon"], "not a duration"),
        (["revoke", "bob", "alp_"], "at least the first 6 characters"),
        (["revoke", "bob", "alp_zzzzzz"], "bob has no token starting with"),
    ],
)
def test_the_command_refuses_bad_input_clearly(bob, args, error):
    with pytest.raises(CommandError, match=error):
        call_command("user", "token", *args, stdout=StringIO(), stderr=StringIO())
    assert not PersonToken.objects.exists()
