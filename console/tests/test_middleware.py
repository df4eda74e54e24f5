"""The console's middleware chain under ASGI: every middleware can run on the event loop
(a synchronous one costs every request two more switches between the loop and a thread),
Django's own middleware's hooks run there when they do no I/O and in a thread when they
may (console/middleware.py), and WhiteNoise still serves static files there."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from urllib.parse import urlencode

import pytest
from asgiref import sync
from asgiref.sync import SyncToAsync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.handlers.asgi import ASGIHandler
from django.core.management import call_command
from django.utils.module_loading import import_string

from console import checks as console_checks
from console import handlers, middleware
from identity import actions as identity_actions


def test_every_middleware_can_run_on_the_event_loop():
    sync_only = [
        path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []


async def _get(
    path: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    handler: ASGIHandler | None = None,
) -> dict:
    """A request through Django's ASGI handler, as daphne would send it (the body read to
    its last message, which may carry none)."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }
    communicator = ApplicationCommunicator(handler or ASGIHandler(), scope)
    await communicator.send_input({"type": "http.request", "body": body})
    start = await communicator.receive_output(10)
    body = b""
    while True:
        message = await communicator.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(10)  # the handler's end of request (request_finished) too
    return {"status": start["status"], "headers": start["headers"], "body": body}


@pytest.mark.django_db(transaction=True)
def test_static_files_and_pages_are_served_through_the_async_chain():
    handler = ASGIHandler()
    # Built by the ASGI handler: no synchronous middleware wrapped the chain for a thread.
    assert not isinstance(handler._middleware_chain, SyncToAsync)
    css = asyncio.run(_get("/static/css/airlock.css"))
    assert css["status"] == 200
    assert dict(css["headers"])[b"Content-Type"].startswith(b"text/css")
    body = css["body"]
    with open(settings.BASE_DIR / "static" / "css" / "airlock.css", "rb") as source:
        assert body == source.read()
    missing = asyncio.run(_get("/static/css/no-such-file.css"))
    assert missing["status"] == 404
    login = asyncio.run(_get("/accounts/login/"))
    assert login["status"] == 200 and b"csrfmiddlewaretoken" in login["body"]


@pytest.fixture(autouse=True)
def _close_thread_connections(monkeypatch):
    """Each request's thread closes its database connection at the end of the request (as
    the web process's pool takes it back), so that the test database can be dropped."""
    from django.db import connections

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)


