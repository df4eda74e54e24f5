"""Replay, live watching and terminal playback in the real Chromium, against the real console."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from conftest import login
from gateway.tests.postgres.conftest import (  # noqa: F401 - fixtures
    billing_bot,
    gateway_factory,
    gw,
    make_connection,
    private_pg,
)
from recordings import live
from recordings.models import Event
from recordings.tests.factories import BILLING_BOT, terminal_events
from recordings.writer import SessionRecorder

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def loop() -> Iterator[tuple[Run, asyncio.AbstractEventLoop]]:
    """An event loop on its own thread, as the gateway's: Playwright's sync API holds this one."""
    event_loop = asyncio.new_event_loop()

    def serve() -> None:
        event_loop.run_forever()
        # Closed on its own thread: channels_redis flushes its connections in close().
        event_loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, event_loop).result(30)

    yield run, event_loop
    event_loop.call_soon_threadsafe(event_loop.stop)
    thread.join(10)


def statement(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (Event.Kind.STATEMENT, {"text": f"SELECT id, total FROM invoices WHERE id = {n}", "params": []}),
        (
            Event.Kind.DECISION,
            {"action": "allow", "rule": "reads", "policy": "default", "policy_version": 1, "message": ""},
        ),
        (
            Event.Kind.RESULT,
            {
                "rows": 1,
                "command_tag": "SELECT 1",
                "columns": ["id", "total"],
                "first_rows": [[str(n), f"{n}9.99"]],
            },
        ),
    ]


async def record_with_pauses() -> str:
    """Three statements 0.4 s apart (in recorded time), so playback has something to pace."""
    recorder = await SessionRecorder.start(**BILLING_BOT)
    for n in range(1, 4):
        for kind, payload in statement(n):
            recorder.append(kind, payload)
        await asyncio.sleep(0.4)
    await recorder.close(reason="client disconnected")
    return str(recorder.session_id)


REVEAL_LOG = """() => {
  window.revealed = []; window.batches = 0;
  new MutationObserver((mutations) => {
    window.batches += 1;
    for (const m of mutations) if (!m.target.hidden) window.revealed.push(Number(m.target.dataset.seq));
  }).observe(document.getElementById("timeline"), {attributes: true, subtree: true, attributeFilter: ["hidden"]});
}"""


def test_a_recorded_session_replays_statement_after_statement_with_its_results(
    console_server, page, carol, loop
):
    run, _ = loop
    session_id = run(record_with_pauses())
    login(page, console_server, "carol")
    page.goto(f"{console_server}/recordings/{session_id}/")
    player = page.locator("#player")
    expect(player).to_have_attribute("data-loaded", "all")
    expect(page.locator("#integrity")).to_have_text("chain verified, seal valid")
    expect(page.locator("#timeline li")).to_have_count(11)  # start, 3 x (statement, decision, result), end

    page.evaluate(REVEAL_LOG)
    page.select_option("#speed", "4")
    page.get_by_role("button", name="Play").click()
    expect(player).to_have_attribute("data-state", "playing")
    expect(player).to_have_attribute("data-state", "ended")
    # Every event after the start appeared once, in recording order, over several steps.
    assert page.evaluate("window.revealed") == list(range(2, 12))
    assert page.evaluate("window.batches") >= 3
    timeline = page.locator("#timeline")
    expect(timeline.locator("li.ev-statement code").nth(2)).to_have_text(
        "SELECT id, total FROM invoices WHERE id = 3"
    )
    expect(timeline.locator("li.ev-decision").first).to_contain_text("allow")
    expect(timeline.locator("li.ev-decision").first).to_contain_text("rule reads")
    expect(timeline.locator("table.rows td", has_text="39.99")).to_be_visible()

    # Seeking back to the start hides what came later.
    page.locator("#scrubber").click(position={"x": 1, "y": 5})
    expect(player).to_have_attribute("data-state", "paused")
    expect(timeline.locator('li[data-seq="10"]')).to_be_hidden()
    expect(timeline.locator('li[data-seq="1"]')).to_be_visible()


def test_a_live_session_page_shows_new_statements_and_can_terminate_it(console_server, page, alice, loop):
    run, event_loop = loop
    recorder: SessionRecorder = run(SessionRecorder.start(**BILLING_BOT))
    recorder_append = lambda kind, payload: event_loop.call_soon_threadsafe(recorder.append, kind, payload)  # noqa: E731
    try:
        login(page, console_server, "alice")
        page.goto(f"{console_server}/recordings/{recorder.session_id}/")
        player = page.locator("#player")
        expect(player).to_have_attribute("data-socket", "open")

        for kind, payload in statement(7):
            recorder_append(kind, payload)
        expect(page.locator("#timeline li.ev-statement code")).to_have_text(
            "SELECT id, total FROM invoices WHERE id = 7"
        )
        expect(page.locator("#timeline table.rows td", has_text="79.99")).to_be_visible()
        expect(page.locator("#event-count")).to_have_text("4")

        from channels.layers import get_channel_layer

        layer = get_channel_layer()

        async def listen() -> str:
            channel = await layer.new_channel()
            await layer.group_add(live.gateway_group(recorder.session_id), channel)
            return channel

        channel = run(listen())
        page.fill("#terminate-reason", "runaway loop")
        page.get_by_role("button", name="Terminate session").click()
        expect(page.locator(".messages")).to_contain_text("The gateway was told to terminate the session.")
        message = run(asyncio.wait_for(layer.receive(channel), 10))
        assert (message["by"], message["reason"]) == ("alice", "runaway loop")

        # What the gateway then does: close the session, naming who and why.
        expect(player).to_have_attribute("data-socket", "open")
        run(recorder.close(reason=live.terminated_reason("alice", "runaway loop"), status="terminated"))
        expect(page.locator("#session-status")).to_have_text("terminated")
        expect(page.locator("#session-ended")).to_have_text("terminated by alice: runaway loop")
        expect(page.locator("#integrity")).to_have_text("chain verified, seal valid")
    finally:
        run(recorder.close(reason="test over"))


def test_a_terminal_recording_plays_in_asciinema_player(console_server, page, carol, loop):
    run, _ = loop

    async def record() -> str:
        recorder = await SessionRecorder.start(
            **{**BILLING_BOT, "protocol": "ssh", "connection_name": "web-1"}
        )
        for kind, payload in terminal_events():
            recorder.append(kind, payload)
        await recorder.close(reason="client disconnected")
        return str(recorder.session_id)

    session_id = run(record())
    login(page, console_server, "carol")
    page.goto(f"{console_server}/recordings/{session_id}/")
    terminal = page.locator("#terminal .ap-player")
    expect(terminal).to_be_visible()
    terminal.click()  # the player's start overlay
    expect(page.locator("#terminal .ap-term")).to_contain_text("drwxr-xr-x 2 root root 4096 app")
    expect(page.locator("#export-cast")).to_be_visible()


def test_a_psql_session_through_the_gateway_replays_with_its_results(console_server, page, carol, gw):  # noqa: F811
    import subprocess

    done = subprocess.run(
        [
            "psql",
            gw.conninfo(application_name="psql"),
            "-XAt",
            "-c",
            "SELECT name, price FROM items WHERE id = 3",
            "-c",
            "SELECT count(*) AS n FROM items",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    session = gw.session(0)
    login(page, console_server, "carol")
    page.goto(f"{console_server}/recordings/{session.pk}/")
    player = page.locator("#player")
    expect(player).to_have_attribute("data-loaded", "all")
    expect(page.locator("#integrity")).to_have_text("chain verified, seal valid")
    page.evaluate(REVEAL_LOG)
    page.get_by_role("button", name="Play").click()
    expect(player).to_have_attribute("data-state", "ended")
    assert page.evaluate("window.revealed") == list(range(2, session.event_count + 1))
    timeline = page.locator("#timeline")
    # psql's startup settings come first, recorded as the SET statements they amount to.
    selects = timeline.locator("li.ev-statement code").filter(has_text=re.compile(r"^SELECT"))
    expect(selects.first).to_have_text("SELECT name, price FROM items WHERE id = 3")
    # Each statement's result is recorded inside its event and shown under it.
    first = timeline.locator("li.ev-statement", has_text="WHERE id = 3")
    expect(first.locator("table.rows td", has_text="item 3")).to_be_visible()
    expect(first).to_contain_text("SELECT 1 · 1 rows")
    expect(timeline.locator("table.rows td", has_text="4.5")).to_be_visible()
    expect(selects.nth(1)).to_have_text("SELECT count(*) AS n FROM items")
    expect(timeline.get_by_role("columnheader", name="n", exact=True)).to_be_visible()
    expect(timeline.locator("li.ev-session_start")).to_contain_text("session started by billing-bot")


def test_recorded_text_is_shown_as_text_never_as_markup(console_server, page, carol, loop):
    run, _ = loop
    hostile = 'SELECT \'<img src=x onerror="document.title=1">\' AS "<b>x</b>"'

    async def record() -> str:
        recorder = await SessionRecorder.start(**BILLING_BOT)
        recorder.append("statement", {"text": hostile, "params": ["<script>document.title=2</script>"]})
        recorder.append(
            "result",
            {
                "rows": 1,
                "command_tag": "SELECT 1",
                "columns": ["<b>x</b>"],
                "first_rows": [["<i>v</i>", None]],
            },
        )
        await recorder.close(reason="client disconnected")
        return str(recorder.session_id)

    session_id = run(record())
    login(page, console_server, "carol")
    page.goto(f"{console_server}/recordings/{session_id}/")
    expect(page.locator("#player")).to_have_attribute("data-loaded", "all")
    timeline = page.locator("#timeline")
    expect(timeline.locator("li.ev-statement code")).to_have_text(hostile)
    expect(timeline.locator("table.rows th")).to_have_text("<b>x</b>")
    expect(timeline.locator("table.rows td").first).to_have_text("<i>v</i>")
    expect(timeline.locator("table.rows td.null")).to_have_text("NULL")
    assert timeline.locator("img, script, b, i").count() == 0
    assert page.title() != "1" and page.title() != "2"


def test_a_live_terminal_session_streams_its_output_into_the_player(console_server, page, carol, loop):
    run, event_loop = loop
    recorder: SessionRecorder = run(
        SessionRecorder.start(**{**BILLING_BOT, "protocol": "ssh", "connection_name": "web-1"})
    )
    append = lambda kind, payload: event_loop.call_soon_threadsafe(recorder.append, kind, payload)  # noqa: E731
    try:
        append("output", {"data": "deploy@web-1:~$ "})
        login(page, console_server, "carol")
        page.goto(f"{console_server}/recordings/{recorder.session_id}/")
        terminal = page.locator("#terminal")
        expect(terminal).to_have_attribute("data-live", "streaming")
        expect(page.locator("#player")).to_have_attribute("data-socket", "open")
        expect(terminal.locator(".ap-term")).to_contain_text("deploy@web-1:~$")

        # Recorded while the page is open: the terminal shows it, without a reload.
        append("input", {"data": "uptime\r"})
        append("output", {"data": "uptime\r\n 19:40:01 up 12 days, load average: 0.42\r\n"})
        expect(terminal.locator(".ap-term")).to_contain_text("load average: 0.42")
        append("output", {"data": "deploy@web-1:~$ df -h /srv\r\n/dev/sda1  40G  12G  28G  30% /srv\r\n"})
        expect(terminal.locator(".ap-term")).to_contain_text("30% /srv")
        expect(page.locator("#timeline pre.tty.output", has_text="30% /srv")).to_be_visible()

        run(recorder.close(reason="client disconnected"))
        expect(terminal).to_have_attribute("data-live", "ended")
        expect(page.locator("#session-status")).to_have_text("ended")
        # What streamed is still on screen after the end.
        expect(terminal.locator(".ap-term")).to_contain_text("load average: 0.42")
    finally:
        run(recorder.close(reason="test over"))
