"""The inbox in real Chromium against the real console (daphne), Redis as the channel layer:
requests made elsewhere (here, by the test process, as the gateway does) appear and move in
every open browser at once, without a reload."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from approvals import tasks
from approvals.models import ApprovalRequest, Status
from approvals.tests.factories import make_request, review_decision
from conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Records what the page asks the browser to show as notifications (headless Chromium shows
# none), with the permission granted as a person who clicked "allow" would have.
NOTIFICATIONS = """
window.__notifications = [];
window.Notification = function (title, options) { window.__notifications.push(title); return {}; };
window.Notification.permission = "granted";
window.Notification.requestPermission = function () { return Promise.resolve("granted"); };
"""


def _inbox(browser, base: str, username: str):
    context = browser.new_context()
    context.add_init_script(NOTIFICATIONS)
    page = context.new_page()
    page.set_default_timeout(10_000)
    login(page, base, username)
    page.goto(base + "/approvals/")
    expect(page.locator("#live-status")).to_have_text("live")
    return context, page


def test_a_request_appears_in_every_open_inbox_and_an_approval_moves_it_to_history(
    console_server, browser, world, bob
):
    (bob_ctx, bobs), (erin_ctx, erins) = (
        _inbox(browser, console_server, "bob"),
        _inbox(browser, console_server, "erin"),
    )
    try:
        req = make_request(world)
        for page in (bobs, erins):
            card = page.locator(f"#approvals-pending #approval-{req.pk}")
            expect(card).to_be_visible()
            expect(card.locator("pre.statement")).to_have_text("DELETE FROM orders\nWHERE id = $1")
            expect(card.locator(".on-behalf-of")).to_have_text("dave")
            expect(card.locator(".time-left")).to_contain_text("s left")
            expect(page.locator("#approvals-count")).to_have_text("1")
            assert page.evaluate("window.__notifications") == ["Approval needed: billing-bot on shop"]
        bobs.locator(f"#approval-{req.pk} form.approve input[name=comment]").fill("checked the WHERE clause")
        bobs.locator(f"#approval-{req.pk} form.approve button").click()
        for page in (bobs, erins):
            card = page.locator(f"#approvals-history #approval-{req.pk}")
            expect(card.locator(".outcome")).to_contain_text("Approved by bob")
            expect(card).to_contain_text("checked the WHERE clause")
            expect(page.locator(f"#approvals-pending #approval-{req.pk}")).to_have_count(0)
            expect(page.locator("#approvals-count")).to_have_text("0")
        assert ApprovalRequest.objects.get(pk=req.pk).status == Status.APPROVED
    finally:
        bob_ctx.close()
        erin_ctx.close()


def test_a_rejection_needs_a_reason_and_shows_it(console_server, browser, world, bob):
    context, page = _inbox(browser, console_server, "bob")
    try:
        req = make_request(world)
        card = page.locator(f"#approval-{req.pk}")
        expect(card).to_be_visible()
        card.locator("form.reject button").click()
        # The browser's own check: the reason is required.
        assert card.locator("form.reject input[name=reason]").evaluate("el => !el.validity.valid")
        assert ApprovalRequest.objects.get(pk=req.pk).status == Status.PENDING
        card.locator("form.reject input[name=reason]").fill("use the archive job instead")
        card.locator("form.reject button").click()
        done = page.locator(f"#approvals-history #approval-{req.pk}")
        expect(done.locator(".reason")).to_have_text("use the archive job instead")
        expect(done.locator(".decided-by")).to_have_text("bob")
    finally:
        context.close()


def test_a_card_updated_while_its_reviewer_types_keeps_what_was_typed(console_server, browser, world, bob):
    from approvals import actions

    context, page = _inbox(browser, console_server, "bob")
    try:
        req = make_request(world)
        card = page.locator(f"#approval-{req.pk}")
        expect(card).to_be_visible()
        reason = card.locator("form.reject input[name=reason]")
        reason.fill("the whole table? no")
        card.locator("form.approve input[name=comment]").fill("half a thought")
        reason.focus()
        # The rows estimate arrives: the card is sent again and replaced.
        actions.do_record_estimate(req.pk, rows=12345)
        expect(card.locator(".estimated-rows")).to_have_text("12345")
        expect(reason).to_have_value("the whole table? no")
        expect(card.locator("form.approve input[name=comment]")).to_have_value("half a thought")
        assert page.evaluate("document.activeElement.name") == "reason"
        card.locator("form.reject button").click()
        expect(page.locator(f"#approvals-history #approval-{req.pk} .reason")).to_have_text(
            "the whole table? no"
        )
    finally:
        context.close()


def test_an_expired_request_leaves_the_pending_list_by_itself(console_server, browser, world, bob):
    context, page = _inbox(browser, console_server, "bob")
    try:
        req = make_request(world, decision=review_decision(timeout=1))
        expect(page.locator(f"#approvals-pending #approval-{req.pk}")).to_be_visible()
        deadline = time.monotonic() + 10
        while not tasks.expire_request(req.pk):  # what the worker runs at the deadline
            assert time.monotonic() < deadline
            time.sleep(0.1)
        expect(page.locator(f"#approvals-history #approval-{req.pk} .outcome")).to_contain_text("Expired")
        expect(page.locator("#approvals-pending-empty")).to_be_visible()
    finally:
        context.close()


def test_the_badge_updates_on_any_page_and_the_requester_sees_nothing(console_server, browser, world, bob):
    context, page = _inbox(browser, console_server, "bob")
    dave_ctx, daves = _inbox(browser, console_server, "dave")
    try:
        page.goto(console_server + "/")
        expect(page.locator("#approvals-count")).to_have_text("0")
        make_request(world)
        make_request(world, params=("43",))
        expect(page.locator("#approvals-count")).to_have_text("2")
        # dave is a reviewer in dba, but billing-bot acts for him.
        expect(daves.locator("#approvals-count")).to_have_text("0")
        expect(daves.locator(".card.approval")).to_have_count(0)
        assert daves.evaluate("window.__notifications") == []
    finally:
        context.close()
        dave_ctx.close()


# Stands in for the network between the browser and the console going away: while
# ``window.__offline`` is set, the page's websockets are opened to a port nothing listens
# on (so they fail as they would with the console unreachable), and ``__dropSockets()``
# closes the open ones as a dropped connection would.
OUTAGE = """
window.__offline = false;
window.__sockets = [];
(function () {
  var Real = window.WebSocket;
  window.WebSocket = function (url, protocols) {
    var socket = new Real(window.__offline ? "ws://127.0.0.1:9/ws/approvals/" : url, protocols);
    window.__sockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Real.prototype;
  window.__dropSockets = function () { window.__sockets.forEach(function (s) { s.close(); }); };
})();
"""


def test_an_inbox_that_lost_its_connection_reconnects_and_shows_what_it_missed(
    console_server, browser, world, bob
):
    context = browser.new_context()
    context.add_init_script(NOTIFICATIONS)
    context.add_init_script(OUTAGE)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        login(page, console_server, "bob")
        page.goto(console_server + "/approvals/")
        expect(page.locator("#live-status")).to_have_text("live")
        before = make_request(world)
        expect(page.locator(f"#approvals-pending #approval-{before.pk}")).to_be_visible()
        page.evaluate("window.__offline = true; window.__dropSockets()")
        expect(page.locator("#live-status")).to_have_text("reconnecting…")
        # What happens while the inbox is away: a new request, and the first one approved.
        missed = make_request(world, params=("43",))
        from approvals import actions

        actions.do_approve(bob, before.pk)
        time.sleep(1.0)
        expect(page.locator(f"#approval-{missed.pk}")).to_have_count(0)
        page.evaluate("window.__offline = false")
        expect(page.locator("#live-status")).to_have_text("live")
        expect(page.locator(f"#approvals-pending #approval-{missed.pk}")).to_be_visible()
        expect(page.locator(f"#approvals-history #approval-{before.pk} .outcome")).to_contain_text(
            "Approved by bob"
        )
        expect(page.locator("#approvals-count")).to_have_text("1")
        # And it is live again: the next request arrives without a reload.
        after = make_request(world, params=("44",))
        expect(page.locator(f"#approvals-pending #approval-{after.pk}")).to_be_visible()
        expect(page.locator("#approvals-count")).to_have_text("2")
    finally:
        context.close()