class _Switches:
    """Records what Django runs in a thread (``sync_to_async``) meanwhile: the function or
    the bound method's owner class."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ran: list[str] = []
        original = SyncToAsync.__call__

        async def call(inner: SyncToAsync, *args: object, **kwargs: object) -> object:
            func = inner.func
            owner = getattr(func, "__self__", None)
            self.ran.append(
                type(owner).__name__ if owner is not None else getattr(func, "__qualname__", repr(func))
            )
            return await original(inner, *args, **kwargs)

        monkeypatch.setattr(SyncToAsync, "__call__", call)

    def middleware(self) -> list[str]:
        names = {import_string(path).__name__ for path in settings.MIDDLEWARE}
        return [name for name in self.ran if name in names]


def _cookies(response: dict) -> dict[str, str]:
    found = {}
    for name, value in response["headers"]:
        if name.lower() == b"set-cookie":
            key, _, rest = value.decode().partition("=")
            found[key] = rest.split(";", 1)[0]
    return found


def _cookie_header(cookies: dict[str, str]) -> tuple[bytes, bytes]:
    return (b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode())


@pytest.mark.django_db(transaction=True)
def test_a_request_that_needs_no_io_runs_no_middleware_hook_in_a_thread(monkeypatch):
    switches = _Switches(monkeypatch)
    response = asyncio.run(_get("/healthz"))
    assert response["status"] == 200 and response["body"] == b"ok"
    assert switches.middleware() == []
    # What is left: the view, and the request_started/request_finished signals' receivers
    # (the database connection's housekeeping), each once.
    assert len(switches.ran) <= 3, switches.ran


@pytest.fixture
def _as_the_web_process():
    """The handler ``console.asgi`` serves with (threads from a pool), Django's
    request_started receivers disconnected as it does; then back."""
    from django.core import signals
    from django.db import close_old_connections, reset_queries

    handlers.skip_request_start_housekeeping()
    yield handlers.ASGIHandler()
    signals.request_started.connect(reset_queries)
    signals.request_started.connect(close_old_connections)


class _Threads:
    """The threads that ended requests (``request_finished`` runs on the request's own
    thread)."""

    def __init__(self) -> None:
        from django.core import signals

        self.seen: list[threading.Thread] = []
        signals.request_finished.connect(self.record)

    def record(self, **kwargs: object) -> None:
        self.seen.append(threading.current_thread())

    @property
    def names(self) -> list[str]:
        return [thread.name for thread in self.seen]

    def close(self) -> None:
        from django.core import signals

        signals.request_finished.disconnect(self.record)


@pytest.mark.django_db(transaction=True)
def test_the_web_process_runs_requests_on_threads_it_keeps(monkeypatch, _as_the_web_process):
    handler = _as_the_web_process
    threads = _Threads()
    try:
        switches = _Switches(monkeypatch)
        assert asyncio.run(_get("/healthz", handler=handler))["status"] == 200
        assert len(switches.ran) == 2, switches.ran  # the view, and the response's close
        for _ in range(3):
            # The thread goes back to the pool once a marker queued after the request has
            # run on it, a moment after the response: a request that comes sooner gets a
            # thread of its own (test_the_thread_pool_never_shares_a_busy_thread).
            _wait_idle(handler.threads, 1)
            assert asyncio.run(_get("/healthz", handler=handler))["status"] == 200
    finally:
        threads.close()
    # One thread made, and used again for each request after the first.
    assert len({id(thread) for thread in threads.seen}) == 1, threads.names
    assert threads.names[0].startswith("airlock-request"), threads.names
    assert handler.threads.created == 1


def _wait_idle(pool: handlers.ThreadPool, count: int) -> None:
    deadline = time.monotonic() + 5
    while pool.idle() != count:
        assert time.monotonic() < deadline, f"{pool.idle()} idle threads, not {count}"
        time.sleep(0.001)


def test_the_thread_pool_never_shares_a_busy_thread():
    pool = handlers.ThreadPool(max_idle=2)
    first, second = pool.take(), pool.take()
    assert first is not second  # two requests at once: two threads
    release = threading.Event()
    busy = first.submit(release.wait, 10)  # a view still running after its request ended
    pool.give_back(first)
    pool.give_back(second)
    _wait_idle(pool, 1)
    assert pool.idle() == 1 and pool.take() is second  # the idle one only
    release.set()
    busy.result(5)
    _wait_idle(pool, 1)
    assert pool.take() is first  # back once its work was done
    # Beyond max_idle, executors given back are shut down rather than kept.
    extra = [pool.take() for _ in range(3)]
    for executor in extra:
        pool.give_back(executor)
    _wait_idle(pool, 2)
    time.sleep(0.1)
    assert pool.idle() == 2
    assert sum(executor._shutdown for executor in extra) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("web_process", [False, True])
def test_login_saves_the_session_and_its_messages_in_a_thread(monkeypatch, request, web_process):
    handler = request.getfixturevalue("_as_the_web_process") if web_process else ASGIHandler()
    identity_actions.do_create_user(None, "mia", password="mia-Pass-1234")
    form = asyncio.run(_get("/accounts/login/", handler=handler))
    cookies = _cookies(form)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', form["body"]).group(1).decode()
    switches = _Switches(monkeypatch)
    login = asyncio.run(
        _get(
            "/accounts/login/",
            method="POST",
            body=urlencode(
                {"csrfmiddlewaretoken": token, "login": "mia", "password": "mia-Pass-1234"}
            ).encode(),
            headers=[(b"content-type", b"application/x-www-form-urlencoded"), _cookie_header(cookies)],
            handler=handler,
        )
    )
    assert login["status"] == 302, login["body"][:500]
    # The session changed (a login): saved in a thread, and it is in the database.
    assert "SessionMiddleware" in switches.middleware()
    # allauth's "Successfully signed in" message: stored in a thread (it may use the session).
    assert "MessageMiddleware" in switches.middleware()
    cookies.update(_cookies(login))
    assert Session.objects.filter(session_key=cookies[settings.SESSION_COOKIE_NAME]).exists()
    # The next request reads it (in the view's thread): a page for anyone logged in.
    page = asyncio.run(_get("/account/tokens/", headers=[_cookie_header(cookies)], handler=handler))
    assert page["status"] == 200 and b"mia" in page["body"]


_MULTIPART = b'--b\r\nContent-Disposition: form-data; name="login"\r\n\r\nmia\r\n--b--\r\n'


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "content_type", "body", "refusal", "in_thread"),
    [
        # A forged form: checked on the loop, refused, checked again in a thread, where
        # Django's page is made.
        ("/accounts/login/", b"application/x-www-form-urlencoded", b"login=mia&password=x", b"CSRF", 1),
        # A multipart body is parsed in a thread from the start.
        ("/accounts/login/", b"multipart/form-data; boundary=b", _MULTIPART, b"", 1),
        # Django never reads a JSON body for request.POST: checked on the loop whatever its
        # length says (the API checks CSRF itself, in its view, for session requests).
        ("/api/approvals/999/approve/", b"application/json", b"{}", b"CSRF", 0),
    ],
    ids=["forged-form", "multipart", "json"],
)
def test_where_a_post_s_csrf_check_runs(monkeypatch, path, content_type, body, refusal, in_thread):
    switches = _Switches(monkeypatch)
    headers = [(b"content-type", content_type)]
    if content_type.startswith(b"multipart/"):
        headers.append((b"content-length", str(len(body)).encode()))
    refused = asyncio.run(_get(path, method="POST", body=body, headers=headers))
    assert refused["status"] == 403 and refusal in refused["body"]
    assert switches.middleware() == ["CsrfViewMiddleware"] * in_thread


def test_django_s_security_checks_see_the_console_s_middleware(settings, capsys):
    settings.SECURE_SSL_REDIRECT = False
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    found = {message.id for message in console_checks.middleware_security(None)}
    # Django's checks that apply only when its middleware is there ran, ours being its subclasses.
    assert {"security.W008", "security.W019"} <= found
    assert not {"airlock.W002", "airlock.W003", "airlock.W004"} & found
    settings.MIDDLEWARE = [p for p in settings.MIDDLEWARE if p != "console.middleware.CsrfViewMiddleware"]
    assert "airlock.W004" in {message.id for message in console_checks.middleware_security(None)}
    call_command("check", "--deploy", "--fail-level", "CRITICAL")
    assert "security.W003" not in capsys.readouterr().err


def test_the_console_s_middleware_is_django_s():
    for path, django_path in (
        ("console.middleware.SecurityMiddleware", "django.middleware.security.SecurityMiddleware"),
        ("console.middleware.SessionMiddleware", "django.contrib.sessions.middleware.SessionMiddleware"),
        ("console.middleware.CommonMiddleware", "django.middleware.common.CommonMiddleware"),
        ("console.middleware.CsrfViewMiddleware", "django.middleware.csrf.CsrfViewMiddleware"),
        (
            "console.middleware.AuthenticationMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ),
        ("console.middleware.MessageMiddleware", "django.contrib.messages.middleware.MessageMiddleware"),
        (
            "console.middleware.XFrameOptionsMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ),
    ):
        assert path in settings.MIDDLEWARE
        assert issubclass(import_string(path), import_string(django_path))
    assert middleware.SessionMiddleware.__acall__ is middleware._OnTheLoop.__acall__
    assert sync.iscoroutinefunction(middleware._OnTheLoop.__acall__)
