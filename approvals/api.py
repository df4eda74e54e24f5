"""The approvals JSON API: list, get, approve, reject (docs/api.md).

Authenticated by the browser session, whose POSTs need Django's CSRF token (the
``X-CSRFToken`` header), or by a person's API token (``Authorization: Bearer alp_...``),
which needs none: a browser never sends that header by itself, so another site cannot
make it send one. A token acts with its person's roles as they are now. Only the
``Authorization`` header is read: a token in the URL is refused (URLs end up in logs).
Errors are JSON ``{"error": "..."}`` with 400 (bad input), 401 (not logged in, or a
token refused: unknown, revoked, expired, its person disabled), 403 (not allowed), 404
(no such request) or 409 (the request can no longer be decided).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from approvals import actions
from approvals.cards import as_json
from approvals.models import ApprovalRequest
from approvals.views import _get_request_for_user
from identity import tokens
from identity.actions import PersonTokenRefused, authenticate_person_token, note_person_token_used

MAX_LIST = 200


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


class _CsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF check, run by the API for session requests only (the API views
    are ``csrf_exempt`` so that bearer requests are not asked for a token they cannot have)."""

    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def _csrf_failure(request: HttpRequest) -> str | None:
    check = _CsrfCheck(lambda request: None)  # type: ignore[arg-type,return-value]
    check.process_request(request)
    reason: str | None = check.process_view(request, lambda request: None, (), {})  # type: ignore[assignment]
    return reason


def _token_refused(reason: str) -> JsonResponse:
    response = _error(401, reason)
    response["WWW-Authenticate"] = 'Bearer realm="airlock", error="invalid_token"'
    return response


def _authenticate(request: HttpRequest) -> JsonResponse | None:
    """Put the request's person in ``request.user``: from the bearer token when there is an
    ``Authorization`` header (and then only from it), else from the session. A JSON error
    when that fails, or a session POST lacks its CSRF token."""
    for values in request.GET.lists():
        if any(tokens.looks_like_person_token(value) for value in values[1]):
            return _error(
                400,
                "an API token goes in the Authorization header (Bearer <token>), never in the URL; "
                "revoke this one, it may be in a log now",
            )
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is None:
        if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            reason = _csrf_failure(request)
            if reason:
                return _error(403, f"CSRF verification failed: {reason}")
        return None
    scheme, _, raw = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return _token_refused("the Authorization header must be: Bearer <your API token>")
    try:
        token = authenticate_person_token(raw.strip())
    except PersonTokenRefused as exc:
        return _token_refused(exc.reason)
    request.user = token.user
    note_person_token_used(token, source_address=request.META.get("REMOTE_ADDR", ""), path=request.path)
    return None


def api_role_required(*roles: str) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """``console.roles.role_required`` for the API: session or bearer token (see the module
    docstring), JSON 401/403 instead of a login redirect. The view must be ``csrf_exempt``:
    this checks CSRF itself, for session requests."""

    def decorator(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            refused = _authenticate(request)
            if refused is not None:
                return refused
            user = request.user
            if not user.is_authenticated:
                return _error(401, "log in first, or send a personal API token (Authorization: Bearer ...)")
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


@csrf_exempt
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


@csrf_exempt
@never_cache
@require_GET
@api_role_required("admin", "reviewer", "auditor")
def request_detail(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(as_json(_get_request_for_user(request.user, pk), request.user))


def _decide(request: HttpRequest, pk: int, verb: str) -> JsonResponse:
    # The request is read once, locked, by the action: a decision it accepts was made by a
    # reviewer of the request's groups, and those see the request (``visible_to``), so no
    # read beforehand is needed to refuse others. A refused decision is answered as the
    # request's own page would be first (404: no such request, 403: not theirs to see),
    # then with why it was refused.
    try:
        data = _body(request)
        if verb == "approve":
            decided = actions.do_approve(
                request.user, pk, comment=data.get("comment", ""), grant_minutes=data.get("grant_minutes")
            )
        else:
            decided = actions.do_reject(request.user, pk, reason=data.get("reason", ""))
    except actions.ApprovalError as exc:
        req = _get_request_for_user(request.user, pk)
        if isinstance(exc, actions.InvalidInput):
            return _error(400, str(exc))
        if isinstance(exc, actions.NotAllowed):
            return _error(403, str(exc))
        if isinstance(exc, actions.IllegalTransition):
            if req.is_overdue():
                actions.do_expire(req.pk)
            return _error(409, str(exc))
        raise
    # The request as the decision left it (read under its lock, with whether a reviewer
    # group is this person's); its decisions are read again, the new one among them.
    return JsonResponse(as_json(decided, request.user))


@csrf_exempt
@never_cache
@require_POST
@api_role_required("reviewer")
def approve(request: HttpRequest, pk: int) -> JsonResponse:
    return _decide(request, pk, "approve")


@csrf_exempt
@never_cache
@require_POST
@api_role_required("reviewer")
def reject(request: HttpRequest, pk: int) -> JsonResponse:
    return _decide(request, pk, "reject")
