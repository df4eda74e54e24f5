"""Django's ASGI handler, each request's synchronous code on a thread kept for the next.

Django runs every request under asgiref's ``ThreadSensitiveContext``: all of a request's
synchronous code (the view, the middleware hooks that need a thread, the end of the
request) runs on one thread of its own, so that requests run side by side. Without an
executor, asgiref makes that thread for the request and ends it afterwards: about 0.4 ms
of every request on this machine (a new thread, its start, its shutdown; docs/performance.md).

``ASGIHandler`` hands each request an executor of one thread from a pool instead
(``ThreadSensitiveContext(executor=...)``, asgiref's documented way to reuse one). An
executor goes back to the pool once everything the request queued on it has run: a view
still running after its client went away (Django cancels the request's task, not the
thread) keeps its executor out of the pool until it returns. At most ``MAX_IDLE``
executors wait in the pool; more are shut down. Requests running at the same time never
share a thread, as before.

What a reused thread carries from one request to the next: its database connection when
the database settings keep connections (``CONN_MAX_AGE``; Django closes an obsolete or
broken one at the end of each request, and with the pool of the web process every request
returns its connection at its end). Django's per-request state (the active language, the
time zone, URL prefixes) lives in context variables, not on the thread.

``skip_request_start_housekeeping`` (called by ``console.asgi``) drops the database
housekeeping Django runs on that thread when a request starts.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core import signals
from django.core.handlers.asgi import ASGIHandler as _DjangoASGIHandler
from django.db import close_old_connections, reset_queries

MAX_IDLE = 32


class ThreadPool:
    """Executors of one thread each, handed out one per request and taken back when idle."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._idle: list[concurrent.futures.ThreadPoolExecutor] = []
        self._lock = threading.Lock()
        self.created = 0

    def take(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.created += 1
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="airlock-request")

    def give_back(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        """Return ``executor`` once what is queued on it has run (a marker job runs last)."""
        try:
            marker = executor.submit(_nothing)
        except RuntimeError:  # shut down meanwhile (the process is ending)
            return
        marker.add_done_callback(lambda _: self._idle_again(executor))

    def _idle_again(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


def _nothing() -> None:
    return None


def skip_request_start_housekeeping() -> None:
    """Disconnect the database housekeeping Django runs when a request starts (the web
    process calls this: ``console.asgi``).

    Under ASGI each request's synchronous code runs on a thread of its own
    (``ASGIHandler``), on which the previous request's end already did that
    housekeeping (``request_finished``: the connection closed, or returned to the web
    process's pool, when obsolete or broken), so ``close_old_connections`` and
    ``reset_queries`` have nothing to do when a request starts, and running them cost every
    request a switch to that thread and back. (Where connections are kept, a thread idle
    longer than ``CONN_MAX_AGE`` uses its connection for one more request before the end of
    that request closes it.)
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_started.disconnect(reset_queries)


class ASGIHandler(_DjangoASGIHandler):
    """Django's ASGI handler with each request's thread taken from a ``ThreadPool``."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = ThreadPool()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(executor)
