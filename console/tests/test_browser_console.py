import re

import pytest
from playwright.sync_api import expect

from conftest import login

pytestmark = pytest.mark.browser

SECRET = "Browser-Typed-Secret-6612"


def test_an_admin_creates_a_connection_whose_password_is_never_shown_again(console_server, page, alice):
    login(page, console_server, "alice")
    page.get_by_role("link", name="Connections").click()
    expect(page.locator("h1")).to_have_text("Connections")
    page.get_by_role("link", name="New PostgreSQL connection").click()
    page.fill("input[name=name]", "shop")
    page.fill("input[name=host]", "db.internal")
    page.fill("input[name=database]", "shop")
    page.fill("input[name=username]", "shop_app")
    page.fill("input[name=password]", SECRET)
    page.get_by_role("button", name="Create connection").click()

    expect(page.locator("h1")).to_contain_text("shop")
    expect(page.locator("#secrets-set")).to_have_text("password: set")
    assert SECRET not in page.content()

    page.get_by_role("link", name="Edit").click()
    expect(page.locator('[data-secret="password"]')).to_have_text("set")
    expect(page.locator("input[name=password]")).to_have_value("")
    assert SECRET not in page.content()
    # Saving without typing the password keeps it.
    page.fill("input[name=host]", "db2.internal")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Connection shop saved.")
    expect(page.locator("#secrets-set")).to_have_text("password: set")


def test_an_admin_creates_an_agent_and_sees_its_token_once_then_revokes_it(console_server, page, alice):
    login(page, console_server, "alice")
    page.get_by_role("link", name="Agents").click()
    page.get_by_role("link", name="New agent").click()
    page.fill("input[name=name]", "billing-bot")
    page.get_by_role("button", name="Create agent").click()
    expect(page.locator("h1")).to_contain_text("billing-bot")

    page.fill("input[name=label]", "ci")
    page.get_by_role("button", name="Issue token").click()
    token = page.locator("#new-token")
    expect(token).to_have_text(re.compile(r"^alk_[A-Za-z0-9_\-]{40,}$"))
    raw = token.inner_text()

    # Reloading sends the form again: the token is not shown again, and no second one is made.
    page.reload()
    expect(page.locator(".messages")).to_contain_text("That form was already used")
    assert raw not in page.content()
    rows = page.locator("#tokens tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(raw[:12])
    expect(rows.first.locator(".badge")).to_have_text("active")

    rows.first.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messages")).to_contain_text("revoked")
    expect(page.locator("#tokens tbody tr").first.locator(".badge")).to_have_text("revoked")
    assert raw not in page.content()


def test_a_reviewer_creates_an_api_token_sees_it_once_and_revokes_it(console_server, page, bob):
    login(page, console_server, "bob")
    page.get_by_role("link", name="API tokens").click()
    expect(page.locator("h1")).to_have_text("API tokens")
    expect(page.get_by_text("You have no API token yet.")).to_be_visible()

    page.fill("input[name=name]", "chat bot")
    page.fill("input[name=expires_in_days]", "30")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token")
    expect(token).to_have_text(re.compile(r"^alp_[A-Za-z0-9_\-]{40,}$"))
    raw = token.inner_text()

    # Reloading sends the form again: the token is not shown again, and no second one is made.
    page.reload()
    expect(page.locator(".messages")).to_contain_text("That form was already used")
    assert raw not in page.content()
    rows = page.locator("#tokens tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(raw[:12])
    expect(rows.first).to_contain_text("chat bot")
    expect(rows.first.locator(".badge")).to_have_text("active")

    # The token works on the API until it is revoked (a request without the browser's session).
    assert _api_with_token(console_server, raw) == (200, {"requests": []})
    rows.first.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messages")).to_contain_text("revoked")
    expect(page.locator("#tokens tbody tr").first.locator(".badge")).to_have_text("revoked")
    assert raw not in page.content()
    status, body = _api_with_token(console_server, raw)
    assert status == 401 and "was revoked" in body["error"]


def _api_with_token(base: str, raw: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the test's own console on http://127.0.0.1
        base + "/api/approvals/?status=awaiting", headers={"Authorization": f"Bearer {raw}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _nav(page) -> list[str]:
    return page.locator('nav[aria-label="Main"] a').all_inner_texts()


def test_a_reviewer_and_an_auditor_see_only_their_navigation(console_server, page, bob, carol):
    login(page, console_server, "bob")
    expect(page.locator("h1")).to_have_text("Dashboard")
    # The reviewer's Approvals link carries the count of pending requests.
    assert _nav(page) == ["Dashboard", "Approvals 0", "API tokens"]
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))

    login(page, console_server, "carol")
    expect(page.locator("h1")).to_have_text("Dashboard")
    assert _nav(page) == ["Dashboard", "Sessions", "Audit log", "API tokens"]
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("h1")).to_have_text("Audit log")


def test_an_outsider_is_refused_the_admin_pages(console_server, page, mallory):
    login(page, console_server, "mallory")
    for path in ("/connections/", "/agents/", "/people/", "/audit/"):
        response = page.goto(console_server + path)
        assert response.status == 403
        expect(page.locator("h1")).to_have_text("Not allowed")
    assert _nav(page) == []


def test_the_pages_of_each_role_load_without_a_browser_error(console_server, page, alice, bob, carol):
    # What a person would see in the developer tools: a failed request (the icon the
    # browser asks for on its own among them), a script error, a console error.
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    pages = {
        "alice": [
            "/",
            "/connections/",
            "/agents/",
            "/people/",
            "/groups/",
            "/policies/",
            "/audit/",
            "/recordings/",
        ],
        "bob": ["/", "/approvals/", "/account/tokens/"],
        "carol": ["/", "/recordings/", "/audit/"],
    }
    for person, paths in pages.items():
        login(page, console_server, person)
        expect(page.locator("h1")).to_have_text("Dashboard")
        for path in paths:
            response = page.goto(console_server + path)
            assert response is not None and response.status == 200, path
            page.wait_for_load_state("networkidle")
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    assert problems == []
