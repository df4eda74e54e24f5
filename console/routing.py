"""Websocket routes of every app, gathered in one place."""

from django.urls import path  # noqa: F401

from recordings.routing import websocket_urlpatterns as recordings_websockets

websocket_urlpatterns: list = []
websocket_urlpatterns += recordings_websockets

from approvals.routing import websocket_urlpatterns as approvals_routes  # noqa: E402

websocket_urlpatterns += approvals_routes
