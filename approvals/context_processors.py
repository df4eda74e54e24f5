"""The approvals count in the navigation, on every page a reviewer opens."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def pending_approvals(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_role("reviewer"):
        return {}
    from approvals.models import ApprovalRequest

    return {"approvals_live": True, "approvals_pending": ApprovalRequest.objects.awaiting(user).count()}
