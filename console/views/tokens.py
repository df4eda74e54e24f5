"""A person's API tokens for the JSON API (docs/api.md): create, list, revoke.

Everyone logged in manages their own tokens here; admins also see and revoke everyone's.
As for agents' tokens (console/views/agents.py), the raw token is in exactly one response,
the page answering the POST that created it, and the form's one-time nonce keeps a reload
from showing it again or making a second one.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from console.forms import PersonTokenForm
from console.roles import role_required
from console.views.agents import _consume_nonce, _new_nonce
from identity import actions
from identity.models import PersonToken, User

login_required = role_required()


def _get_person_token_for_user(request: HttpRequest, pk: int) -> PersonToken:
    """The person's own token, or anyone's for an admin; 404 otherwise (whether someone
    else's token exists is not told)."""
    user: User = request.user  # type: ignore[assignment]
    token = PersonToken.objects.select_related("user").filter(pk=pk).first()
    if token is None or (token.user_id != user.pk and not user.is_airlock_admin):
        raise Http404("no such token")
    return token


def _tokens_page(
    request: HttpRequest, form: PersonTokenForm | None = None, status: int = 200
) -> HttpResponse:
    user: User = request.user  # type: ignore[assignment]
    nonce = _new_nonce(request)
    if form is None:
        form = PersonTokenForm(initial={"nonce": nonce})
    else:
        # Shown again after a mistake: it needs a fresh nonce, the old one is spent.
        form.data = form.data.copy()
        form.data["nonce"] = nonce
    everyone = None
    if user.is_airlock_admin:
        everyone = PersonToken.objects.exclude(user=user).select_related("user", "created_by")
    context = {
        "form": form,
        "tokens": user.api_tokens.select_related("created_by"),
        "everyone": everyone,
    }
    return render(request, "console/tokens/list.html", context, status=status)


@never_cache
@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    return _tokens_page(request)


@never_cache
@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = PersonTokenForm(request.POST)
    if not form.is_valid():
        return _tokens_page(request, form)
    if not _consume_nonce(request, form.cleaned_data["nonce"]):
        messages.info(
            request,
            "That form was already used. A token is shown only once: create a new one if you need it.",
        )
        return redirect("person_tokens")
    expires_at = timezone.now() + timedelta(days=form.cleaned_data["expires_in_days"])
    try:
        issued = actions.do_create_person_token(
            request.user, request.user, name=form.cleaned_data["name"], expires_at=expires_at
        )
    except ValueError as exc:
        form.add_error(None, str(exc))
        return _tokens_page(request, form)
    return render(request, "console/tokens/created.html", {"issued": issued})


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = _get_person_token_for_user(request, pk)
    if actions.do_revoke_person_token(request.user, token):
        owner = "" if token.user_id == request.user.pk else f" of {token.user.get_username()}"
        messages.success(request, f"Token {token.prefix}…{owner} revoked.")
    return redirect("person_tokens")
