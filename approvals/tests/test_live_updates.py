"""How a reviewer's pages learn of changes: pushed over the websocket by a channel layer that
crosses processes (Redis), or fetched again every few seconds on the in-memory layer of the
embedded default, which never carries what the gateway's process publishes."""

from __future__ import annotations

import pytest
from channels.layers import InMemoryChannelLayer
from django.test import Client
from django.urls import reverse

from approvals.events import layer_crosses_processes
from approvals.tests.factories import make_request

REDIS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": []}}}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class OwnInMemoryLayer(InMemoryChannelLayer):
    """A deployment's own in-memory layer: no more shared between processes than its parent."""


def test_redis_crosses_processes(settings):
    settings.CHANNEL_LAYERS = REDIS
    assert layer_crosses_processes()


def test_the_in_memory_layer_does_not(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY
    assert not layer_crosses_processes()


def test_nor_a_subclass_of_it_nor_no_layer_at_all(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.OwnInMemoryLayer"}}
    assert not layer_crosses_processes()
    settings.CHANNEL_LAYERS = {}
    assert not layer_crosses_processes()


@pytest.mark.parametrize(("layers", "updates"), [(REDIS, "push"), (IN_MEMORY, "poll")])
def test_the_inbox_and_a_requests_page_tell_live_js_which(world, bob, settings, layers, updates):
    settings.CHANNEL_LAYERS = layers
    req = make_request(world)
    client = Client()
    client.force_login(bob)
    inbox = client.get(reverse("approvals:inbox")).content.decode()
    assert f'<div id="approvals-inbox" data-updates="{updates}">' in inbox
    detail = client.get(reverse("approvals:detail", args=[req.pk])).content.decode()
    assert f'<div id="approval-detail" data-id="{req.pk}" data-updates="{updates}">' in detail
