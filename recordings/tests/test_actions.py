"""Terminating live sessions, legal holds and retention, through their action functions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from recordings import actions, live
from recordings.models import ConnectionRule, Event, Session, TerminationRequest
from recordings.tasks import apply_retention
from recordings.tests.factories import approval_events, recorded, statement_events


def make(ended_days_ago: float | None, connection: str = "shop", **fields) -> Session:  # type: ignore[no-untyped-def]
    now = timezone.now()
    if ended_days_ago is None:
        return Session.objects.create(
            protocol="postgres", agent_name="billing-bot", connection_name=connection, **fields
        )
    ended = now - timedelta(days=ended_days_ago)
    session = Session.objects.create(
        protocol="postgres",
        agent_name="billing-bot",
        connection_name=connection,
        status="ended",
        started_at=ended - timedelta(minutes=5),
        ended_at=ended,
        **fields,
    )
    Event.objects.create(
        session=session, seq=1, at=session.started_at, offset_ms=0, kind="session_start", hash="0" * 64
    )
    return session


# --- terminate ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(30)
def test_without_a_channel_layer_one_poll_per_interval_finds_the_request_among_all_sessions(
    alice, settings, monkeypatch
):
    from asgiref.sync import sync_to_async

    settings.RECORDING_TERMINATE_POLL_SECONDS = 0.1
    sessions = [make(None) for _ in range(20)]
    polls: list[list[str]] = []
    real = live._requested_terminations

    def counted(ids: list[str]) -> list[tuple[str, str, str]]:
        polls.append(sorted(ids))
        return real(ids)

    monkeypatch.setattr(live, "_requested_terminations", counted)
    monkeypatch.setattr(live, "_channel_layer", lambda: None)  # nothing to listen on

    def terminate() -> None:
        from django.db import connections

        try:
            actions.do_terminate_session(alice, sessions[3], "stop it")
        finally:
            connections.close_all()  # this thread's connection, before the test database goes

    async def scenario() -> dict[str, tuple[str, str]]:
        told: dict[str, tuple[str, str]] = {}
        for session in sessions:
            assert await live.watch_for_termination(
                session.pk, lambda by, why, pk=str(session.pk): told.setdefault(pk, (by, why))
            )
        await asyncio.sleep(0.3)  # a few polls with nothing to find
        assert told == {}
        await sync_to_async(terminate, thread_sensitive=False)()
        while not told:
            await asyncio.sleep(0.05)
        await live.close_termination_listener()
        return told

    told = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert told == {str(sessions[3].pk): ("alice", "stop it")}
    everyone = sorted(str(s.pk) for s in sessions)
    rest = sorted(set(everyone) - {str(sessions[3].pk)})
    # One query per poll for every watched session (the terminated one no longer watched
    # once told), never one per session.
    assert polls.count(everyone) >= 2 and all(ids in (everyone, rest) for ids in polls)


def test_the_live_page_says_a_termination_is_on_its_way(alice, carol):
    session = make(None)
    client = Client()
    client.force_login(carol)
    url = reverse("recordings:session_detail", args=[session.pk])
    assert 'id="termination-pending"' not in client.get(url).content.decode()
    actions.do_terminate_session(alice, session, "runaway loop")
    page = client.get(url).content.decode()
    assert 'id="termination-pending"' in page and "Termination requested by alice" in page
    assert "(runaway loop)" in page
    Session.objects.filter(pk=session.pk).update(status="terminated")
    assert 'id="termination-pending"' not in client.get(url).content.decode()


def test_asking_again_keeps_the_first_request_and_is_audited_again(alice, bob):
    session = make(None)
    actions.do_terminate_session(alice, session, "first")
    actions.do_terminate_session(alice, session, "second")
    request = TerminationRequest.objects.get(session=session)
    assert (request.requested_by, request.reason) == ("alice", "first")
    records = AuditRecord.objects.filter(action="session.terminate").order_by("id")
    assert [(r.detail["reason"], r.detail.get("first_requested_by")) for r in records] == [
        ("first", None),
        ("second", "alice"),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(30)
def test_terminating_tells_the_gateway_who_and_why_after_commit_and_is_audited(alice):
    session = make(None)
    layer = get_channel_layer()

    async def listen():  # type: ignore[no-untyped-def]
        channel = await layer.new_channel()
        await layer.group_add(live.gateway_group(session.pk), channel)
        return channel

    channel = async_to_sync(listen)()
    try:
        actions.do_terminate_session(alice, session, "  runaway   DELETE loop ")

        async def receive():  # type: ignore[no-untyped-def]
            return await asyncio.wait_for(layer.receive(channel), 5)

        message = async_to_sync(receive)()
    finally:
        async_to_sync(layer.group_discard)(live.gateway_group(session.pk), channel)
    assert message == {
        "type": "session.terminate",
        "session_id": str(session.pk),
        "by": "alice",
        "reason": "runaway DELETE loop",
    }
    record = AuditRecord.objects.get(action="session.terminate")
    assert (record.actor, record.target_id, record.detail) == (
        "alice",
        str(session.pk),
        {"reason": "runaway DELETE loop", "by": "alice"},
    )
    assert (
        live.terminated_reason("alice", "runaway DELETE loop") == "terminated by alice: runaway DELETE loop"
    )


@pytest.mark.django_db
def test_a_session_that_is_not_live_or_a_missing_reason_is_refused(alice):
    with pytest.raises(ValidationError, match="no longer live"):
        actions.do_terminate_session(alice, make(1), "stop")
    with pytest.raises(ValidationError, match="Say why"):
        actions.do_terminate_session(alice, make(None), "   ")
    assert not AuditRecord.objects.filter(action="session.terminate").exists()


@pytest.mark.django_db(transaction=True)
def test_who_may_terminate_from_the_page(alice, bob, carol):
    live_session = make(None)
    decided = recorded(approval_events("bob"))
    Session.objects.filter(pk=decided.pk).update(status="live")  # as if still running
    url = lambda s: reverse("recordings:session_terminate", args=[s.pk])  # noqa: E731
    client = Client()

    client.force_login(carol)  # auditors watch, they do not stop
    assert client.post(url(live_session), {"reason": "x"}).status_code == 403
    client.force_login(bob)  # a reviewer only where he decided
    assert client.post(url(live_session), {"reason": "x"}).status_code == 403
    assert client.post(url(decided), {"reason": "the approval was a mistake"}).status_code == 302
    client.force_login(alice)
    response = client.post(url(live_session), {"reason": "off hours"}, follow=True)
    assert "The gateway was told to terminate the session." in response.content.decode()
    assert sorted(AuditRecord.objects.filter(action="session.terminate").values_list("actor", flat=True)) == [
        "alice",
        "bob",
    ]
    # The page offers the form only to those who may use it.
    client.force_login(carol)
    assert (
        'id="terminate-form"'
        not in client.get(reverse("recordings:session_detail", args=[live_session.pk])).content.decode()
    )
    client.force_login(alice)
    assert (
        'id="terminate-form"'
        in client.get(reverse("recordings:session_detail", args=[live_session.pk])).content.decode()
    )


# --- legal holds and retention --------------------------------------------------------------


@pytest.mark.django_db
def test_retention_deletes_what_expired_under_each_rule_and_keeps_what_is_held(settings, alice, carol):
    settings.RECORDING_RETENTION_DAYS = 30
    old = make(31)
    recent = make(29)
    still_live = make(None, started_at=timezone.now() - timedelta(days=400))
    held = make(60)
    actions.do_set_legal_hold(carol, held, True, "litigation 2026-17")
    crm_old = make(10, connection="crm")
    crm_recent = make(5, connection="crm")
    actions.do_set_connection_retention(alice, "crm", 7)
    vault_old = make(365, connection="vault")
    actions.do_set_connection_hold(carol, "vault", True, "regulator request")
    forever = make(900, connection="ledger")
    actions.do_set_connection_retention(alice, "ledger", 0)

    result = apply_retention()

    assert result == {"default": 1, "connection crm": 1, "connection ledger": 0}
    remaining = set(Session.objects.values_list("pk", flat=True))
    assert remaining == {s.pk for s in (recent, still_live, held, crm_recent, vault_old, forever)}
    assert not Event.objects.filter(session_id__in=[old.pk, crm_old.pk]).exists()
    deletions = {r.detail["rule"]: r for r in AuditRecord.objects.filter(action="recording.retention_delete")}
    assert set(deletions) == {"default", "connection crm"}
    assert deletions["default"].actor == "retention"
    assert deletions["default"].detail["retention_days"] == 30
    assert [s["id"] for s in deletions["default"].detail["sessions"]] == [str(old.pk)]
    assert deletions["connection crm"].detail["sessions"][0]["connection"] == "crm"
    assert apply_retention() == {"default": 0, "connection crm": 0, "connection ledger": 0}

    # Released holds let retention do its work.
    actions.do_set_legal_hold(carol, held, False)
    actions.do_set_connection_hold(alice, "vault", False)
    assert apply_retention()["default"] == 2
    assert not Session.objects.filter(pk__in=[held.pk, vault_old.pk]).exists()


@pytest.mark.django_db
def test_retention_is_off_by_default_and_scheduled_hourly(settings):
    from django.conf import settings as django_settings

    make(5000)
    settings.RECORDING_RETENTION_DAYS = 0
    assert apply_retention() == {"default": 0}
    assert Session.objects.count() == 1
    assert django_settings.CELERY_BEAT_SCHEDULE["recordings-retention"] == {
        "task": "recordings.tasks.apply_retention",
        "schedule": 3600,
    }


@pytest.mark.django_db
def test_holds_and_retention_changes_are_audited_and_checked(alice, carol):
    session = make(1)
    with pytest.raises(ValidationError, match="Say why"):
        actions.do_set_legal_hold(carol, session, True, "")
    actions.do_set_legal_hold(carol, session, True, "audit 2026")
    actions.do_set_legal_hold(carol, session, True, "again")  # no change, no record
    with pytest.raises(ValidationError):
        actions.do_set_connection_retention(alice, "shop", -1)
    actions.do_set_connection_retention(alice, "shop", 90)
    actions.do_set_connection_hold(carol, "shop", True, "dispute")
    records = list(AuditRecord.objects.order_by("id").values_list("actor", "action", "after"))
    assert records == [
        ("carol", "recording.hold", {"legal_hold": True}),
        (
            "alice",
            "recordings.connection_retention",
            {"connection": "shop", "retention_days": 90, "legal_hold": False, "hold_reason": ""},
        ),
        (
            "carol",
            "recordings.connection_hold",
            {"connection": "shop", "retention_days": 90, "legal_hold": True, "hold_reason": "dispute"},
        ),
    ]
    rule = ConnectionRule.objects.get()
    assert (rule.retention_days, rule.legal_hold, rule.updated_by) == (90, True, "carol")


@pytest.mark.django_db
def test_the_retention_page_lets_auditors_hold_and_only_admins_set_days(alice, carol):
    client = Client()
    client.force_login(carol)
    url = reverse("recordings:retention")
    assert (
        client.post(url, {"action": "retention", "connection": "shop", "retention_days": "3"}).status_code
        == 403
    )
    client.post(url, {"action": "hold", "connection": "shop", "reason": "case 9"})
    assert ConnectionRule.objects.get(connection_name="shop").legal_hold
    client.force_login(alice)
    client.post(url, {"action": "retention", "connection": "shop", "retention_days": "3"})
    assert ConnectionRule.objects.get(connection_name="shop").retention_days == 3
    response = client.post(
        url, {"action": "retention", "connection": "shop", "retention_days": "soon"}, follow=True
    )
    assert "whole number of days" in response.content.decode()
    page = client.get(url).content.decode()
    assert 'data-connection="shop"' in page and "case 9" in page and "3 days" in page


@pytest.mark.django_db(transaction=True)
def test_a_session_put_on_hold_from_its_page(carol):
    session = recorded(statement_events(1))
    client = Client()
    client.force_login(carol)
    url = reverse("recordings:session_hold", args=[session.pk])
    response = client.post(url, {"hold": "1", "reason": ""}, follow=True)
    assert "Say why the session is held." in response.content.decode()
    client.post(url, {"hold": "1", "reason": "incident 42"})
    assert Session.objects.get(pk=session.pk).legal_hold
    assert Session.objects.get(pk=session.pk).verify().ok  # the hold is not part of the chain
    client.post(url, {"hold": "0"})
    assert not Session.objects.get(pk=session.pk).legal_hold
