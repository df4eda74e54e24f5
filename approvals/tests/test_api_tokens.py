"""The approvals JSON API with a person's API token (``Authorization: Bearer alp_...``)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import Status
from approvals.tests.factories import make_request, review_decision
from audit.models import AuditRecord
from identity import actions as identity_actions
from identity.models import PersonToken
from identity.tests.factories import issue

pytestmark = pytest.mark.django_db


def _token(user, days: float = 30) -> str:  # type: ignore[no-untyped-def]
    return identity_actions.do_create_person_token(
        user, user, name="chat bot", expires_at=timezone.now() + timedelta(days=days)
    ).raw


def _bearer(raw: str) -> Client:
    """A client with no session, that enforces CSRF as a browser's request would meet it."""
    return Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {raw}"})


def _post(client: Client, name: str, pk: int, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = client.post(
        reverse(f"approvals:{name}", kwargs={"pk": pk}), json.dumps(body), content_type="application/json"
    )
    return response.status_code, response.json()


def test_a_reviewer_lists_and_approves_with_a_token_and_no_csrf_token(world, bob):
    req = make_request(world)
    client = _bearer(_token(bob))

    listed = client.get(reverse("approvals:api_list"), {"status": "awaiting"})
    assert listed.status_code == 200
    assert [(r["id"], r["can_decide"]) for r in listed.json()["requests"]] == [(req.pk, True)]
    status, body = _post(client, "api_approve", req.pk, {"comment": "from the chat bot"})

    assert status == 200 and body["status"] == "approved" and body["decided_by"] == "bob"
    assert body["decisions"][0]["comment"] == "from the chat bot"
    req.refresh_from_db()
    assert req.status == Status.APPROVED
    approved = AuditRecord.objects.get(action="approval.approved")
    assert (approved.actor, approved.actor_user) == ("bob", bob)


def test_a_reviewer_rejects_with_a_token_and_bad_input_is_still_refused(world, bob):
    req = make_request(world)
    client = _bearer(_token(bob))

    assert _post(client, "api_reject", req.pk, {})[0] == 400
    status, body = _post(client, "api_reject", req.pk, {"reason": "after the backup"})
    assert status == 200 and (body["status"], body["reason"]) == ("rejected", "after the backup")


def test_a_token_acts_with_its_persons_current_roles(world, bob, alice):
    req = make_request(world, decision=review_decision(approvals=2))
    raw = _token(bob)
    client = _bearer(raw)
    assert client.get(reverse("approvals:api_detail", kwargs={"pk": req.pk})).status_code == 200
    # bob loses the reviewer role: the token now gets what his session would get.
    identity_actions.do_set_user_groups(alice, bob, ["dba"])

    status, body = _post(client, "api_approve", req.pk, {})
    assert status == 403 and body == {"error": "you do not have a role that allows this"}
    assert client.get(reverse("approvals:api_list")).status_code == 403
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


def test_a_token_cannot_decide_what_its_person_may_not(world, bob):
    # dave is a reviewer, but the agent acts for him: he is on the requesting side (WF-02).
    req = make_request(world)
    status, body = _post(_bearer(_token(world.dave)), "api_approve", req.pk, {})
    assert (status, body) == (
        403,
        {"error": "you cannot decide a request made by an agent acting for you or owned by you"},
    )
    req.refresh_from_db()
    assert req.status == Status.PENDING


@pytest.mark.parametrize("case", ["revoked", "expired", "disabled", "unknown", "agent token", "not bearer"])
def test_a_refused_token_gets_401_with_the_reason_and_changes_nothing(world, bob, alice, case):
    req = make_request(world)
    raw = _token(bob)
    token = PersonToken.objects.get()
    header = f"Bearer {raw}"
    expected = {
        "revoked": f"token {token.prefix}… was revoked",
        "expired": f"token {token.prefix}… expired at ",
        "disabled": f"the account of token {token.prefix}… is disabled",
        "unknown": "unknown token",
        "agent token": "this is not an Airlock personal API token (they start with alp_)",
        "not bearer": "the Authorization header must be: Bearer <your API token>",
    }[case]
    if case == "revoked":
        identity_actions.do_revoke_person_token(bob, token)
    elif case == "expired":
        PersonToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "disabled":
        identity_actions.do_set_user_active(alice, bob, False)
    elif case == "unknown":
        header = "Bearer alp_" + raw[4:][::-1]
    elif case == "agent token":
        header = f"Bearer {issue(world.agent).raw}"
    else:
        header = f"Token {raw}"
    client = Client(enforce_csrf_checks=True, headers={"Authorization": header})

    for response in (
        client.get(reverse("approvals:api_list")),
        client.post(
            reverse("approvals:api_approve", kwargs={"pk": req.pk}), "{}", content_type="application/json"
        ),
    ):
        assert response.status_code == 401
        assert response.json()["error"].startswith(expected)
        assert response["WWW-Authenticate"].startswith("Bearer ")
    req.refresh_from_db()
    assert req.status == Status.PENDING
    assert not AuditRecord.objects.filter(action="person_token.use").exists()


def test_a_bad_token_is_refused_even_with_a_valid_session(world, bob):
    client = Client(headers={"Authorization": "Bearer alp_" + "x" * 43})
    client.force_login(bob)
    response = client.get(reverse("approvals:api_list"))
    assert response.status_code == 401 and response.json() == {"error": "unknown token"}


def test_a_token_in_the_query_string_is_not_accepted(world, bob):
    raw = _token(bob)
    for param in ("access_token", "token", "key"):
        response = Client().get(reverse("approvals:api_list"), {param: raw})
        assert response.status_code == 400
        assert "goes in the Authorization header" in response.json()["error"]
    # Not with a session either: the person is told, nothing is answered.
    client = Client()
    client.force_login(bob)
    assert client.get(reverse("approvals:api_list"), {"access_token": raw}).status_code == 400
    assert not AuditRecord.objects.filter(action="person_token.use").exists()


def test_a_token_opens_no_console_page(world, bob):
    req = make_request(world)
    client = _bearer(_token(bob))
    for name, kwargs in (("approvals:inbox", {}), ("approvals:detail", {"pk": req.pk}), ("dashboard", {})):
        url = reverse(name, kwargs=kwargs)
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    # The form fallback refuses it too (no session, no CSRF token).
    response = client.post(reverse("approvals:approve", kwargs={"pk": req.pk}), {})
    assert response.status_code == 403
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_a_session_post_still_needs_its_csrf_token(world, bob):
    req = make_request(world)
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    status, body = _post(client, "api_approve", req.pk, {})
    assert status == 403 and body["error"].startswith("CSRF verification failed")
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_use_is_audited_at_most_once_a_minute_per_token(world, bob):
    raw = _token(bob)
    client = _bearer(raw)
    for _ in range(5):
        assert client.get(reverse("approvals:api_list")).status_code == 200
    uses = AuditRecord.objects.filter(action="person_token.use")
    assert uses.count() == 1
    assert uses.get().detail["path"] == reverse("approvals:api_list")
    token = PersonToken.objects.get()
    assert token.last_used_at is not None
    PersonToken.objects.update(last_used_at=token.last_used_at - timedelta(minutes=2))
    client.get(reverse("approvals:api_list"))
    assert uses.count() == 2
