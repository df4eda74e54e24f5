"""The process's channel-layer publisher: work that waits for what was published."""

from __future__ import annotations

import asyncio
import threading
import time

from approvals import events


class _HeldLayer:
    """A channel layer whose sends finish only when the test says: stands in for a Redis
    that is slow to answer (a real one answers too fast to look between)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[str] = []

    async def group_send(self, group: str, message: dict) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.005)
        self.sent.append(group)


def test_waiting_returns_once_what_was_published_is_sent(monkeypatch):
    publisher = events._Publisher()
    monkeypatch.setattr(events, "_publisher", publisher)
    layer = _HeldLayer()
    publisher.send(layer, "inbox", {"type": "x"})
    waited: list[float] = []
    waiter = threading.Thread(
        target=lambda: (events.wait_until_published(5.0), waited.append(time.monotonic()))
    )
    waiter.start()
    time.sleep(0.1)
    assert not waited and not layer.sent  # still sending: the waiter waits
    released = time.monotonic()
    layer.release.set()
    waiter.join(5)
    assert layer.sent == ["inbox"] and waited and waited[0] >= released


def test_waiting_is_bounded_and_free_when_nothing_is_pending(monkeypatch):
    publisher = events._Publisher()
    monkeypatch.setattr(events, "_publisher", publisher)
    started = time.monotonic()
    events.wait_until_published(5.0)  # nothing sent yet
    assert time.monotonic() - started < 0.5
    layer = _HeldLayer()
    publisher.send(layer, "inbox", {"type": "x"})
    started = time.monotonic()
    events.wait_until_published(0.2)  # a send that never ends does not hold the caller
    assert 0.15 < time.monotonic() - started < 2
    layer.release.set()


def test_a_send_given_after_another_waits_for_it(monkeypatch):
    publisher = events._Publisher()
    monkeypatch.setattr(events, "_publisher", publisher)
    held = _HeldLayer()
    first = publisher.send(held, "outcome", {"type": "x"})

    class Recording:
        """A layer that notes when it is used (stands in for the second send's Redis)."""

        def __init__(self) -> None:
            self.sent: list[str] = []

        async def group_send(self, group: str, message: dict) -> None:
            self.sent.append(group)

    second = Recording()
    publisher.send(second, "inbox", {"type": "y"}, after=first)
    time.sleep(0.1)
    assert second.sent == []  # the outcome is still being sent
    held.release.set()
    events.wait_until_published(5.0)
    assert held.sent == ["outcome"] and second.sent == ["inbox"]
