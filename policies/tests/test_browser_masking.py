"""The masking policy editor in real Chromium against the real console (daphne)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import login
from console.tests.factories import make_connection
from policies.masking_actions import bindings_of
from policies.models import MaskingPolicy

pytestmark = pytest.mark.browser


def test_an_admin_creates_a_masking_policy_binds_it_and_tries_it_while_typing(console_server, page, alice):
    make_connection("shop")

    login(page, console_server, "alice")
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="Masking policies").click()
    expect(page.locator("h1")).to_have_text("Masking policies")
    page.get_by_role("link", name="New masking policy").click()

    page.fill("input[name=name]", "pii")
    page.select_option("select[name=entity_email]", "hash")
    page.select_option("select[name=entity_card]", "partial")
    # A bad regular expression is refused next to its field; nothing is saved.
    page.fill("input[name=custom-0-name]", "employee_id")
    page.fill("input[name=custom-0-pattern]", "EMP-([0-9]{6}")
    page.get_by_label("shop").check()
    page.get_by_role("button", name="Create masking policy").click()
    expect(page.locator("[data-row=custom-0] .errorlist")).to_contain_text("not a valid regular expression")
    assert not MaskingPolicy.objects.exists()

    page.fill("input[name=custom-0-pattern]", r"\bEMP-[0-9]{6}\b")
    page.get_by_role("button", name="Create masking policy").click()
    expect(page.locator(".messages")).to_contain_text("Masking policy pii created.")
    expect(page.locator("#masking-bindings")).to_contain_text("shop: every agent")
    policy = MaskingPolicy.objects.get(name="pii")
    assert bindings_of(policy) == [("shop", None)]

    # Try it answers while typing, without a click.
    page.locator("#try-text").press_sequentially("card 4111 1111 1111 1111 for EMP-123456")
    expect(page.locator("#mask-try-masked")).to_have_text("card [CARD:****1111] for [EMPLOYEE_ID]")
    expect(page.locator("#mask-try-findings [data-col=entity]")).to_have_text(["card", "employee_id"])
    expect(page.locator("#mask-try-findings [data-col=method]")).to_have_text(["partial", "redact"])
    expect(page.locator("#try-result")).not_to_contain_text("4111 1111 1111 1111")
