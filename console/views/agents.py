"""Agents and their tokens.

A new token's raw value is in exactly one response: the page that answers the POST that
issued it. It is never put in the session, in messages or in a redirect URL. The issue form
carries a one-time nonce, so that reloading that page (which re-sends the POST) neither
shows the token again nor issues a second one.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from audit.models import AuditRecord
from console.forms import AgentForm, TokenIssueForm
from console.roles import admin_required
from identity import actions
from identity.models import Agent, AgentToken

NONCE_SESSION_KEY = "airlock_token_nonces"
MAX_NONCES = 20


def _get_agent_for_user(request: HttpRequest, pk: int) -> Agent:
    # Agents are admin-only; the decorator has checked the role already.
    return get_object_or_404(Agent.objects.select_related("on_behalf_of", "owner"), pk=pk)


def _new_nonce(request: HttpRequest) -> str:
    nonce = secrets.token_urlsafe(18)
    kept = list(request.session.get(NONCE_SESSION_KEY, []))[-(MAX_NONCES - 1) :]
    request.session[NONCE_SESSION_KEY] = [*kept, nonce]
    return nonce


def _consume_nonce(request: HttpRequest, nonce: str) -> bool:
    kept = list(request.session.get(NONCE_SESSION_KEY, []))
    if nonce not in kept:
        return False
    kept.remove(nonce)
    request.session[NONCE_SESSION_KEY] = kept
    # Saved now, before the token is issued, so a second submission racing this one sees it gone.
    request.session.save()
    return True


@admin_required
def agent_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    usable = Q(tokens__revoked_at__isnull=True) & (
        Q(tokens__expires_at__isnull=True) | Q(tokens__expires_at__gt=now)
    )
    agents = (
        Agent.objects.select_related("on_behalf_of", "owner")
        .prefetch_related("groups")
        .annotate(active_token_count=Count("tokens", filter=usable))
    )
    return render(request, "console/agents/list.html", {"agents": agents})


def _agent_page(request: HttpRequest, agent: Agent, token_form: TokenIssueForm | None = None) -> HttpResponse:
    nonce = _new_nonce(request)
    if token_form is None:
        token_form = TokenIssueForm(initial={"nonce": nonce})
    else:
        # Re-shown after a mistake: it needs a fresh nonce, the old one is spent.
        token_form.data = token_form.data.copy()
        token_form.data["nonce"] = nonce
    context = {
        "agent": agent,
        "tokens": agent.tokens.select_related("created_by"),
        "token_form": token_form,
        "history": AuditRecord.objects.filter(target_type=agent._meta.label_lower, target_id=str(agent.pk))[
            :20
        ],
    }
    return render(request, "console/agents/detail.html", context)


@admin_required
def agent_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _agent_page(request, _get_agent_for_user(request, pk))


def _agent_fields(form: AgentForm) -> dict[str, object]:
    data = form.cleaned_data
    return {
        "description": data["description"],
        "groups": [group.name for group in data["groups"]],
        "on_behalf_of": data["on_behalf_of"],
        "owner": data["owner"],
        "enabled": data["enabled"],
    }


@admin_required
@require_http_methods(["GET", "POST"])
def agent_create(request: HttpRequest) -> HttpResponse:
    form = AgentForm(
        request.POST if request.method == "POST" else None, initial={"enabled": True, "owner": request.user}
    )
    if request.method == "POST" and form.is_valid():
        try:
            agent = actions.do_create_agent(request.user, form.cleaned_data["name"], **_agent_fields(form))  # type: ignore[arg-type]
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Agent {agent.name} created. Issue it a token below.")
            return redirect("agent_detail", pk=agent.pk)
    return render(request, "console/agents/form.html", {"form": form, "agent": None})


@admin_required
@require_http_methods(["GET", "POST"])
def agent_edit(request: HttpRequest, pk: int) -> HttpResponse:
    agent = _get_agent_for_user(request, pk)
    form = AgentForm(request.POST if request.method == "POST" else None, agent=agent)
    if request.method == "POST" and form.is_valid():
        try:
            agent = actions.do_update_agent(request.user, agent, **_agent_fields(form))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Agent {agent.name} saved.")
            return redirect("agent_detail", pk=agent.pk)
    return render(request, "console/agents/form.html", {"form": form, "agent": agent})


@never_cache
@admin_required
@require_POST
def token_issue(request: HttpRequest, pk: int) -> HttpResponse:
    agent = _get_agent_for_user(request, pk)
    form = TokenIssueForm(request.POST)
    if not form.is_valid():
        return _agent_page(request, agent, token_form=form)
    if not _consume_nonce(request, form.cleaned_data["nonce"]):
        messages.info(
            request,
            "That form was already used. A token is shown only once: issue a new one if you need it.",
        )
        return redirect("agent_detail", pk=agent.pk)
    days = form.cleaned_data["expires_in_days"]
    expires_at = timezone.now() + timedelta(days=days) if days else None
    issued = actions.do_issue_token(
        request.user, agent, expires_at=expires_at, label=form.cleaned_data["label"]
    )
    gateway_host, _, gateway_port = settings.GATEWAY_POSTGRES_LISTEN.rpartition(":")
    context = {"agent": agent, "issued": issued, "gateway_host": gateway_host, "gateway_port": gateway_port}
    return render(request, "console/agents/token_issued.html", context)


@admin_required
@require_POST
def token_revoke(request: HttpRequest, pk: int, token_pk: int) -> HttpResponse:
    agent = _get_agent_for_user(request, pk)
    token = get_object_or_404(AgentToken, pk=token_pk, agent=agent)
    if token.revoked_at is None:
        actions.do_revoke_token(request.user, token)
        messages.success(request, f"Token {token.prefix}… revoked.")
    return redirect("agent_detail", pk=agent.pk)
