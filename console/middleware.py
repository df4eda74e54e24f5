"""Middleware of the console's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoiseMiddleware


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
