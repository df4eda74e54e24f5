"""Websocket routes of every app, gathered in one place."""

from django.urls import path  # noqa: F401

websocket_urlpatterns: list = []
