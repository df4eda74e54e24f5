"""Streaming downloads that stay streaming under ASGI (daphne) and under the test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse


def stream_response(
    request: HttpRequest, produce: Callable[[], Iterator[bytes]], **kwargs: Any
) -> StreamingHttpResponse:
    """Stream ``produce()``'s chunks.

    Under ASGI Django would otherwise read a synchronous iterator whole into memory before
    sending; here each chunk is made in Django's sync thread (database access is safe
    there) and sent as it is made.
    """
    if not isinstance(request, ASGIRequest):
        return StreamingHttpResponse(produce(), **kwargs)
    done = object()
    chunks: Iterator[bytes] | None = None

    def take() -> Any:
        nonlocal chunks
        if chunks is None:
            chunks = produce()
        return next(chunks, done)

    async def agen() -> AsyncIterator[bytes]:
        while True:
            chunk = await sync_to_async(take, thread_sensitive=True)()
            if chunk is done:
                return
            yield chunk

    return StreamingHttpResponse(agen(), **kwargs)
