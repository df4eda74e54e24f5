"""Every console URL, every method it answers, for every persona: the exact outcome.

A new console URL must be added to ROUTES (test_every_console_url_is_covered fails
otherwise), so no page can ship without its role check being tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone

from console import urls as console_urls
from console.tests.factories import make_agent, make_connection
from identity import actions as identity_actions
from identity.models import AgentToken, PersonToken
from policies import actions as policy_actions
from recordings.models import Session

PERSONAS = ("anonymous", "mallory", "carol", "bob", "alice")
LOGIN = "login"
ADMIN_ONLY = {"anonymous": LOGIN, "mallory": 403, "carol": 403, "bob": 403}
RECORDING_VIEWERS = {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 403}
REVIEWER_ONLY = {"anonymous": LOGIN, "mallory": 403, "carol": 403, "bob": 403}
REVIEWER_API = {"anonymous": 401, "mallory": 403, "carol": 403, "bob": 403}


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    alice: int | str
    others: dict[str, int | str] = field(default_factory=lambda: dict(ADMIN_ONLY))
    data: dict[str, str] = field(default_factory=dict)

    def expected(self, persona: str) -> int | str:
        return self.alice if persona == "alice" else self.others[persona]


def _probe_status() -> int:
    from console.views.connections import probe_available

    return 200 if probe_available() else 501


# alice's outcome is a status, or "302 <url name>" for a redirect to that page.
ROUTES = [
    Route("healthz", "GET", 200, {p: 200 for p in PERSONAS if p != "alice"}),
    Route("dashboard", "GET", 200, {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 200}),
    Route("audit_log", "GET", 200, {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 403}),
    Route("connection_list", "GET", 200),
    Route("connection_create", "GET", 200),
    Route("connection_create", "POST", 200),  # empty form: shown again with its errors
    Route("connection_detail", "GET", 200),
    Route("connection_edit", "GET", 200),
    Route("connection_edit", "POST", 200),
    Route("connection_test", "GET", 405),
    Route("connection_test", "POST", "probe"),
    Route("connection_delete", "GET", 200),
    Route("connection_delete", "POST", "302 connection_list"),
    Route("agent_list", "GET", 200),
    Route("agent_create", "GET", 200),
    Route("agent_create", "POST", 200),
    Route("agent_detail", "GET", 200),
    Route("agent_edit", "GET", 200),
    Route("agent_edit", "POST", "302 agent_detail"),  # a valid form: nothing is required
    Route("token_issue", "GET", 405),
    Route("token_issue", "POST", 200),  # no nonce: the agent page with the form's errors
    Route("token_revoke", "GET", 405),
    Route("token_revoke", "POST", "302 agent_detail"),
    Route("people_list", "GET", 200),
    Route("person_create", "GET", 200),
    Route("person_create", "POST", 200),
    Route("person_edit", "GET", 200),
    Route("person_edit", "POST", "302 people_list"),  # no groups for dave: allowed
    Route("person_set_active", "GET", 405),
    Route("person_set_active", "POST", "302 person_edit", data={"active": "0"}),
    Route("group_list", "GET", 200),
    Route("group_list", "POST", 200),
    # A person's API tokens: everyone logged in manages their own; only admins revoke
    # someone else's (dave's token here: 404 to the others, who are not told it exists).
    Route("person_tokens", "GET", 200, {"anonymous": LOGIN, "mallory": 200, "carol": 200, "bob": 200}),
    Route("person_token_create", "GET", 405, {"anonymous": LOGIN, "mallory": 405, "carol": 405, "bob": 405}),
    # No nonce: the page with the form's errors.
    Route("person_token_create", "POST", 200, {"anonymous": LOGIN, "mallory": 200, "carol": 200, "bob": 200}),
    Route("person_token_revoke", "GET", 405, {"anonymous": LOGIN, "mallory": 405, "carol": 405, "bob": 405}),
    Route(
        "person_token_revoke",
        "POST",
        "302 person_tokens",
        {"anonymous": LOGIN, "mallory": 404, "carol": 404, "bob": 404},
    ),
    # The policy editor (policies/urls.py). Empty POSTs change nothing: forms come back with
    # their errors, buttons without their version redirect back. Deletion comes last.
    Route("policies:list", "GET", 200),
    Route("policies:create", "GET", 200),
    Route("policies:create", "POST", 200),
    Route("policies:import", "GET", 200),
    Route("policies:import", "POST", 200),
    Route("policies:detail", "GET", 200),
    Route("policies:settings", "GET", 200),
    Route("policies:settings", "POST", 200),
    Route("policies:rule_add", "GET", 200),
    Route("policies:rule_add", "POST", 200),
    Route("policies:rule_edit", "GET", 200),
    Route("policies:rule_edit", "POST", 200),
    Route("policies:rule_move", "GET", 405),
    Route("policies:rule_move", "POST", "302 policies:detail"),
    Route("policies:rule_delete", "GET", 405),
    Route("policies:rule_delete", "POST", "302 policies:detail"),
    Route("policies:try", "GET", 405),
    Route("policies:try", "POST", 400),  # no agent, no connection: the page says so
    Route("policies:versions", "GET", 200),
    Route("policies:version", "GET", 200),
    Route("policies:rollback", "GET", 405),
    Route("policies:rollback", "POST", "302 policies:version"),
    Route("policies:export", "GET", 200),
    Route("policies:delete", "GET", 200),
    Route("policies:delete", "POST", "302 policies:list"),
    # Masking policies (policies/masking_views.py): admins only, like the policy editor.
    Route("policies:masking_list", "GET", 200),
    Route("policies:masking_create", "GET", 200),
    Route("policies:masking_create", "POST", 200),  # empty form: shown again with its errors
    Route("policies:masking_detail", "GET", 200),
    Route("policies:masking_edit", "GET", 200),
    Route("policies:masking_edit", "POST", 200),
    Route("policies:masking_try", "GET", 405),
    Route("policies:masking_try", "POST", 200),  # no text: nothing to mask
    Route("policies:masking_sample", "GET", 405),
    Route("policies:masking_sample", "POST", 400),  # no connection, no query: the page says so
    Route("policies:masking_delete", "GET", 200),
    Route("policies:masking_delete", "POST", "302 policies:masking_list"),
    Route("audit_export", "GET", 200, {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 403}),
    # Recordings: admins and auditors see every session; bob the reviewer decided nothing in
    # this one, so it is refused to him like to mallory (REC-03).
    Route(
        "recordings:session_list", "GET", 200, {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 200}
    ),
    Route("recordings:public_key", "GET", 200, {p: 200 for p in PERSONAS if p != "alice"}),
    Route("recordings:retention", "GET", 200, {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 403}),
    Route(
        "recordings:retention", "POST", 400, {"anonymous": LOGIN, "mallory": 403, "carol": 400, "bob": 403}
    ),
    Route("recordings:session_detail", "GET", 200, RECORDING_VIEWERS),
    Route("recordings:session_events", "GET", 200, RECORDING_VIEWERS),
    Route("recordings:session_integrity", "GET", 200, RECORDING_VIEWERS),
    Route("recordings:export_jsonl", "GET", 200, RECORDING_VIEWERS),
    Route(
        "recordings:export_cast", "GET", 404, {"anonymous": LOGIN, "mallory": 403, "carol": 404, "bob": 403}
    ),
    Route(
        "recordings:session_terminate",
        "GET",
        405,
        {"anonymous": LOGIN, "mallory": 403, "carol": 403, "bob": 405},
    ),
    # No reason given: nothing is sent, the page says why.
    Route(
        "recordings:session_terminate",
        "POST",
        "302 recordings:session_detail",
        {"anonymous": LOGIN, "mallory": 403, "carol": 403, "bob": 403},
    ),
    Route(
        "recordings:session_hold", "GET", 405, {"anonymous": LOGIN, "mallory": 403, "carol": 405, "bob": 403}
    ),
    Route(
        "recordings:session_hold",
        "POST",
        "302 recordings:session_detail",
        {"anonymous": LOGIN, "mallory": 403, "carol": "302 recordings:session_detail", "bob": 403},
    ),
    # Approvals (approvals/urls.py): the inbox and deciding are for reviewers of the
    # request's groups; admins and auditors read. The API answers JSON 401/403.
    Route("approvals:inbox", "GET", 403, dict(REVIEWER_ONLY, bob=200)),
    Route("approvals:detail", "GET", 200, {"anonymous": LOGIN, "mallory": 403, "carol": 200, "bob": 200}),
    Route("approvals:approve", "GET", 405, {p: 405 for p in PERSONAS if p != "alice"}),
    Route("approvals:reject", "GET", 405, {p: 405 for p in PERSONAS if p != "alice"}),
    Route("approvals:api_list", "GET", 200, {"anonymous": 401, "mallory": 403, "carol": 200, "bob": 200}),
    Route("approvals:api_detail", "GET", 200, {"anonymous": 401, "mallory": 403, "carol": 200, "bob": 200}),
    Route("approvals:api_approve", "GET", 405, {p: 405 for p in PERSONAS if p != "alice"}),
    Route("approvals:api_reject", "GET", 405, {p: 405 for p in PERSONAS if p != "alice"}),
    # bob decides: no reason is refused (400), a form without a reason is shown the error,
    # then the approvals go through; alice is an admin, not a reviewer.
    Route("approvals:api_reject", "POST", 403, dict(REVIEWER_API, bob=400)),
    Route("approvals:reject", "POST", 403, dict(REVIEWER_ONLY, bob="302 approvals:detail")),
    Route("approvals:api_approve", "POST", 403, dict(REVIEWER_API, bob=200)),
    Route("approvals:approve", "POST", 403, dict(REVIEWER_ONLY, bob="302 approvals:detail")),
]


@pytest.fixture
def world(db, alice, bob, carol, mallory):  # type: ignore[no-untyped-def]
    connection = make_connection()
    agent = make_agent()
    token = identity_actions.do_issue_token(None, agent).token
    dave = identity_actions.do_create_user(None, "dave", password="dave-Pass-1234")
    dave_token = identity_actions.do_create_person_token(
        dave, dave, name="script", expires_at=timezone.now() + timedelta(days=30)
    ).token
    policy = policy_actions.do_save_policy(
        None,
        "agents-default",
        {"rules": [{"name": "reads", "match": {"operations": ["read"]}, "action": "allow"}]},
    )
    from policies.masking_actions import do_save_masking_policy

    masking = do_save_masking_policy(None, "pii", {}, bindings=[("shop", None)])
    session = Session.objects.create(protocol="postgres", agent_name="billing-bot", connection_name="shop")
    from approvals.tests.factories import make_request, reviewer

    reviewer("erin")  # a second reviewer in dba: with bob, someone who may approve
    approval = make_request(SimpleNamespace(agent=agent, connection=connection))
    return {
        "connection": connection,
        "agent": agent,
        "token": token,
        "dave": dave,
        "dave_token": dave_token,
        "policy": policy,
        "masking": masking,
        "session": session,
        "approval": approval,
    }


def _kwargs(name: str, world: dict) -> dict[str, object]:  # type: ignore[type-arg]
    if name.startswith("connection_") and name not in {"connection_list", "connection_create"}:
        return {"pk": world["connection"].pk}
    if name == "connection_create":
        return {"kind": "postgres"}
    if name in {"agent_detail", "agent_edit", "token_issue"}:
        return {"pk": world["agent"].pk}
    if name == "token_revoke":
        return {"pk": world["agent"].pk, "token_pk": world["token"].pk}
    if name in {"person_edit", "person_set_active"}:
        return {"pk": world["dave"].pk}
    if name == "person_token_revoke":
        return {"pk": world["dave_token"].pk}
    if name.startswith("policies:masking_") and name not in {
        "policies:masking_list",
        "policies:masking_create",
    }:
        return {"pk": world["masking"].pk}
    if name.startswith("policies:") and name not in {
        "policies:list",
        "policies:create",
        "policies:import",
        "policies:masking_list",
        "policies:masking_create",
    }:
        kwargs: dict[str, object] = {"pk": world["policy"].pk}
        if name in {"policies:rule_edit", "policies:rule_delete", "policies:rule_move"}:
            kwargs["index"] = 0
        if name in {"policies:version", "policies:rollback"}:
            kwargs["number"] = 1
        return kwargs
    if name == "audit_export":
        return {"fmt": "csv"}
    if name.startswith("recordings:") and name not in {
        "recordings:session_list",
        "recordings:public_key",
        "recordings:retention",
    }:
        return {"pk": world["session"].pk}
    if name.startswith("approvals:") and name not in {"approvals:inbox", "approvals:api_list"}:
        return {"pk": world["approval"].pk}
    return {}


def _client(persona: str, request) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    if persona != "anonymous":
        client.force_login(request.getfixturevalue(persona))
    return client


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_persona_gets_exactly_the_expected_outcome_on_every_url(persona, world, request):
    client = _client(persona, request)
    failures = []
    for route in ROUTES:
        url = reverse(route.name, kwargs=_kwargs(route.name, world))
        response = client.generic(
            route.method,
            url,
            data="&".join(f"{k}={v}" for k, v in route.data.items()),
            content_type="application/x-www-form-urlencoded",
        )
        expected = route.expected(persona)
        if expected == "probe":
            expected = _probe_status()
        if expected == LOGIN:
            ok = response.status_code == 302 and response["Location"] == f"/accounts/login/?next={quote(url)}"
        elif isinstance(expected, str) and expected.startswith("302 "):
            target = expected.split()[1]
            ok = response.status_code == 302 and response["Location"] == reverse(
                target, kwargs=_kwargs(target, world)
            )
        else:
            ok = response.status_code == expected
        if not ok:
            failures.append(
                f"{route.method} {url}: expected {expected}, got {response.status_code} {response.get('Location', '')}"
            )
    assert not failures, "\n".join(failures)


def test_a_refused_persona_changes_nothing(world, request):
    for persona in ("mallory", "carol", "bob"):
        client = _client(persona, request)
        client.post(reverse("connection_delete", kwargs={"pk": world["connection"].pk}))
        client.post(reverse("token_revoke", kwargs={"pk": world["agent"].pk, "token_pk": world["token"].pk}))
        client.post(reverse("person_set_active", kwargs={"pk": world["dave"].pk}), {"active": "0"})
        client.post(reverse("person_token_revoke", kwargs={"pk": world["dave_token"].pk}))
    world["connection"].refresh_from_db()
    assert AgentToken.objects.get(pk=world["token"].pk).revoked_at is None
    assert PersonToken.objects.get(pk=world["dave_token"].pk).revoked_at is None
    world["dave"].refresh_from_db()
    assert world["dave"].is_active


def _all_console_url_names() -> set[str]:
    # The console's own patterns, and those of apps that ship a namespaced urls.py
    # (policies:...). allauth's URL set (no namespace) is tested by allauth.
    names = {entry.name for entry in console_urls.urlpatterns if isinstance(entry, URLPattern) and entry.name}
    for entry in console_urls.urlpatterns:
        if isinstance(entry, URLResolver) and entry.namespace:
            names |= {
                f"{entry.namespace}:{sub.name}"
                for sub in entry.url_patterns
                if isinstance(sub, URLPattern) and sub.name
            }
    return names


def test_every_console_url_is_covered():
    covered = {route.name for route in ROUTES}
    assert _all_console_url_names() - covered == set()


def test_every_post_endpoint_refuses_a_request_without_the_csrf_token(world, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    posts = [route for route in ROUTES if route.method == "POST"]
    assert len(posts) >= 10
    for route in posts:
        url = reverse(route.name, kwargs=_kwargs(route.name, world))
        response = client.post(url, route.data)
        assert response.status_code == 403, url
        assert b"CSRF" in response.content, url
    world["connection"].refresh_from_db()
    assert AgentToken.objects.get(pk=world["token"].pk).revoked_at is None
    world["dave"].refresh_from_db()
    assert world["dave"].is_active
    assert PersonToken.objects.get(pk=world["dave_token"].pk).revoked_at is None


def test_a_person_without_a_role_is_told_why_the_dashboard_is_refused(mallory, client):
    client.force_login(mallory)
    response = client.get("/")
    assert response.status_code == 403
    assert b"no Airlock role" in response.content
