"""The inbox websocket: only the right reviewers receive, and nothing leaks to anyone else."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections
from django.test import Client

from approvals import actions
from approvals.tests.factories import in_db, make_request, review_decision, reviewer
from console.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture(autouse=True)
async def _close_consumer_connections():
    yield
    # The consumer's database work runs in asgiref's shared thread; its connection must be
    # closed before pytest-django can flush the test database.
    await database_sync_to_async(connections.close_all)()


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@asynccontextmanager
async def inbox(user=None, origin=ORIGIN):
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await in_db(_session_cookie, user)))
    communicator = WebsocketCommunicator(application, "/ws/approvals/", headers=headers)
    try:
        yield communicator
    finally:
        await communicator.disconnect(timeout=TIMEOUT)


async def _connected(communicator) -> dict:
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def _refused(communicator) -> None:
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert not connected


async def test_anonymous_visitors_and_people_without_the_reviewer_role_are_refused(
    world, alice, carol, mallory
):
    async with inbox() as anonymous:
        await _refused(anonymous)
    for person in (alice, carol, mallory):
        async with inbox(person) as communicator:
            await _refused(communicator)


async def test_a_page_of_another_origin_is_refused(world, bob):
    async with inbox(bob, origin=(b"origin", b"https://evil.example")) as communicator:
        await _refused(communicator)
    async with inbox(bob, origin=None) as communicator:
        await _refused(communicator)


async def test_a_new_request_reaches_its_reviewers_and_nobody_else(world, bob):
    finance = await in_db(reviewer, "frank", "finance")
    async with inbox(bob) as bobs, inbox(world.dave) as daves, inbox(finance) as franks:
        assert await _connected(bobs) == {"type": "count", "pending": 0}
        assert await _connected(daves) == {"type": "count", "pending": 0}
        assert await _connected(franks) == {"type": "count", "pending": 0}
        req = await in_db(make_request, world)
        card = await bobs.receive_json_from(timeout=TIMEOUT)
        assert card["type"] == "request" and card["id"] == req.pk and card["section"] == "pending"
        assert "DELETE FROM orders" in card["html"] and 'data-verb="approve"' in card["html"]
        assert "billing-bot" in card["html"] and "dave" in card["html"]
        assert card["notify"]["title"] == "Approval needed: billing-bot on shop"
        assert "DELETE" not in str(card["notify"])
        assert await bobs.receive_json_from(timeout=TIMEOUT) == {"type": "count", "pending": 1}
        # dave is a reviewer in dba but billing-bot acts for him; frank reviews finance.
        assert await daves.receive_nothing(timeout=0.5)
        assert await franks.receive_nothing(timeout=0.2)


async def test_a_decided_request_moves_to_history_in_every_open_inbox(world, bob):
    async with inbox(bob) as bobs, inbox(world.erin) as erins:
        await _connected(bobs), await _connected(erins)
        req = await in_db(make_request, world)
        for communicator in (bobs, erins):
            assert (await communicator.receive_json_from(timeout=TIMEOUT))["section"] == "pending"
            assert (await communicator.receive_json_from(timeout=TIMEOUT))["pending"] == 1
        await in_db(actions.do_reject, world.erin, req.pk, reason="wrong shard")
        for communicator in (bobs, erins):
            card = await communicator.receive_json_from(timeout=TIMEOUT)
            assert (card["id"], card["status"], card["section"]) == (req.pk, "rejected", "history")
            assert card["notify"] is None
            assert "wrong shard" in card["html"] and "erin" in card["html"]
            assert 'data-verb="approve"' not in card["html"]
            assert await communicator.receive_json_from(timeout=TIMEOUT) == {"type": "count", "pending": 0}


async def test_permission_is_checked_again_on_every_event(world, bob):
    async with inbox(bob) as bobs:
        await _connected(bobs)
        role = await in_db(Group.objects.get, name=settings.AIRLOCK_ROLE_GROUPS["reviewer"])
        await in_db(bob.groups.remove, role)
        await in_db(make_request, world)
        # No card: the socket is closed instead.
        output = await bobs.receive_output(timeout=TIMEOUT)
        assert output == {"type": "websocket.close", "code": 4403}


async def test_a_logged_out_session_stops_receiving(world, bob):
    from django.contrib.sessions.models import Session

    async with inbox(bob) as bobs:
        await _connected(bobs)
        await in_db(Session.objects.all().delete)
        await in_db(make_request, world)
        output = await bobs.receive_output(timeout=TIMEOUT)
        assert output == {"type": "websocket.close", "code": 4403}


async def test_leaving_the_reviewer_group_stops_the_cards_of_that_group(world, bob):
    async with inbox(bob) as bobs:
        await _connected(bobs)
        await in_db(bob.groups.remove, await in_db(Group.objects.get, name="dba"))
        await in_db(make_request, world)
        assert await bobs.receive_nothing(timeout=0.5)


async def test_what_the_browser_sends_is_ignored(world, bob):
    async with inbox(bob) as bobs:
        await _connected(bobs)
        await bobs.send_json_to({"type": "approve", "id": 1})
        assert await bobs.receive_nothing(timeout=0.2)


async def test_a_notification_is_only_for_new_requests_the_person_can_decide(world, bob):
    async with inbox(bob) as bobs:
        await _connected(bobs)
        req = await in_db(make_request, world, decision=review_decision(approvals=2))
        assert (await bobs.receive_json_from(timeout=TIMEOUT))["notify"] is not None
        await bobs.receive_json_from(timeout=TIMEOUT)
        await in_db(actions.do_approve, bob, req.pk)
        card = await bobs.receive_json_from(timeout=TIMEOUT)
        # Still pending (one of two approvals), no longer bob's to decide, no new notification.
        assert (card["status"], card["notify"]) == ("pending", None)
        assert "You have already decided" in card["html"]
        assert await bobs.receive_json_from(timeout=TIMEOUT) == {"type": "count", "pending": 0}


async def test_an_inbox_left_idle_still_receives(world, bob):
    # The channel layer's blocking read lasts 5 s on the Redis side; a client read timeout
    # shorter than that (redis-py 8's default) used to close every idle socket.
    async with inbox(bob) as bobs:
        await _connected(bobs)
        assert await bobs.receive_nothing(timeout=7, interval=0.5)
        req = await in_db(make_request, world)
        assert (await bobs.receive_json_from(timeout=TIMEOUT))["id"] == req.pk


# --- the work per event, measured in queries ---------------------------------------------------


def _consumer_of(user, session_key: str | None = None):
    from importlib import import_module

    from approvals.consumers import ApprovalInboxConsumer

    consumer = ApprovalInboxConsumer()
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key) if session_key else None
    consumer.scope = {"type": "websocket", "user": user, "session": session}
    consumer.user_id = user.pk
    return consumer


def _as_channels_hands_it_over(consumer):
    """The scope's session as Channels' SessionMiddleware leaves it: a LazyObject around the
    store, resolved before the consumer runs."""
    from django.utils.functional import LazyObject

    wrapped = LazyObject()
    wrapped._wrapped = consumer.scope["session"]
    consumer.scope["session"] = wrapped
    return consumer


def _logged_in_session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def test_an_event_costs_three_queries_the_re_check_included(world, bob, django_assert_num_queries):
    # The person with their roles and session, the request with the person's count, its
    # decisions: one query each.
    req = make_request(world, decision=review_decision(approvals=2))
    actions.do_approve(world.erin, req)
    consumer = _consumer_of(bob, _logged_in_session_key(bob))
    with django_assert_num_queries(3):
        card, count = consumer._payloads(req.pk, False)
    assert card["id"] == req.pk and card["section"] == "pending" and card["notify"] is None
    assert "erin" in card["html"]
    assert count == {"type": "count", "pending": 1}


def test_the_event_of_a_new_request_costs_two_queries(world, bob, django_assert_num_queries):
    # A request just created has no decisions to read: its card goes out a query sooner.
    req = make_request(world, decision=review_decision(approvals=2))
    consumer = _consumer_of(bob, _logged_in_session_key(bob))
    with django_assert_num_queries(2):
        card, count = consumer._payloads(req.pk, True)
    assert card["id"] == req.pk and card["section"] == "pending" and card["notify"] is not None
    assert count == {"type": "count", "pending": 1}
    # A decision made before that event was handled has its own event, which reads it.
    actions.do_approve(world.erin, req)
    with django_assert_num_queries(3):
        card, _ = consumer._payloads(req.pk, False)
    assert "erin" in card["html"]


def test_the_session_channels_wraps_is_checked_in_the_same_three_queries(
    world, bob, django_assert_num_queries
):
    req = make_request(world)
    key = _logged_in_session_key(bob)
    consumer = _as_channels_hands_it_over(_consumer_of(bob, key))
    with django_assert_num_queries(3):
        card, _ = consumer._payloads(req.pk, False)
    assert card["id"] == req.pk
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key=key).delete()
    assert consumer._payloads(req.pk, False) is None  # logged out


def test_the_per_event_check_refuses_what_the_slower_checks_refused(world, bob, mallory):
    # Each refusal the consumer made with one query per check, it makes with one query.
    req = make_request(world)
    key = _logged_in_session_key(bob)
    assert _consumer_of(bob, key)._payloads(req.pk, False)
    assert _consumer_of(mallory)._payloads(req.pk, False) is None  # not a reviewer
    outsider = reviewer("oscar", "ops")
    assert _consumer_of(outsider)._payloads(req.pk, False) == []  # not their group
    assert _consumer_of(world.dave)._payloads(req.pk, False) == []  # the agent acts for him
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key=key).delete()
    assert _consumer_of(bob, key)._payloads(req.pk, False) is None  # logged out
    bob.groups.remove(Group.objects.get(name=settings.AIRLOCK_ROLE_GROUPS["reviewer"]))
    assert _consumer_of(bob)._payloads(req.pk, False) is None  # no longer a reviewer
    bob.groups.add(Group.objects.get(name=settings.AIRLOCK_ROLE_GROUPS["reviewer"]))
    bob.is_active = False
    bob.save()
    assert _consumer_of(bob)._payloads(req.pk, False) is None  # disabled


def test_the_count_sent_with_a_card_is_the_count_of_requests_awaiting_the_person(world, bob):
    from approvals.models import ApprovalRequest

    first = make_request(world)
    make_request(world, params=("2",))
    third = make_request(world, params=("3",), decision=review_decision(approvals=2))
    actions.do_approve(bob, third)
    actions.do_approve(world.erin, first)
    for req in (first, third):
        _, count = _consumer_of(bob)._payloads(req.pk, False)
        assert count["pending"] == ApprovalRequest.objects.awaiting(bob).count() == 1


def test_a_sockets_later_events_are_checked_as_strictly_as_its_first(world, bob):
    # The per-event queries are built on the first event and run again: each change made
    # after it must still be seen by the next event, on the same socket.
    req = make_request(world)
    key = _logged_in_session_key(bob)
    consumer = _consumer_of(bob, key)
    assert consumer._payloads(req.pk, False)
    bob.groups.remove(Group.objects.get(name="dba"))
    assert consumer._payloads(req.pk, False) == []  # left the request's reviewer group
    bob.groups.add(Group.objects.get(name="dba"))
    assert consumer._payloads(req.pk, False)
    other = make_request(world, params=("2",))
    assert consumer._payloads(other.pk, False)[0]["id"] == other.pk  # another request
    from identity.models import Agent

    Agent.objects.filter(pk=world.agent.pk).update(on_behalf_of=bob)
    for_bob = make_request(world, params=("3",))
    assert consumer._payloads(for_bob.pk, False) == []  # the agent now acts for him
    reviewers = Group.objects.get(name=settings.AIRLOCK_ROLE_GROUPS["reviewer"])
    bob.groups.remove(reviewers)
    assert consumer._payloads(req.pk, False) is None  # no longer a reviewer
    bob.groups.add(reviewers)
    assert consumer._payloads(req.pk, False)
    type(bob).objects.filter(pk=bob.pk).update(is_active=False)
    assert consumer._payloads(req.pk, False) is None  # disabled
    type(bob).objects.filter(pk=bob.pk).update(is_active=True)
    assert consumer._payloads(req.pk, False)
    from django.contrib.sessions.models import Session

    Session.objects.filter(session_key=key).delete()
    assert consumer._payloads(req.pk, False) is None  # logged out
