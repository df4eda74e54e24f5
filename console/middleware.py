"""Middleware of the console's own, and Django's own made to run on the event loop.

Under ASGI Django runs a synchronous middleware hook (``process_request``,
``process_response``, ``process_view``) through ``sync_to_async``: a switch from the event
loop to a thread and back for each hook of each middleware, about fifteen per request with
Django's usual middleware. Each switch wakes another thread, and on a busy machine waits
for it: ``GET /healthz``, whose view does nothing, took 4.1 ms in Django's ASGI handler
(in one process, no server) against 1.7 ms with those hooks called on the loop
(docs/performance.md). Most of them do no I/O: they read cookies and headers and set
attributes. The classes below are Django's own middleware, unchanged, whose hooks are
called on the loop when they do no I/O and in a thread, as Django would, when they may:
a session that was changed is saved, messages that were read or added are stored, CSRF
secrets kept in the session are read, a request body that may be on disk is parsed.

Nothing here may touch the database on the loop: Django raises ``SynchronousOnlyOperation``
if it does, so a wrong guess fails loudly (a 500), never silently blocks.
``console/tests/test_middleware.py`` pins which requests switch threads and how often.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware as _CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as _CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as _SecurityMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoiseMiddleware

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


class _OnTheLoop:
    """Calls a ``MiddlewareMixin`` middleware's hooks on the event loop (async mode), each
    in a thread instead when ``request_in_thread`` / ``response_in_thread`` say it may do
    I/O. In sync mode (WSGI, Django's test client) nothing changes."""

    get_response: Callable[[HttpRequest], Any]

    def request_in_thread(self, request: HttpRequest) -> bool:
        return False

    def response_in_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            if self.request_in_thread(request):
                response = await sync_to_async(process_request, thread_sensitive=True)(request)
            else:
                response = process_request(request)
        response = response or await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            if self.response_in_thread(request, response):
                response = await sync_to_async(process_response, thread_sensitive=True)(request, response)
            else:
                response = process_response(request, response)
        return response  # type: ignore[no-any-return]


class SecurityMiddleware(_OnTheLoop, _SecurityMiddleware):
    """Django's: headers and the HTTPS redirect, no I/O."""


class SessionMiddleware(_OnTheLoop, _SessionMiddleware):
    """Django's: the session is made (not read) on the loop; a changed session is saved in a thread."""

    def response_in_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (bool(session.modified) or settings.SESSION_SAVE_EVERY_REQUEST)


class CommonMiddleware(_OnTheLoop, _CommonMiddleware):
    """Django's: the host check, the trailing slash redirect, Content-Length; no I/O."""


class _RejectInThread(Exception):
    """The CSRF check failed on the loop: the failure view runs in a thread."""


class CsrfViewMiddleware(_OnTheLoop, _CsrfViewMiddleware):
    """Django's: the secret comes from the cookie (or, with ``CSRF_USE_SESSIONS``, from the
    session, in a thread); the token is checked on the loop unless the request's body may
    be on disk or is multipart (parsed in a thread), and a failure's page is made in a thread."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if self.async_mode:
            # The handler adapts process_view once, at start: a coroutine is awaited as it is.
            self.process_view = self._process_view_on_loop  # type: ignore[method-assign]

    def request_in_thread(self, request: HttpRequest) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)

    def response_in_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)

    @staticmethod
    def _view_in_thread(request: HttpRequest) -> bool:
        """Whether the check may read the session (``CSRF_USE_SESSIONS``), or its read of
        ``request.POST`` may parse a multipart body or read one spooled to disk (Django
        parses only form bodies: a JSON body is never read)."""
        if settings.CSRF_USE_SESSIONS:
            return True
        if request.method in _SAFE_METHODS:
            return False
        if request.content_type == "multipart/form-data":
            return True
        if request.content_type != "application/x-www-form-urlencoded":
            return False
        try:
            length = int(request.META.get("CONTENT_LENGTH") or "")
        except ValueError:
            return True
        return length > settings.FILE_UPLOAD_MAX_MEMORY_SIZE  # spooled to disk

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        if getattr(request, "_airlock_csrf_on_loop", False):
            raise _RejectInThread
        return super()._reject(request, reason)  # type: ignore[no-any-return]

    async def _process_view_on_loop(
        self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any
    ) -> HttpResponse | None:
        check = super().process_view  # Django's, bound
        if not self._view_in_thread(request):
            request._airlock_csrf_on_loop = True  # type: ignore[attr-defined]
            try:
                return check(request, callback, callback_args, callback_kwargs)  # type: ignore[no-any-return]
            except _RejectInThread:
                pass  # checked again in a thread, where the failure view may read what it needs
            finally:
                del request._airlock_csrf_on_loop  # type: ignore[attr-defined]
        return await sync_to_async(check, thread_sensitive=True)(  # type: ignore[no-any-return]
            request, callback, callback_args, callback_kwargs
        )


class AuthenticationMiddleware(_OnTheLoop, _AuthenticationMiddleware):
    """Django's: ``request.user`` is made lazy on the loop and read where it is used."""


class MessageMiddleware(_OnTheLoop, _MessageMiddleware):
    """Django's: the storage is made on the loop; messages read or added are stored in a thread."""

    def response_in_thread(self, request: HttpRequest, response: HttpResponse) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and bool(storage.used or storage.added_new)


class XFrameOptionsMiddleware(_OnTheLoop, _XFrameOptionsMiddleware):
    """Django's: one header, no I/O."""


class WhiteNoiseMiddleware(_WhiteNoiseMiddleware):  # type: ignore[misc]
    """WhiteNoise, able to take its place in Django's asynchronous middleware chain.

    WhiteNoise's own middleware is synchronous only. Under ASGI Django then ran every
    request from it inwards through ``async_to_sync`` and came back to a thread for the
    view: two more switches between the event loop and a thread per request, each a
    wake-up of another thread (an approve request is timed end to end, docs/approvals.md).
    Here a request that is not for a static file goes straight on; a static file is still
    served by WhiteNoise's own ``serve`` (and looked up by ``find_file`` when it refreshes
    its index, in development), in a thread, off the event loop.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any, **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: Any) -> Any:
        path = request.path_info
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(path)
        else:
            static_file = self.files.get(path)
        if static_file is not None:
            response = await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
            if response.streaming and not response.is_async:
                # The file, read in a thread chunk by chunk (a synchronous iterator would be
                # read on the loop, with a warning from Django).
                response.streaming_content = _in_thread(response.streaming_content)
            return response
        return await self.get_response(request)


async def _in_thread(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    iterator = iter(chunks)
    read = sync_to_async(next, thread_sensitive=False)
    while (chunk := await read(iterator, None)) is not None:
        yield chunk
