"""The inbox page, a request's own page, the form fallbacks and the JSON API."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from approvals import actions
from approvals.models import ApprovalRequest, Status
from approvals.tests.factories import make_request, review_decision, reviewer


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- pages -------------------------------------------------------------------------------------


def test_the_inbox_shows_each_card_with_what_a_reviewer_needs(world, bob):
    req = make_request(world)
    ApprovalRequest.objects.filter(pk=req.pk).update(estimate_status="ok", estimated_rows=1250)
    html = _html(_client(bob).get(reverse("approvals:inbox")))
    card = re.search(
        rf'<article class="card approval status-pending" id="approval-{req.pk}".*?</article>', html, re.S
    )
    assert card, html
    text = card.group(0)
    assert "billing-bot" in text and 'acting for <strong class="on-behalf-of">dave</strong>' in text
    assert "shop" in text and "writes" in text and "policy agents v3" in text
    assert "DELETE FROM orders\nWHERE id = $1" in text
    assert "<th>$1</th>" in text and '<code class="wrap">42</code>' in text
    assert "public.orders" in text and ">write<" in text
    assert 'class="estimated-rows">1250<' in text
    assert 'class="time-left" data-expires=' in text
    assert 'data-verb="approve"' in text and 'data-verb="reject"' in text
    assert "pg-Secret-Sentinel" not in html


def test_decided_requests_are_in_the_history_with_who_when_and_why(world, bob):
    req = make_request(world)
    actions.do_reject(world.erin, req, reason="run it after the backup")
    html = _html(_client(bob).get(reverse("approvals:inbox")))
    history = html.split('id="approvals-history"', 1)[1]
    assert f'id="approval-{req.pk}"' in history
    assert 'class="decided-by">erin<' in history and "run it after the backup" in history
    assert 'id="approvals-pending-empty">' in html


def test_an_executed_request_says_when_it_ran_and_who_approved_it(world, bob):
    # The reviewer approved; the agent's statement ran. The card never says the reviewer
    # executed it.
    req = make_request(world)
    actions.do_approve(world.erin, req)
    assert actions.do_claim("gateway", req)
    actions.do_mark_executed("gateway", req, result="DELETE 1")
    req.refresh_from_db()
    html = _html(_client(bob).get(reverse("approvals:inbox")))
    outcome = re.search(rf'id="approval-{req.pk}".*?<p class="outcome">(.*?)</p>', html, re.S)
    assert outcome, html
    text = re.sub(r"<[^>]+>", "", outcome.group(1))
    ran, decided = (f"{t:%Y-%m-%d %H:%M:%S} UTC" for t in (req.finished_at, req.decided_at))
    assert text == f"Executed at {ran} (DELETE 1); approved by erin at {decided}"


def test_the_inbox_leaves_out_what_the_person_may_not_decide(world, bob):
    mine = make_request(world)
    html = _html(_client(world.dave).get(reverse("approvals:inbox")))
    # dave reviews dba, but billing-bot acts for him: the request is not his to decide.
    assert f'id="approval-{mine.pk}"' not in html
    frank = reviewer("frank", "finance")
    assert 'class="card approval' not in _html(_client(frank).get(reverse("approvals:inbox")))
    assert f'id="approval-{mine.pk}"' in _html(_client(bob).get(reverse("approvals:inbox")))


def test_the_count_badge_is_in_the_navigation_on_every_page(world, bob):
    make_request(world)
    make_request(world, params=("2",))
    html = _html(_client(bob).get("/"))
    assert re.search(r'id="approvals-count" data-approvals-count>2</span>', html)
    assert "approvals/live.js" in html
    html = _html(_client(world.dave).get("/"))
    assert re.search(r'id="approvals-count" data-approvals-count>0</span>', html)


def test_people_without_the_reviewer_role_get_no_badge_nor_live_script(world, alice, carol):
    make_request(world)
    for person in (alice, carol):
        html = _html(_client(person).get("/"))
        assert "approvals-count" not in html and "live.js" not in html


def test_a_requests_page_is_read_only_for_those_who_cannot_decide(world, bob, alice, carol):
    req = make_request(world)
    url = reverse("approvals:detail", kwargs={"pk": req.pk})
    for person in (alice, carol):
        html = _html(_client(person).get(url))
        assert "DELETE FROM orders" in html and 'data-verb="approve"' not in html
    html = _html(_client(world.dave).get(url))
    assert 'data-verb="approve"' not in html and "acting for you" in html
    assert 'data-verb="approve"' in _html(_client(bob).get(url))


def test_a_requests_page_is_refused_to_reviewers_of_other_groups_and_outsiders(world, bob, mallory):
    req = make_request(world)
    url = reverse("approvals:detail", kwargs={"pk": req.pk})
    assert _client(reviewer("frank", "finance")).get(url).status_code == 403
    assert _client(mallory).get(url).status_code == 403
    assert _client(bob).get(reverse("approvals:detail", kwargs={"pk": req.pk + 1000})).status_code == 404


def test_approving_with_the_form_approves_and_shows_who(world, bob):
    req = make_request(world)
    client = _client(bob)
    response = client.post(
        reverse("approvals:approve", kwargs={"pk": req.pk}), {"comment": "checked the WHERE"}
    )
    assert response.status_code == 302
    req.refresh_from_db()
    assert req.status == Status.APPROVED
    html = _html(client.get(response["Location"]))
    assert f"You approved request {req.pk}." in html and "checked the WHERE" in html


def test_rejecting_with_the_form_needs_a_reason(world, bob):
    req = make_request(world)
    client = _client(bob)
    response = client.post(reverse("approvals:reject", kwargs={"pk": req.pk}), {"reason": ""}, follow=True)
    assert "a rejection needs a reason" in response.content.decode()
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_the_form_refuses_the_requester_and_changes_nothing(world, bob):
    req = make_request(world)
    response = _client(world.dave).post(reverse("approvals:approve", kwargs={"pk": req.pk}), follow=True)
    assert "acting for you" in response.content.decode()
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


# --- the JSON API -----------------------------------------------------------------------------


def _post(client: Client, name: str, pk: int, body) -> tuple[int, dict]:
    response = client.post(
        reverse(f"approvals:{name}", kwargs={"pk": pk}),
        data=json.dumps(body) if not isinstance(body, str) else body,
        content_type="application/json",
    )
    return response.status_code, response.json()


def test_the_api_lists_pending_and_decided_requests(world, bob):
    first = make_request(world)
    second = make_request(world, params=("2",))
    actions.do_approve(world.erin, second)
    client = _client(bob)
    pending = client.get(reverse("approvals:api_list")).json()["requests"]
    assert [r["id"] for r in pending] == [first.pk]
    item = pending[0]
    assert item["statement"] == "DELETE FROM orders WHERE id = $1" and item["params"] == ["42"]
    assert (item["agent"], item["on_behalf_of"], item["connection"]) == ("billing-bot", "dave", "shop")
    assert (item["rule"], item["policy"], item["policy_version"]) == ("writes", "agents", 3)
    assert item["operations"] == ["write"] and item["tables"] == ["public.orders"]
    assert item["can_decide"] is True and 0 < item["seconds_left"] <= 600
    assert item["url"] == f"http://127.0.0.1:8000/approvals/{first.pk}/"
    assert "binding_hash" not in item
    decided = client.get(reverse("approvals:api_list"), {"status": "decided"}).json()["requests"]
    assert [(r["id"], r["status"], r["decided_by"]) for r in decided] == [(second.pk, "approved", "erin")]
    assert client.get(reverse("approvals:api_list"), {"status": "bogus"}).status_code == 400


def test_the_api_approves_and_rejects(world, bob):
    req = make_request(world, decision=review_decision(approvals=2))
    status, body = _post(_client(bob), "api_approve", req.pk, {"comment": "ok", "grant_minutes": 0})
    assert status == 200 and body["status"] == "pending" and body["can_decide"] is False
    assert body["decisions"][0]["reviewer"] == "bob" and body["decisions"][0]["comment"] == "ok"
    status, body = _post(_client(world.erin), "api_reject", req.pk, {"reason": "too broad"})
    assert status == 200 and (body["status"], body["decided_by"], body["reason"]) == (
        "rejected",
        "erin",
        "too broad",
    )
    status, body = _post(_client(world.erin), "api_approve", req.pk, {})
    assert status == 409 and "can no longer be decided" in body["error"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "needs a reason"),
        ({"reason": 5}, "must be text"),
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
    ],
)
def test_the_api_refuses_bad_input_and_changes_nothing(world, bob, body, error):
    req = make_request(world)
    status, answer = _post(_client(bob), "api_reject", req.pk, body)
    assert status == 400 and error in answer["error"]
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_the_api_answers_who_may_not_with_json(world, bob, alice, mallory):
    req = make_request(world)
    assert _post(_client(world.dave), "api_approve", req.pk, {})[0] == 403
    assert _post(_client(alice), "api_approve", req.pk, {})[0] == 403  # admins are not reviewers
    anonymous = Client().get(reverse("approvals:api_detail", kwargs={"pk": req.pk}))
    assert anonymous.status_code == 401 and anonymous.json() == {
        "error": "log in first, or send a personal API token (Authorization: Bearer ...)"
    }
    assert _client(mallory).get(reverse("approvals:api_list")).status_code == 403
    frank = _client(reviewer("frank", "finance"))
    assert frank.get(reverse("approvals:api_detail", kwargs={"pk": req.pk})).status_code == 403
    assert frank.get(reverse("approvals:api_list")).json() == {"requests": []}
    assert _client(bob).get(reverse("approvals:api_detail", kwargs={"pk": req.pk + 99})).status_code == 404
    # A decision refused is answered as the request's page is: first whether it exists and
    # is theirs to see (never the reviewer groups of a request that is not), then why.
    assert _post(_client(bob), "api_approve", req.pk + 99, {}) == (404, {"error": "no such approval request"})
    not_yours = (403, {"error": "this approval request is not yours to see"})
    assert _post(frank, "api_approve", req.pk, {}) == not_yours
    assert _post(frank, "api_reject", req.pk, {}) == not_yours  # no reason either: still 403
    assert _post(frank, "api_approve", req.pk, {"grant_minutes": "x"}) == not_yours
    refused = _post(_client(world.dave), "api_approve", req.pk, {})
    assert refused[0] == 403 and "acting for you" in refused[1]["error"]  # his to see, not to decide
    req.refresh_from_db()
    assert req.status == Status.PENDING


def test_the_api_needs_the_csrf_token_for_a_browser_session(world, bob):
    req = make_request(world)
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    url = reverse("approvals:api_approve", kwargs={"pk": req.pk})
    assert client.post(url, "{}", content_type="application/json").status_code == 403
    req.refresh_from_db()
    assert req.status == Status.PENDING
    client.get(reverse("approvals:inbox"))
    token = client.cookies["csrftoken"].value
    response = client.post(url, "{}", content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 200 and response.json()["status"] == "approved"


def test_an_approval_after_the_deadline_expires_the_request(world, bob):
    from datetime import timedelta

    from django.utils import timezone

    req = make_request(world)
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    status, body = _post(_client(bob), "api_approve", req.pk, {})
    assert status == 409 and "expired" in body["error"]
    req.refresh_from_db()
    assert req.status == Status.EXPIRED


@pytest.mark.parametrize(
    ("verb", "body", "status"), [("approve", {}, "approved"), ("reject", {"reason": "no"}, "rejected")]
)
def test_deciding_through_the_api_takes_six_statements(
    world, bob, verb, body, status, monkeypatch, django_assert_num_queries
):
    # Session, person with roles; the request (with its row version and whether a reviewer
    # group is theirs), its decisions; the decision, the request's update and the audit
    # record in one statement (PostgreSQL; elsewhere the locked transaction's writes); the
    # decisions for the answer. Exactly: a statement more is a regression, one fewer a
    # change to look at (and to pin here).
    from django.db import connection

    from approvals import tasks

    monkeypatch.setattr(tasks.notify_decision, "delay", lambda *args: None)  # the broker is not timed here
    req = make_request(world)
    client = _client(bob)
    # Elsewhere (SQLite): savepoint, the locked read, the decisions, three writes, release.
    with django_assert_num_queries(6 if connection.vendor == "postgresql" else 10):
        answer, body = _post(client, f"api_{verb}", req.pk, body)
    assert answer == 200 and body["status"] == status and body["decided_by"] == "bob"
    assert [d["reviewer"] for d in body["decisions"]] == ["bob"] and body["can_decide"] is False
