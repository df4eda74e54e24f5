import pytest
from playwright.sync_api import expect

from conftest import login

pytestmark = pytest.mark.browser


def test_admin_logs_in_and_sees_the_dashboard(console_server, page, alice):
    login(page, console_server, "alice")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("header")).to_contain_text("alice")


def test_a_wrong_password_is_refused(console_server, page, alice):
    page.goto(console_server + "/accounts/login/")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator("body")).to_contain_text("not correct")
    page.goto(console_server + "/")
    expect(page).to_have_url(console_server + "/accounts/login/?next=/")
