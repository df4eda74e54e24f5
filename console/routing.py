"""Websocket routes of every app, gathered in one place."""

from django.urls import path  # noqa: F401

websocket_urlpatterns: list = []

from approvals.routing import websocket_urlpatterns as approvals_routes  # noqa: E402

websocket_urlpatterns += approvals_routes
