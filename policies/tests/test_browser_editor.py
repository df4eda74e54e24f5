"""The policy editor in real Chromium against the real console (daphne)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import login
from console.tests.factories import make_agent, make_connection
from policies.models import Policy
from policies.tests.factories import SHOP_SPEC, make_policy

pytestmark = pytest.mark.browser


def test_an_admin_edits_a_rule_tries_it_while_typing_saves_a_version_and_rolls_back(
    console_server, page, alice, bob
):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()

    login(page, console_server, "alice")
    page.get_by_role("link", name="Policies").click()
    expect(page.locator("h1")).to_have_text("Policies")
    page.get_by_role("link", name="agents-default").click()
    expect(page.locator("#policy-version")).to_have_text("version 1")

    # The try-it box answers while typing, without a click.
    statement = page.locator("#try-statement")
    statement.press_sequentially("SELECT * FROM orders")
    expect(page.locator("#try-action")).to_have_text("allow")
    expect(page.locator("#try-rule")).to_have_text("reads")
    expect(page.locator("#try-classification [data-col=tables_read]")).to_have_text("public.orders")
    statement.fill("")
    statement.press_sequentially("DROP TABLE orders")
    expect(page.locator("#try-action")).to_have_text("deny")
    expect(page.locator("#try-rule")).to_have_text("no-drop")
    expect(page.locator("#try-message")).to_have_text("no DROP here")
    statement.press_sequentially(" (")
    expect(page.locator("#try-parse-error")).to_contain_text("Does not parse")

    # Edit rule no-drop: destructive statements now wait for a DBA instead.
    page.get_by_role("link", name="Edit rule no-drop").click()
    page.select_option("select[name=action]", "review")
    page.fill("input[name=reviewers]", "dba")
    page.fill("input[name=comment]", "let DBAs decide")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.locator(".messages")).to_contain_text("Saved policy agents-default as version 2.")
    expect(page.locator("#policy-version")).to_have_text("version 2")

    page.locator("#try-statement").press_sequentially("DROP TABLE orders")
    expect(page.locator("#try-action")).to_have_text("review")
    expect(page.locator("#try-rule")).to_have_text("no-drop")
    expect(page.locator("#try-result")).to_contain_text("1 approval from dba")

    # The history shows both versions; version 2's diff is the edit; roll back to 1.
    page.get_by_role("navigation", name="Policy").get_by_role("link", name="Versions").click()
    rows = page.locator("#versions tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("let DBAs decide")
    expect(rows.first).to_contain_text("alice")
    rows.first.get_by_role("link", name="2", exact=True).click()
    expect(page.locator("#diff .diff-remove")).to_have_text(["-  action: deny"])
    expect(page.locator("#diff .diff-add")).to_have_text(["+  action: review", "+  reviewers: [dba]"])
    page.get_by_role("navigation", name="Policy").get_by_role("link", name="Versions").click()
    page.locator("#versions tbody tr").last.get_by_role("link", name="1", exact=True).click()
    page.get_by_role("button", name="Roll back to version 1").click()
    expect(page.locator(".messages")).to_contain_text(
        "Rolled back to version 1: the policy is now at version 3."
    )
    expect(page.locator("#policy-version")).to_have_text("version 3")

    page.locator("#try-statement").press_sequentially("DROP TABLE orders")
    expect(page.locator("#try-action")).to_have_text("deny")
    policy = Policy.objects.get(pk=policy.pk)
    assert (policy.version, policy.spec) == (3, SHOP_SPEC)


def test_an_admin_reorders_rules_and_sees_a_problem_next_to_its_field(console_server, page, alice, bob):
    policy = make_policy()
    make_connection(policy=policy)
    make_agent()
    login(page, console_server, "alice")
    page.goto(f"{console_server}/policies/{policy.pk}/")

    page.get_by_role("button", name="Move rule writes up").click()
    expect(page.locator(".messages")).to_contain_text("version 2")
    rows = page.locator("#rules tbody tr")
    for index, name in enumerate(["no-drop", "writes", "reads"]):
        expect(rows.nth(index)).to_have_attribute("data-rule", name)

    page.get_by_role("link", name="Add rule").click()
    page.fill("input[name=name]", "billing")
    page.select_option("select[name=action]", "review")
    page.fill("[name=tables]", "billing.*")
    page.fill("input[name=reviewers]", "finance")
    page.get_by_role("button", name="Save as version 3").click()
    reviewers = page.locator(".field.has-error", has=page.locator("input[name=reviewers]"))
    expect(reviewers).to_contain_text("reviewer group 'finance' does not exist or has no members")
    expect(page.locator("[name=tables]")).to_have_value("billing.*")
    assert Policy.objects.get(pk=policy.pk).version == 2
