"""Connections: list, detail, create (one form per kind), edit, delete, test."""

from __future__ import annotations

import importlib.util

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from audit.models import AuditRecord
from console.forms import CONNECTION_FORMS, ConnectionForm
from console.roles import admin_required
from gateway import actions
from gateway.models import Connection
from gateway.secrets import SecretDecryptionError, get_secrets, secret_field_names


def _get_connection_for_user(request: HttpRequest, pk: int) -> Connection:
    # Connections are admin-only; the decorator has checked the role already.
    return get_object_or_404(Connection.objects.select_related("policy"), pk=pk)


def probe_available() -> bool:
    return importlib.util.find_spec("gateway.probe") is not None


def _form_class(kind: str) -> type[ConnectionForm]:
    try:
        return CONNECTION_FORMS[kind]
    except KeyError:
        raise Http404("no such connection kind") from None


@admin_required
def connection_list(request: HttpRequest) -> HttpResponse:
    connections = Connection.objects.select_related("policy").prefetch_related("groups")
    return render(
        request,
        "console/connections/list.html",
        {"connections": connections, "kinds": Connection.Kind.choices},
    )


def _detail_context(connection: Connection) -> dict[str, object]:
    from django.conf import settings

    from recordings.models import ConnectionRule

    return {
        "connection": connection,
        "recordings_rule": ConnectionRule.objects.filter(connection_name=connection.name).first(),
        "default_retention_days": settings.RECORDING_RETENTION_DAYS,
        "secrets_set": secret_field_names(connection),
        "probe_available": probe_available(),
        "history": AuditRecord.objects.filter(
            target_type=connection._meta.label_lower, target_id=str(connection.pk)
        )[:20],
    }


@admin_required
def connection_detail(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _get_connection_for_user(request, pk)
    return render(request, "console/connections/detail.html", _detail_context(connection))


@admin_required
@require_http_methods(["GET", "POST"])
def connection_create(request: HttpRequest, kind: str) -> HttpResponse:
    form_class = _form_class(kind)
    form = form_class(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            connection = actions.do_create_connection(
                request.user,
                kind=kind,
                groups=form.cleaned_data["groups"],
                secret_values=form.secret_values(),
                **form.action_fields(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Connection {connection.name} created.")
            return redirect("connection_detail", pk=connection.pk)
    return render(
        request,
        "console/connections/form.html",
        {"form": form, "kind_label": Connection.Kind(kind).label, "connection": None},
    )


@admin_required
@require_http_methods(["GET", "POST"])
def connection_edit(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _get_connection_for_user(request, pk)
    form_class = _form_class(connection.kind)
    form = form_class(
        request.POST if request.method == "POST" else None,
        instance=connection,
        secrets_set=secret_field_names(connection),
    )
    if request.method == "POST" and form.is_valid():
        try:
            connection = actions.do_update_connection(
                request.user,
                connection,
                groups=form.cleaned_data["groups"],
                secret_values=form.secret_values(),
                **form.action_fields(),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Connection {connection.name} saved.")
            return redirect("connection_detail", pk=connection.pk)
    return render(
        request,
        "console/connections/form.html",
        {"form": form, "kind_label": connection.get_kind_display(), "connection": connection},
    )


@admin_required
@require_http_methods(["GET", "POST"])
def connection_delete(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _get_connection_for_user(request, pk)
    if request.method == "POST":
        name = connection.name
        actions.do_delete_connection(request.user, connection)
        messages.success(request, f"Connection {name} deleted.")
        return redirect("connection_list")
    return render(request, "console/connections/delete.html", {"connection": connection})


def _scrub(message: str, secrets: dict[str, str]) -> str:
    """Remove every secret value (and each line of a multi-line one) from a message."""
    for value in secrets.values():
        for piece in [value, *value.splitlines()]:
            piece = piece.strip()
            if len(piece) >= 4:
                message = message.replace(piece, "[secret]")
    return message


@admin_required
@require_POST
def connection_test(request: HttpRequest, pk: int) -> HttpResponse:
    connection = _get_connection_for_user(request, pk)
    context = _detail_context(connection)
    if not context["probe_available"]:
        context["probe"] = {"ok": False, "message": "Connection tests are not available in this build."}
        return render(request, "console/connections/detail.html", context, status=501)
    from gateway.probe import test_connection

    try:
        secrets = get_secrets(connection)
    except SecretDecryptionError as exc:
        context["probe"] = {"ok": False, "message": str(exc)}
        return render(request, "console/connections/detail.html", context)
    result = test_connection(connection)
    # The probe scrubs its own messages; this second pass keeps a slip there from reaching a page.
    context["probe"] = {
        "ok": result.ok,
        "message": _scrub(result.message, secrets),
        "elapsed_ms": result.elapsed_ms,
    }
    return render(request, "console/connections/detail.html", context)
