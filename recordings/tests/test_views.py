"""The sessions page, the replay page and its events API, integrity, exports (PostgreSQL)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from recordings import export
from recordings.models import Event, Session
from recordings.tests.factories import approval_events, recorded, statement_events, terminal_events
from recordings.verify_export import load_public_keys

SESSION_ROW = re.compile(r'<tr data-session="([0-9a-f-]{36})">')
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def listed(client: Client, **params: str) -> list[str]:
    response = client.get(reverse("recordings:session_list"), params)
    assert response.status_code == 200
    return SESSION_ROW.findall(response.content.decode())


def make(minutes: int, **fields) -> Session:  # type: ignore[no-untyped-def]
    defaults = {
        "protocol": "postgres",
        "agent_name": "billing-bot",
        "connection_name": "shop",
        "status": "ended",
    }
    return Session.objects.create(started_at=T0 + timedelta(minutes=minutes), **{**defaults, **fields})


@pytest.fixture
def carol_client(carol) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(carol)
    return client


# --- finding sessions -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sessions_page_filters_by_every_field(carol_client):
    base = make(0)
    other_agent = make(1, agent_name="report-bot")
    for_dave = make(2, on_behalf_of_name="dave")
    other_connection = make(3, connection_name="crm")
    over_ssh = make(4, protocol="ssh")
    live = make(5, status="live")
    terminated = make(6, status="terminated")
    denied = make(7, denied_count=2)
    reviewed = make(8, review_count=1)
    masked = make(9, masked_count=5)
    failed = make(10, error_count=1)
    everything = [
        failed,
        masked,
        reviewed,
        denied,
        terminated,
        live,
        over_ssh,
        other_connection,
        for_dave,
        other_agent,
        base,
    ]
    ids = lambda *sessions: [str(s.pk) for s in sessions]  # noqa: E731

    assert listed(carol_client) == ids(*everything)
    assert listed(carol_client, agent="report-bot") == ids(other_agent)
    assert listed(carol_client, on_behalf_of="dave") == ids(for_dave)
    assert listed(carol_client, connection="crm") == ids(other_connection)
    assert listed(carol_client, protocol="ssh") == ids(over_ssh)
    assert listed(carol_client, status="live") == ids(live)
    assert listed(carol_client, status="terminated") == ids(terminated)
    assert listed(carol_client, had_denials="on") == ids(denied)
    assert listed(carol_client, had_approvals="on") == ids(reviewed)
    assert listed(carol_client, had_masked="on") == ids(masked)
    assert listed(carol_client, had_errors="on") == ids(failed)
    assert listed(carol_client, started_after="2026-11-02T09:04", started_before="2026-11-02T09:06") == ids(
        live, over_ssh
    )
    assert listed(carol_client, agent="billing-bot", connection="shop", had_denials="on") == ids(denied)
    assert listed(carol_client, agent="nobody") == []
    assert (
        "No sessions match these filters"
        in carol_client.get(reverse("recordings:session_list"), {"agent": "nobody"}).content.decode()
    )


@pytest.mark.django_db
def test_a_bad_filter_value_is_shown_as_an_error_and_lists_nothing_wrongly(carol_client):
    make(0)
    response = carol_client.get(reverse("recordings:session_list"), {"started_after": "yesterday-ish"})
    assert response.status_code == 200
    assert "Enter a valid date/time" in response.content.decode()


@pytest.mark.django_db
def test_pages_walk_every_session_once_older_and_back_newer(carol_client):
    # 130 sessions, with runs of equal start times so the id breaks ties.
    sessions = [make(n // 3) for n in range(130)]
    expected = [str(s.pk) for s in sorted(sessions, key=lambda s: (s.started_at, s.pk), reverse=True)]
    pages, cursor = [], ""
    while True:
        response = carol_client.get(reverse("recordings:session_list"), {"after": cursor} if cursor else {})
        html = response.content.decode()
        pages.append(SESSION_ROW.findall(html))
        found = re.search(r'after=([^"&]+)">older', html)
        if not found:
            break
        cursor = found.group(1).replace("%3A", ":").replace("%2B", "+")
    assert [len(p) for p in pages] == [50, 50, 30]
    assert [sid for page in pages for sid in page] == expected
    # And back: the newer link of the last page gives the middle page again.
    newer = re.search(r'before=([^"&]+)">', html).group(1).replace("%3A", ":").replace("%2B", "+")
    back = carol_client.get(reverse("recordings:session_list"), {"before": newer})
    assert SESSION_ROW.findall(back.content.decode()) == pages[1]


@pytest.mark.django_db(transaction=True)
def test_search_finds_sessions_by_the_words_of_their_statements_and_typed_commands(carol_client):
    invoices = recorded(statement_events(2))
    deletes = recorded(approval_events("bob"))
    shell = recorded(terminal_events(), protocol="ssh", connection_name="web-1")
    ids = lambda *sessions: [str(s.pk) for s in sessions]  # noqa: E731

    assert listed(carol_client, q="invoices") == ids(deletes, invoices)
    assert listed(carol_client, q="invo") == ids(deletes, invoices)  # a prefix matches
    assert listed(carol_client, q="DELETE invoices") == ids(deletes)  # every word, any case
    assert listed(carol_client, q="srv") == ids(shell)  # typed in two chunks: "l", "s -la /srv"
    assert listed(carol_client, q="ls") == ids(shell)
    # Result rows are not searched, only what the agent sent.
    assert listed(carol_client, q="9.99") == []
    assert listed(carol_client, q="customers") == []
    assert listed(carol_client, q="invoices", protocol="ssh") == []
    assert listed(carol_client, q="   ") == ids(shell, deletes, invoices)
    # Quotes, backslashes and tsquery operators in the query are only words.
    assert listed(carol_client, q="' & | ! \\ :* (") == ids(shell, deletes, invoices)
    assert listed(carol_client, q="invoices'") == ids(deletes, invoices)


@pytest.mark.django_db(transaction=True)
def test_the_search_document_survives_a_session_whose_words_outgrow_it():
    # ~3 MB of distinct words: far beyond what a tsvector holds. The recording is whole;
    # the session keeps the words it could hold.
    huge = [
        (Event.Kind.STATEMENT, {"text": " ".join(f"w{n}x{'a' * 60}" for n in range(k, k + 60)), "params": []})
        for k in range(0, 45_000, 60)
    ]
    session = recorded([(Event.Kind.STATEMENT, {"text": "SELECT early_word", "params": []}), *huge])
    assert session.verify().ok
    assert session.statement_count == 751
    from recordings.search import search_sessions

    assert list(search_sessions(Session.objects.all(), "early_word")) == [session]


# --- one session ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_replay_page_shows_the_session_and_is_an_audit_record(carol_client, carol):
    session = recorded(
        statement_events(2), on_behalf_of_name="dave", application_name="psql", client_tls="TLSv1.3, direct"
    )
    response = carol_client.get(reverse("recordings:session_detail", args=[session.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    for text in ("billing-bot@shop", "dave", "psql", "8</span> events", "2 statements", 'id="integrity"'):
        assert text in html
    assert '<span id="client-tls">TLSv1.3, direct</span>' in html
    config = json.loads(
        re.search(r'<script id="player-config" type="application/json">(.*?)</script>', html).group(1)
    )
    assert config["eventsUrl"] == reverse("recordings:session_events", args=[session.pk])
    assert config["live"] is False
    views = AuditRecord.objects.filter(action="recording.view", target_id=str(session.pk))
    assert [(r.actor, r.detail["how"]) for r in views] == [("carol", "page")]
    plain = recorded(statement_events(1))
    html = carol_client.get(reverse("recordings:session_detail", args=[plain.pk])).content.decode()
    assert '<span id="client-tls">not encrypted</span>' in html


@pytest.mark.django_db(transaction=True)
def test_the_events_api_gives_the_timeline_in_pages(carol_client):
    session = recorded(
        [
            *approval_events("bob"),
            (Event.Kind.STATEMENT, {"text": "SELECT card FROM cards", "params": []}),
            (
                Event.Kind.DECISION,
                {
                    "action": "deny",
                    "rule": "no-cards",
                    "policy": "default",
                    "policy_version": 2,
                    "message": "cards are off limits",
                },
            ),
            (Event.Kind.ERROR, {"code": "42501", "message": "denied by rule no-cards", "source": "gateway"}),
            *statement_events(1),
        ]
    )
    url = reverse("recordings:session_events", args=[session.pk])
    first = orjson.loads(carol_client.get(url, {"limit": 4}).content)
    assert [e["seq"] for e in first["events"]] == [1, 2, 3, 4]
    assert (first["more"], first["last_seq"], first["event_count"], first["status"]) == (True, 4, 12, "ended")
    rest = orjson.loads(carol_client.get(url, {"after": 4}).content)
    events = first["events"] + rest["events"]
    assert [e["seq"] for e in events] == list(range(1, 13)) and rest["more"] is False
    kinds = [e["kind"] for e in events]
    assert kinds == [
        "session_start", "statement", "decision", "approval", "result",
        "statement", "decision", "error",
        "statement", "decision", "result", "session_end",
    ]  # fmt: skip
    assert events[1]["payload"]["text"] == "DELETE FROM invoices WHERE id = 7"
    assert events[2]["payload"]["action"] == "review"
    assert events[3]["payload"] == {
        "request_id": 41,
        "state": "approved",
        "by": "bob",
        "reason": "ticket OPS-12",
    }
    assert (events[6]["payload"]["action"], events[6]["payload"]["rule"]) == ("deny", "no-cards")
    assert events[7]["payload"]["code"] == "42501"
    assert events[10]["payload"]["columns"] == ["id", "total"] and events[10]["payload"]["first_rows"] == [
        ["0", "9.99"]
    ]
    assert all(e["offset_ms"] >= 0 and e["at"].endswith("+00:00") for e in events)
    assert carol_client.get(url, {"after": "x"}).status_code == 400
    # One view record for the page of pages, not one per page.
    assert AuditRecord.objects.filter(action="recording.view", target_id=str(session.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_integrity_badge_says_verified_or_names_the_first_broken_event(carol_client):
    session = recorded(statement_events(3))
    url = reverse("recordings:session_integrity", args=[session.pk])
    intact = carol_client.get(url).json()
    assert (intact["ok"], intact["summary"], intact["event_count"]) == (
        True,
        "chain verified, seal valid",
        11,
    )
    Event.objects.filter(session=session, seq=7).update(payload={"text": "SELECT 1", "params": []})
    tampered = carol_client.get(url).json()
    assert (tampered["ok"], tampered["first_broken_seq"]) == (False, 7)
    assert tampered["summary"].startswith("broken at event 7: event 7 does not match its hash")


@pytest.mark.django_db(transaction=True)
def test_a_jsonl_export_verifies_offline_with_the_published_key_and_fails_when_changed(
    carol_client, tmp_path
):
    session = recorded(statement_events(3))
    pem = Client().get(reverse("recordings:public_key"))  # no login: the key is public
    assert pem.status_code == 200 and pem.content.startswith(b"-----BEGIN PUBLIC KEY-----")
    (tmp_path / "key.pem").write_bytes(pem.content)
    keys = load_public_keys([tmp_path / "key.pem"])

    response = carol_client.get(reverse("recordings:export_jsonl", args=[session.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="airlock-session-{session.pk}.jsonl"'
    lines = b"".join(response.streaming_content).splitlines()
    assert len(lines) == 1 + 11 + 1
    assert orjson.loads(lines[0])["session"]["agent"] == "billing-bot"
    check = export.verify_lines(lines, keys)
    assert (check.ok, check.event_count, check.sealed) == (True, 11, True)
    assert AuditRecord.objects.get(action="recording.export").detail == {
        "format": "jsonl",
        "events": 11,
        "sealed": True,
    }

    edited = orjson.loads(lines[5])
    edited["payload"]["first_rows"] = [["1", "0.01"]]
    changed = [*lines[:5], orjson.dumps(edited), *lines[6:]]
    assert export.verify_lines(changed, keys).first_broken_seq == 5
    # Dropping the last event (and recomputing nothing) no longer matches the seal.
    cut = [*lines[:-2], lines[-1]]
    assert "the seal covers 11 events, the file holds 10" in export.verify_lines(cut, keys).reason
    # Every hash recomputed after an edit: only the seal can tell, and it does.
    forged = _rechained(lines, 5, edited)
    assert export.verify_lines(forged, keys).reason.startswith("the seal covers 11 events")
    other = load_public_keys([_other_key(tmp_path)])
    assert export.verify_lines(lines, other).reason == "the seal was made by a key other than the one given"
    assert not export.verify_lines(lines[:-1], keys).ok  # no seal line


def _rechained(lines: list[bytes], seq: int, replacement: dict) -> list[bytes]:  # type: ignore[type-arg]
    from recordings import chain

    header = orjson.loads(lines[0])
    prev = header["genesis_hash"]
    out = [lines[0]]
    for raw in lines[1:-1]:
        event = orjson.loads(raw)
        if event["seq"] == seq:
            event = replacement
        at = datetime.fromisoformat(event["at"])
        event["hash"] = chain.event_hash(
            prev, chain.canonical_event(event["seq"], at, event["offset_ms"], event["kind"], event["payload"])
        )
        prev = event["hash"]
        out.append(orjson.dumps(event))
    return [*out, lines[-1]]


def _other_key(tmp_path):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "other.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.mark.django_db(transaction=True)
def test_a_terminal_session_exports_as_asciicast_v2(carol_client):
    session = recorded(terminal_events(), protocol="ssh", connection_name="web-1")
    response = carol_client.get(reverse("recordings:export_cast", args=[session.pk]), {"download": "1"})
    assert response.status_code == 200 and response["Content-Type"] == "application/x-asciicast"
    lines = [orjson.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    header, events = lines[0], lines[1:]
    assert (header["version"], header["width"], header["height"]) == (2, 80, 24)
    assert header["title"] == "billing-bot@web-1 (ssh)"
    assert [(kind, data) for _, kind, data in events] == [
        ("o", "deploy@web-1:~$ "),
        ("i", "l"),
        ("i", "s -la /srv\r"),
        ("o", "ls -la /srv\r\ntotal 8\r\ndrwxr-xr-x 2 root root 4096 app\r\n"),
        ("o", "deploy@web-1:~$ "),
    ]
    times = [t for t, _, _ in events]
    assert times == sorted(times) and all(t >= 0 for t in times)
    assert AuditRecord.objects.filter(action="recording.export", detail__format="asciicast").count() == 1
    # A database session has no terminal to play.
    db_session = recorded(statement_events(1))
    assert carol_client.get(reverse("recordings:export_cast", args=[db_session.pk])).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_live_session_exports_its_chain_unsealed(carol_client, alice):
    import asyncio

    from recordings.writer import SessionRecorder

    async def start_and_leave() -> str:
        recorder = await SessionRecorder.start(
            protocol="postgres", agent_name="billing-bot", connection_name="shop"
        )
        recorder.append("statement", {"text": "SELECT 1", "params": []})
        while recorder._state.seq < 2:
            await asyncio.sleep(0.01)
        return str(recorder.session_id)

    session_id = asyncio.run(asyncio.wait_for(start_and_leave(), 20))
    lines = b"".join(
        carol_client.get(reverse("recordings:export_jsonl", args=[session_id])).streaming_content
    ).splitlines()
    assert len(lines) == 4
    check = export.verify_lines(lines, {})
    assert (check.ok, check.event_count) == (False, 2)
    assert check.reason == "the session was live when exported: its chain is intact but not sealed"


# --- who sees what --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_sees_only_the_sessions_in_which_they_decided(bob, mallory):
    decided = recorded(approval_events("bob"))
    not_theirs = recorded(approval_events("erin"))
    client = Client()
    client.force_login(bob)
    assert listed(client) == [str(decided.pk)]
    assert client.get(reverse("recordings:session_detail", args=[decided.pk])).status_code == 200
    assert client.get(reverse("recordings:export_jsonl", args=[decided.pk])).status_code == 200
    for name in ("session_detail", "session_events", "session_integrity", "export_jsonl"):
        assert client.get(reverse(f"recordings:{name}", args=[not_theirs.pk])).status_code == 403, name
    # Nothing was recorded as seen or exported for the refused fetches.
    assert not AuditRecord.objects.filter(target_id=str(not_theirs.pk)).exists()
    client.force_login(mallory)
    assert client.get(reverse("recordings:session_list")).status_code == 403


@pytest.mark.django_db
def test_an_unknown_session_is_404_and_anonymous_fetches_go_to_login(carol_client):
    missing = "00000000-0000-4000-8000-000000000000"
    assert carol_client.get(reverse("recordings:session_detail", args=[missing])).status_code == 404
    for name in ("session_detail", "session_events", "session_integrity", "export_jsonl", "export_cast"):
        response = Client().get(reverse(f"recordings:{name}", args=[missing]))
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), name


def test_every_recordings_url_is_in_the_console_access_table():
    from console.tests.test_access import ROUTES
    from recordings import urls

    names = {f"recordings:{p.name}" for p in urls.urlpatterns}
    assert names - {route.name for route in ROUTES} == set()


@pytest.mark.django_db(transaction=True)
def test_a_reviewer_who_decided_a_request_of_the_session_sees_it_with_who_decided_and_why(bob, carol):
    from django.utils import timezone

    from approvals.models import ApprovalDecision, ApprovalRequest

    session = recorded(statement_events(1))
    other = recorded(statement_events(1))
    request = ApprovalRequest.objects.create(
        status="approved",
        protocol="postgres",
        session_id=session.pk,
        agent_name="billing-bot",
        connection_name="shop",
        statement="DELETE FROM invoices WHERE id = 7",
        rule="writes",
        binding_hash="0" * 64,
        expires_at=timezone.now() + timedelta(minutes=5),
        decided_by=bob,
        decided_by_name="bob",
    )
    ApprovalDecision.objects.create(
        request=request, reviewer=bob, reviewer_name="bob", verdict="approve", comment="ticket OPS-12"
    )
    client = Client()
    client.force_login(bob)
    assert listed(client) == [str(session.pk)]
    assert client.get(reverse("recordings:session_detail", args=[other.pk])).status_code == 403
    html = client.get(reverse("recordings:session_detail", args=[session.pk])).content.decode()
    section = html[html.index('id="approval-requests"') :]
    assert "DELETE FROM invoices WHERE id = 7" in section
    assert "bob (approve)" in section and "bob: ticket OPS-12" in section
    # The auditor sees the same list; a session without requests shows none.
    client.force_login(carol)
    assert (
        'id="approval-requests"'
        not in client.get(reverse("recordings:session_detail", args=[other.pk])).content.decode()
    )
