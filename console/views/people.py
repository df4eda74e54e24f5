"""People (local accounts and those created by single sign-on) and groups."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console.forms import GroupCreateForm, UserCreateForm, UserGroupsForm
from console.roles import admin_required
from identity import actions
from identity.models import User


def _get_person_for_user(request: HttpRequest, pk: int) -> User:
    # People pages are admin-only; the decorator has checked the role already.
    return get_object_or_404(User, pk=pk)


def _role_by_group() -> dict[str, str]:
    return {group: role for role, group in settings.AIRLOCK_ROLE_GROUPS.items()}


@admin_required
def people_list(request: HttpRequest) -> HttpResponse:
    people = User.objects.prefetch_related("groups", "socialaccount_set").order_by("username")
    return render(request, "console/people/list.html", {"people": people, "role_by_group": _role_by_group()})


@admin_required
@require_http_methods(["GET", "POST"])
def person_create(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            person = actions.do_create_user(
                request.user,
                data["username"],
                password=data["password1"],
                email=data["email"],
                first_name=data["first_name"],
                last_name=data["last_name"],
                groups=data["groups"],
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"{person.username} can now log in.")
            return redirect("people_list")
    return render(request, "console/people/create.html", {"form": form})


@admin_required
@require_http_methods(["GET", "POST"])
def person_edit(request: HttpRequest, pk: int) -> HttpResponse:
    person = _get_person_for_user(request, pk)
    form = UserGroupsForm(
        request.POST if request.method == "POST" else None, initial={"groups": list(person.groups.all())}
    )
    if request.method == "POST" and form.is_valid():
        try:
            actions.do_set_user_groups(request.user, person, form.cleaned_data["groups"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Groups of {person.username} saved.")
            return redirect("people_list")
    return render(
        request,
        "console/people/edit.html",
        {"form": form, "person": person, "role_by_group": _role_by_group()},
    )


@admin_required
@require_POST
def person_set_active(request: HttpRequest, pk: int) -> HttpResponse:
    person = _get_person_for_user(request, pk)
    active = request.POST.get("active") == "1"
    try:
        actions.do_set_user_active(request.user, person, active)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{person.username} {'enabled' if active else 'disabled'}.")
    return redirect("person_edit", pk=person.pk)


@admin_required
@require_http_methods(["GET", "POST"])
def group_list(request: HttpRequest) -> HttpResponse:
    form = GroupCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            group = actions.do_create_group(request.user, form.cleaned_data["name"], exist_ok=False)
        except ValidationError as exc:
            form.add_error("name", exc)
        else:
            messages.success(request, f"Group {group.name} created.")
            return redirect("group_list")
    groups = Group.objects.annotate(
        people=Count("user", distinct=True),
        agent_count=Count("agents", distinct=True),
        connection_count=Count("connections", distinct=True),
    ).order_by("name")
    return render(
        request,
        "console/people/groups.html",
        {"groups": groups, "form": form, "role_by_group": _role_by_group()},
    )
