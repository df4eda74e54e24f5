"""End to end in real Chromium, with Redis as the channel layer: an agent's DELETE through
the PostgreSQL gateway (real psql) appears in an open inbox without a reload; the reviewer's
click decides what psql gets."""

from __future__ import annotations

import re
import subprocess

import pytest
from playwright.sync_api import expect

from approvals.models import ApprovalRequest, Status
from approvals.tests.gateway_world import SPEC, count_orders, psql
from conftest import login
from gateway.tests.postgres.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def inbox(console_server, page):
    login(page, console_server, "bob")
    page.goto(console_server + "/approvals/")
    expect(page.locator("#live-status")).to_have_text("live")
    return page


def _finish(client: subprocess.Popen) -> tuple[str, str]:
    try:
        return client.communicate(timeout=30)
    finally:
        client.kill()


def test_a_delete_through_the_gateway_is_approved_in_the_browser_and_psql_gets_the_result(
    held_gw,
    inbox,
    private_pg,
):
    client = psql(held_gw, "DELETE FROM orders WHERE id <= 4")
    try:
        card = inbox.locator("#approvals-pending .card.approval").first
        expect(card.locator("pre.statement")).to_have_text("DELETE FROM orders\nWHERE id <= 4")
        expect(card.locator(".agent")).to_contain_text("billing-bot")
        expect(card.locator(".connection")).to_contain_text("shop")
        expect(card.locator(".rule")).to_contain_text("deletes")
        # The planner's estimate (an estimate: 3 to 5 for these 4 rows), made on the target
        # with the connection's secret.
        expect(card.locator(".estimated-rows")).to_have_text(re.compile(r"^[345]$"))
        assert count_orders(private_pg) == 20
        card.locator("form.approve button").click()
        out, err = _finish(client)
    finally:
        client.kill()
    assert client.returncode == 0, err
    assert "DELETE 4" in out and "waiting for approval" in err
    assert count_orders(private_pg) == 16
    req = ApprovalRequest.objects.get()
    expect(inbox.locator(f"#approvals-history #approval-{req.pk} .outcome")).to_contain_text("by bob")
    wait_until(lambda: ApprovalRequest.objects.get(pk=req.pk).status == Status.EXECUTED, what="executed")
    inbox.reload()
    expect(inbox.locator(f"#approval-{req.pk} .outcome")).to_contain_text("Executed")


def test_a_rejection_in_the_browser_reaches_psql_with_its_reason(held_gw, inbox, private_pg):
    client = psql(held_gw, "DELETE FROM orders")
    try:
        card = inbox.locator("#approvals-pending .card.approval").first
        expect(card).to_be_visible()
        card.locator("form.reject input[name=reason]").fill("the whole table? no")
        card.locator("form.reject button").click()
        out, err = _finish(client)
    finally:
        client.kill()
    assert client.returncode != 0
    req = ApprovalRequest.objects.get()
    assert f"approval request {req.pk} was rejected by bob: the whole table? no" in err
    assert count_orders(private_pg) == 20
    expect(inbox.locator(f"#approvals-history #approval-{req.pk} .reason")).to_have_text(
        "the whole table? no"
    )


def test_an_unanswered_request_expires_in_the_browser_and_in_psql(held_gw, inbox, private_pg):
    from gateway.models import Connection
    from policies.actions import do_save_policy

    spec = {**SPEC, "rules": [{**SPEC["rules"][0], "timeout": "2s"}]}
    Connection.objects.filter(name="shop").update(policy=do_save_policy("test", "agents", spec))
    client = psql(held_gw, "DELETE FROM orders WHERE id = 9")
    try:
        expect(inbox.locator("#approvals-pending .card.approval")).to_have_count(1)
        out, err = _finish(client)
    finally:
        client.kill()
    req = ApprovalRequest.objects.get()
    assert client.returncode != 0 and f"approval request {req.pk} expired" in err
    expect(inbox.locator(f"#approvals-history #approval-{req.pk} .outcome")).to_contain_text("Expired")
    expect(inbox.locator("#approvals-pending .card.approval")).to_have_count(0)
    assert count_orders(private_pg) == 20
