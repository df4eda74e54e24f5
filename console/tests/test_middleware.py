"""The console's middleware chain under ASGI: every middleware can run on the event loop
(a synchronous one costs every request two more switches between the loop and a thread),
and WhiteNoise still serves static files there."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import SyncToAsync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.utils.module_loading import import_string


def test_every_middleware_can_run_on_the_event_loop():
    sync_only = [
        path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []


async def _get(path: str) -> dict:
    """A GET through Django's ASGI handler, as daphne would send it (the body read to its
    last message, which may carry none)."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }
    communicator = ApplicationCommunicator(ASGIHandler(), scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    body = b""
    while True:
        message = await communicator.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
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
