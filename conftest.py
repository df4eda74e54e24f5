"""Project-wide test fixtures: the personas and the role groups."""

from __future__ import annotations

import pytest


@pytest.fixture
def role_groups(db):  # type: ignore[no-untyped-def]
    from django.conf import settings
    from django.contrib.auth.models import Group

    return {
        role: Group.objects.get_or_create(name=name)[0] for role, name in settings.AIRLOCK_ROLE_GROUPS.items()
    }


def _person(username: str, *groups):  # type: ignore[no-untyped-def]
    from identity.models import User

    user = User.objects.create_user(username=username, password=f"{username}-Pass-1234")
    for group in groups:
        user.groups.add(group)
    return user


@pytest.fixture
def alice(role_groups):  # type: ignore[no-untyped-def]
    """alice the admin."""
    return _person("alice", role_groups["admin"])


@pytest.fixture
def bob(role_groups):  # type: ignore[no-untyped-def]
    """bob the reviewer (also in the dba group that policies name as reviewers)."""
    from django.contrib.auth.models import Group

    dba, _ = Group.objects.get_or_create(name="dba")
    return _person("bob", role_groups["reviewer"], dba)


@pytest.fixture
def carol(role_groups):  # type: ignore[no-untyped-def]
    """carol the auditor."""
    return _person("carol", role_groups["auditor"])


@pytest.fixture
def mallory(db):  # type: ignore[no-untyped-def]
    """mallory the outsider: a valid login with no role."""
    return _person("mallory")


def database_url() -> str:
    """The test database's URL, for a child process (``manage.py``, a gateway, daphne)."""
    from django.db import connection

    from console.envconfig import database_url as url_of

    return url_of(connection.settings_dict)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def console_server(transactional_db):  # type: ignore[no-untyped-def]
    """The real console (daphne serving console.asgi) on a free port, on the test database.

    Yields the base URL. Runs as a separate process so that pages and websockets go
    through exactly the stack production runs.
    """
    yield from _serve_console()


@pytest.fixture
def console_server_in_memory(transactional_db):  # type: ignore[no-untyped-def]
    """``console_server`` on the embedded default's channel layer (no ``REDIS_URL``): what
    the test process publishes, as the gateway would from its own process, never reaches it."""
    yield from _serve_console(without=("REDIS_URL",))


def _serve_console(without: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    from django.conf import settings

    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in without}
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = database_url()
    log = tempfile.NamedTemporaryFile(prefix="console-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1).read()  # noqa: S310
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("console did not start: " + Path(log.name).read_text()[-2000:]) from None
            time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        # Shown by pytest when the test failed: the server's side of the story.
        print(Path(log.name).read_text()[-5000:])
        log.close()
        os.unlink(log.name)


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    import os

    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on the test thread; the test's own
    # database work is still synchronous, so Django's async guard must be lifted here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def login(page, base: str, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(base + "/accounts/login/")
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", f"{username}-Pass-1234")
    page.click("button[type=submit]")
