"""The live session websocket against the real ASGI application and the Redis channel layer."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from console.asgi import application
from recordings import live
from recordings.tests.conftest import in_db
from recordings.tests.factories import BILLING_BOT, approval_events
from recordings.writer import SessionRecorder

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]
WAIT = 10  # seconds any single await may take


@pytest.fixture(autouse=True)
def _short_lived_connections():  # type: ignore[no-untyped-def]
    """The consumer's database calls run on asgiref's worker threads, which outlive the test;
    with CONN_MAX_AGE 0 each call closes its connection, so the test database can be dropped."""
    from django.db import connections

    saved = connections.settings["default"].get("CONN_MAX_AGE", 0)
    connections.settings["default"]["CONN_MAX_AGE"] = 0
    yield
    connections.settings["default"]["CONN_MAX_AGE"] = saved


@pytest.fixture
def cookies(alice, bob, carol, mallory) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    jar = {}
    for user in (alice, bob, carol, mallory):
        client = Client()
        client.force_login(user)
        jar[user.username] = f"sessionid={client.cookies['sessionid'].value}".encode()
    return jar


def socket(
    session_id: Any, cookie: bytes | None, *, after: int = 0, origin: bytes = b"http://127.0.0.1"
) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, f"/ws/recordings/{session_id}/?after={after}", headers=headers)


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return orjson.loads(await communicator.receive_from(timeout=WAIT))


async def receive_events_until(communicator: WebsocketCommunicator, seq: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["seq"] < seq:
        message = await receive(communicator)
        assert message["type"] == "events", message
        events += message["events"]
    return events


async def started() -> SessionRecorder:
    recorder = await SessionRecorder.start(**BILLING_BOT)
    return recorder


async def committed(recorder: SessionRecorder, seq: int) -> None:
    async with asyncio.timeout(WAIT):
        while recorder._state.seq < seq:
            await asyncio.sleep(0.01)


async def test_an_auditor_watches_a_live_session_event_by_event_until_it_ends(cookies):
    recorder = await started()
    recorder.append("statement", {"text": "SELECT 1", "params": []})
    await committed(recorder, 2)
    communicator = socket(recorder.session_id, cookies["carol"], after=1)
    try:
        connected, _ = await communicator.connect(timeout=WAIT)
        assert connected
        caught_up = await receive(communicator)
        assert [(e["seq"], e["kind"]) for e in caught_up["events"]] == [(2, "statement")]
        recorder.append("statement", {"text": "SELECT * FROM invoices", "params": []})
        recorder.append("result", {"rows": 0, "command_tag": "SELECT 0", "columns": ["id"], "first_rows": []})
        arrived = await receive_events_until(communicator, 4)
        assert [(e["seq"], e["kind"]) for e in arrived] == [(3, "statement"), (4, "result")]
        assert arrived[0]["payload"]["text"] == "SELECT * FROM invoices"
        await recorder.close(reason="client disconnected")
        end = await receive_events_until(communicator, 5)
        assert [e["kind"] for e in end] == ["session_end"]
        assert await receive(communicator) == {
            "type": "ended",
            "status": "ended",
            "reason": "client disconnected",
        }
        assert await communicator.receive_nothing(timeout=0.3)
    finally:
        await communicator.disconnect()
        await recorder.close(reason="test over")
    from audit.models import AuditRecord

    watched = await in_db(
        lambda: list(AuditRecord.objects.filter(action="recording.view").values_list("actor", "detail"))
    )
    assert watched == [("carol", {"how": "live"})]


async def test_events_still_arrive_when_the_channel_layer_message_is_lost(cookies, settings, monkeypatch):
    settings.RECORDING_LIVE_POLL_SECONDS = 0.1
    monkeypatch.setattr(live.Announcer, "announce", lambda self, message: None)
    recorder = await started()
    communicator = socket(recorder.session_id, cookies["alice"], after=1)
    try:
        assert (await communicator.connect(timeout=WAIT))[0]
        recorder.append("statement", {"text": "SELECT 2", "params": []})
        arrived = await receive_events_until(communicator, 2)
        assert arrived[0]["payload"]["text"] == "SELECT 2"
    finally:
        await communicator.disconnect()
        await recorder.close(reason="test over")


@pytest.mark.parametrize("persona", ["anonymous", "mallory", "bob"])
async def test_a_person_without_the_right_is_refused_and_sees_nothing(cookies, persona):
    recorder = await started()
    communicator = socket(recorder.session_id, cookies.get(persona))
    try:
        connected, code = await communicator.connect(timeout=WAIT)
        assert not connected
        assert code == (4401 if persona == "anonymous" else 4403)
        recorder.append("statement", {"text": "SELECT secret FROM vault", "params": []})
        await committed(recorder, 2)
        assert await communicator.receive_nothing(timeout=0.3)
    finally:
        await communicator.disconnect()
        await recorder.close(reason="test over")


async def test_another_sites_page_cannot_open_the_stream(cookies):
    recorder = await started()
    communicator = socket(recorder.session_id, cookies["carol"], origin=b"https://evil.example")
    try:
        connected, _ = await communicator.connect(timeout=WAIT)
        assert not connected
    finally:
        await communicator.disconnect()
        await recorder.close(reason="test over")


async def test_a_reviewer_who_decided_in_the_session_may_watch_it(cookies):
    recorder = await started()
    for kind, payload in approval_events("bob"):
        recorder.append(kind, payload)
    await committed(recorder, 5)
    communicator = socket(recorder.session_id, cookies["bob"])
    try:
        assert (await communicator.connect(timeout=WAIT))[0]
        events = await receive_events_until(communicator, 5)
        assert [e["kind"] for e in events][:2] == ["session_start", "statement"]
    finally:
        await communicator.disconnect()
        await recorder.close(reason="test over")


async def test_a_watcher_who_loses_the_role_is_cut_off_before_the_next_event(cookies, carol):
    recorder = await started()
    communicator = socket(recorder.session_id, cookies["carol"], after=1)
    try:
        assert (await communicator.connect(timeout=WAIT))[0]

        def leave_auditors() -> None:
            carol.groups.clear()

        await in_db(leave_auditors)
        recorder.append("statement", {"text": "SELECT secret FROM vault", "params": []})
        assert await receive(communicator) == {"type": "forbidden"}
        output = await communicator.receive_output(timeout=WAIT)
        assert output == {"type": "websocket.close", "code": 4403}
        assert await communicator.receive_nothing(timeout=0.3)
    finally:
        await communicator.disconnect()
        await recorder.close(reason="test over")


async def test_a_busy_sessions_progress_is_announced_at_most_once_a_second_and_its_end_at_once():
    import time
    import uuid

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    session_id = uuid.uuid4()
    channel = await layer.new_channel()
    await layer.group_add(live.events_group(session_id), channel)
    announcer = live.Announcer(session_id)
    received: list[tuple[float, dict[str, Any]]] = []

    async def listen() -> None:
        while True:
            message = await layer.receive(channel)
            received.append((time.monotonic(), message))

    listener = asyncio.get_running_loop().create_task(listen())
    try:
        start = time.monotonic()
        for seq in range(1, 31):  # a batch every 50 ms for 1.5 s
            announcer.announce(live.events_message(session_id, seq))
            await asyncio.sleep(0.05)
        announcer.announce(live.ended_message(session_id, "ended", "client disconnected"))
        ended_at = time.monotonic()
        await announcer.drain()
        async with asyncio.timeout(WAIT):
            while not received or received[-1][1]["type"] != live.ENDED:
                await asyncio.sleep(0.01)
    finally:
        listener.cancel()
        await layer.group_discard(live.events_group(session_id), channel)
    progress = [(at, m["last_seq"]) for at, m in received if m["type"] == live.EVENTS]
    # The first at once, then no two within the interval, each the newest there was.
    assert progress[0][1] == 1 and progress[0][0] - start < 0.5
    assert 2 <= len(progress) <= 3, progress
    assert all(
        b[0] - a[0] >= live.ANNOUNCE_INTERVAL * 0.9 for a, b in zip(progress, progress[1:], strict=False)
    )
    assert [seq for _, seq in progress] == sorted(seq for _, seq in progress)
    assert progress[-1][1] == 30  # nothing is left unannounced before the end
    assert received[-1][1]["type"] == live.ENDED and received[-1][0] - ended_at < 1.5
