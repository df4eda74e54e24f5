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


def _inbox(browser, base: str, username: str, *scripts: str, timeout: float = 10_000):
    """A reviewer's inbox, open and live; ``scripts`` run in the page before its own."""
    context = browser.new_context()
    for script in (NOTIFICATIONS, *scripts):
        context.add_init_script(script)
    page = context.new_page()
    page.set_default_timeout(timeout)
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
    context, page = _inbox(browser, console_server, "bob", OUTAGE, timeout=20_000)
    try:
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


# Counts the page's own reloads of its lists (fetches of the page's address) and how many
# were on their way at once; ``__hide(true)`` makes the tab look hidden, as a tab in the
# background does.
FETCHES = """
window.__pageFetches = 0;
window.__inFlight = 0;
window.__mostInFlight = 0;
(function () {
  var real = window.fetch;
  window.fetch = function (url, options) {
    if (String(url) !== window.location.href) return real.apply(this, arguments);
    window.__pageFetches += 1;
    window.__inFlight += 1;
    window.__mostInFlight = Math.max(window.__mostInFlight, window.__inFlight);
    var done = function () { window.__inFlight -= 1; };
    return real.apply(this, arguments).then(
      function (response) { done(); return response; },
      function (error) { done(); throw error; }
    );
  };
  var hidden = false;
  Object.defineProperty(document, "visibilityState", { get: function () { return hidden ? "hidden" : "visible"; } });
  window.__hide = function (yes) { hidden = yes; document.dispatchEvent(new Event("visibilitychange")); };
})();
"""


def test_on_the_embedded_default_the_inbox_and_a_requests_page_keep_up_by_themselves(
    console_server_in_memory, browser, world, bob
):
    """Without REDIS_URL the channel layer is in memory: what the test process publishes, as
    the gateway does from its own, never reaches the console's websockets. The pages fetch
    themselves again instead, every 2 s while visible, keeping what a reviewer types."""
    from approvals import actions

    base = console_server_in_memory
    context, page = _inbox(browser, base, "bob", FETCHES)
    try:
        expect(page.locator("#approvals-inbox")).to_have_attribute("data-updates", "poll")
        page.evaluate("window.__sameDocument = true")  # gone if the page were reloaded

        held = make_request(world)
        card = page.locator(f"#approvals-pending #approval-{held.pk}")
        expect(card).to_be_visible(timeout=5_000)
        expect(card.locator("pre.statement")).to_have_text("DELETE FROM orders\nWHERE id = $1")
        expect(page.locator("#approvals-count")).to_have_text("1")
        expect(page.locator("#approvals-pending-empty")).to_be_hidden()

        # A reviewer typing: the card stays put through the reloads, and when it does change
        # (the rows estimate) what was typed and the cursor are kept.
        reason = card.locator("form.reject input[name=reason]")
        reason.fill("not on a Friday")
        card.locator("form.approve input[name=comment]").fill("half a thought")
        reason.focus()
        actions.do_record_estimate(held.pk, rows=12345)
        expect(card.locator(".estimated-rows")).to_have_text("12345", timeout=5_000)
        expect(reason).to_have_value("not on a Friday")
        expect(card.locator("form.approve input[name=comment]")).to_have_value("half a thought")
        assert page.evaluate("document.activeElement.name") == "reason"

        # A second request, its own page open in another tab, decided by another reviewer.
        other = make_request(world, params=("43",))
        expect(page.locator(f"#approvals-pending #approval-{other.pk}")).to_be_visible(timeout=5_000)
        expect(page.locator("#approvals-count")).to_have_text("2")
        detail = context.new_page()
        detail.set_default_timeout(10_000)
        detail.goto(base + f"/approvals/{other.pk}/")
        expect(detail.locator("#approval-detail")).to_have_attribute("data-updates", "poll")
        expect(detail.locator(f"#approval-{other.pk} form.approve")).to_be_visible()
        actions.do_approve(world.erin, other.pk, comment="looks right")
        expect(page.locator(f"#approvals-pending #approval-{other.pk}")).to_have_count(0, timeout=5_000)
        done = page.locator(f"#approvals-history #approval-{other.pk}")
        expect(done.locator(".outcome")).to_contain_text("Approved by erin")
        expect(done).to_contain_text("looks right")
        expect(page.locator("#approvals-count")).to_have_text("1")
        expect(detail.locator(f"#approval-{other.pk} .outcome")).to_contain_text(
            "Approved by erin", timeout=5_000
        )
        expect(detail.locator(f"#approval-{other.pk} form.approve")).to_have_count(0)
        # The half-typed rejection of the first is still there, and still pending.
        expect(page.locator(f"#approvals-pending #approval-{held.pk}")).to_be_visible()
        expect(reason).to_have_value("not on a Friday")

        # A hidden tab asks nothing; shown again, it catches up at once.
        page.evaluate("window.__hide(true)")
        time.sleep(0.5)  # a reload already on its way may finish
        asked = page.evaluate("window.__pageFetches")
        actions.do_reject(world.erin, held.pk, reason="erin said no")
        time.sleep(5)
        assert page.evaluate("window.__pageFetches") == asked
        expect(page.locator(f"#approvals-pending #approval-{held.pk}")).to_be_visible()
        page.evaluate("window.__hide(false)")
        expect(page.locator(f"#approvals-history #approval-{held.pk} .reason")).to_have_text(
            "erin said no", timeout=1_500
        )
        expect(page.locator("#approvals-pending-empty")).to_be_visible()
        expect(page.locator("#approvals-count")).to_have_text("0")

        assert page.evaluate("window.__mostInFlight") == 1  # never two reloads at once
        assert page.evaluate("window.__sameDocument") is True
        assert detail.evaluate("window.__mostInFlight") == 1
        # No reload left on its way when the console stops (daphne waits for it).
        for tab in (page, detail):
            tab.evaluate("window.__hide(true)")
            tab.wait_for_function("window.__inFlight === 0")
    finally:
        context.close()
