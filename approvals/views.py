"""Reviewer pages: the live inbox, a request's own page, and form fallbacks for deciding.

The inbox and the request page work without JavaScript (plain forms); with it, the inbox
updates over the websocket (``approvals.consumers``), and on the embedded default's
in-memory channel layer also reloads its lists from the page every few seconds (the
context processor's ``approvals_updates``), and decisions go through the JSON API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from approvals import actions
from approvals.cards import card_context
from approvals.models import ApprovalRequest
from console.roles import any_role_required, role_required

HISTORY_ON_INBOX = 50


def _get_request_for_user(user: Any, pk: int) -> ApprovalRequest:
    """The request if ``user`` may see it: 404 if it does not exist, 403 if not theirs."""
    req = ApprovalRequest.objects.visible_to(user).filter(pk=pk).first()
    if req is None:
        if not ApprovalRequest.objects.filter(pk=pk).exists():
            raise Http404("no such approval request")
        raise PermissionDenied
    return req


@role_required("reviewer")
def inbox(request: HttpRequest) -> HttpResponse:
    mine = ApprovalRequest.objects.for_reviewer(request.user).prefetch_related("decisions", "reviewer_groups")
    pending = [card_context(req, request.user) for req in mine.pending().order_by("expires_at", "id")]
    history = [card_context(req, request.user) for req in mine.decided()[:HISTORY_ON_INBOX]]
    return render(request, "approvals/inbox.html", {"pending": pending, "history": history})


@any_role_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    req = _get_request_for_user(request.user, pk)
    return render(request, "approvals/detail.html", {"card": card_context(req, request.user)})


def _decide(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    req = _get_request_for_user(request.user, pk)
    try:
        if verb == "approve":
            actions.do_approve(
                request.user,
                req.pk,
                comment=request.POST.get("comment", ""),
                grant_minutes=request.POST.get("grant_minutes") or None,
            )
            messages.success(request, f"You approved request {req.pk}.")
        else:
            actions.do_reject(request.user, req.pk, reason=request.POST.get("reason", ""))
            messages.success(request, f"You rejected request {req.pk}.")
    except actions.IllegalTransition as exc:
        if req.is_overdue():
            actions.do_expire(req.pk)
        messages.error(request, str(exc))
    except actions.ApprovalError as exc:
        messages.error(request, str(exc))
    return redirect("approvals:detail", pk=req.pk)


@require_POST
@role_required("reviewer")
def approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "approve")


@require_POST
@role_required("reviewer")
def reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, "reject")
