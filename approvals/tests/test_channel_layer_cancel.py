"""The approvals listener stops when closed, on the real channel layer (channels_redis over
redis-py, this machine's Redis), wherever the cancellation lands in its receive.

channels_redis sometimes swallows a cancellation (redis-py turns one that arrives during a
read into its own TimeoutError) and goes on waiting; a listener cancelled once could then
run forever and hold up the closing of its event loop (the gateway's shutdown; a test's
teardown). ``close()`` cancels until the receive ends.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from django.conf import settings

from approvals import gateway

pytestmark = pytest.mark.skipif(
    "channels_redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"],
    reason="needs REDIS_URL (make test sets it)",
)


async def test_a_closed_listener_always_stops():
    from channels.layers import get_channel_layer

    rng = random.Random(7)
    for attempt in range(40):
        listener = gateway._Listener(get_channel_layer())
        await listener.start()
        task = listener.task
        assert task is not None
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        started = asyncio.get_running_loop().time()
        await listener.close()
        assert task.done(), f"listener {attempt} went on after close()"
        # Stopped by cancelling, not by the bounded wait running out (2 s) and the
        # connections being closed under it.
        assert asyncio.get_running_loop().time() - started < 1.5, (
            f"listener {attempt} ignored its cancellation"
        )
