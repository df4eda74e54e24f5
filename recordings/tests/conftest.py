"""Fixtures for recording tests: quick flushes, writer threads closed after each test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections


@pytest.fixture(autouse=True)
def _recording_settings(settings):  # type: ignore[no-untyped-def]
    settings.RECORDING_FLUSH_SECONDS = 0.05
    settings.RECORDING_PERSIST_TIMEOUT = 5
    settings.RECORDING_STRICT = True
    yield settings
    from recordings.writer import shutdown_writer

    # The writer threads hold connections to the test database, which must be closed
    # before pytest-django can flush or drop it.
    shutdown_writer()


def _closing(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    finally:
        connections.close_all()


async def in_db(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ORM code from an async test, in a thread whose connection is closed afterwards."""
    return await asyncio.to_thread(_closing, fn, *args)
