"""The approvals JSON API: list, get, approve, reject (docs/api.md).

Authenticated by the browser session; POSTs need Django's CSRF token (the
``X-CSRFToken`` header). Errors are JSON ``{"error": "..."}`` with 400 (bad input), 401
(not logged in), 403 (not allowed), 404 (no such request) or 409 (the request can no longer
be decided).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from approvals import actions
from approvals.cards import as_json
from approvals.models import ApprovalRequest
from approvals.views import _get_request_for_user

MAX_LIST = 200


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def api_role_required(*roles: str) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """``console.roles.role_required`` for the API: JSON 401/403 instead of a login redirect."""

    def decorator(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            user = request.user
            if not user.is_authenticated:
                return _error(401, "log in first")
            if not user.has_role(*roles):  # type: ignore[union-attr]
                return _error(403, "you do not have a role that allows this")
            try:
                return view(request, *args, **kwargs)
            except Http404:
                return _error(404, "no such approval request")
            except PermissionDenied:
                return _error(403, "this approval request is not yours to see")

        return wrapper

    return decorator


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise actions.InvalidInput("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise actions.InvalidInput("the body must be a JSON object")
        return data
    return request.POST.dict()


@never_cache
@require_GET
@api_role_required("admin", "reviewer", "auditor")
def request_list(request: HttpRequest) -> JsonResponse:
    status = request.GET.get("status", "pending")
    try:
        limit = min(MAX_LIST, max(1, int(request.GET.get("limit", "50"))))
    except ValueError:
        return _error(400, "limit must be a number")
    visible = ApprovalRequest.objects.visible_to(request.user)
    if status == "pending":
        chosen = visible.pending().order_by("expires_at", "id")
    elif status == "decided":
        chosen = visible.decided()
    elif status == "awaiting":
        chosen = ApprovalRequest.objects.awaiting(request.user).order_by("expires_at", "id")
    else:
        return _error(400, "status must be pending, awaiting or decided")
    items = chosen.prefetch_related("decisions", "reviewer_groups")[:limit]
    return JsonResponse({"requests": [as_json(req, request.user) for req in items]})


@never_cache
@require_GET
@api_role_required("admin", "reviewer", "auditor")
def request_detail(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(as_json(_get_request_for_user(request.user, pk), request.user))


def _decide(request: HttpRequest, pk: int, verb: str) -> JsonResponse:
    req = _get_request_for_user(request.user, pk)
    try:
        data = _body(request)
        if verb == "approve":
            actions.do_approve(
                request.user, req.pk, comment=data.get("comment", ""), grant_minutes=data.get("grant_minutes")
            )
        else:
            actions.do_reject(request.user, req.pk, reason=data.get("reason", ""))
    except actions.InvalidInput as exc:
        return _error(400, str(exc))
    except actions.NotAllowed as exc:
        return _error(403, str(exc))
    except actions.IllegalTransition as exc:
        if req.is_overdue():
            actions.do_expire(req.pk)
        return _error(409, str(exc))
    req.refresh_from_db()
    return JsonResponse(as_json(req, request.user))


@never_cache
@require_POST
@api_role_required("reviewer")
def approve(request: HttpRequest, pk: int) -> JsonResponse:
    return _decide(request, pk, "approve")


@never_cache
@require_POST
@api_role_required("reviewer")
def reject(request: HttpRequest, pk: int) -> JsonResponse:
    return _decide(request, pk, "reject")
