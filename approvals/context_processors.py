"""The approvals count in the navigation, on every page a reviewer opens, and how the
reviewer's pages learn of changes: ``push`` (a channel layer that crosses processes sends
every change to the websocket) or ``poll`` (the in-memory layer of the embedded default:
the inbox and a request's page fetch themselves again every few seconds)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def pending_approvals(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_role("reviewer"):
        return {}
    from approvals.events import layer_crosses_processes
    from approvals.models import ApprovalRequest

    return {
        "approvals_live": True,
        "approvals_updates": "push" if layer_crosses_processes() else "poll",
        "approvals_pending": ApprovalRequest.objects.awaiting(user).count(),
    }
