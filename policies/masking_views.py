"""The masking policy editor (admins): list, create, edit, bind, delete, and "Try it".

Every change goes through ``policies.masking_actions.do_save_masking_policy`` (audit
record, version bumped when the spec changes), against the version the person was
looking at, and only when the whole spec validates and compiles: problems are shown next
to the row and field they are about (``MaskingEditor.show_problems``), nothing is saved.

"Try it" masks pasted text with the saved policy exactly as the gateway masks notices and
free text, and says what was masked and why; "Run a sample query" runs a read-only query
on a connection and shows the masked result (``policies.masking_sample``). Neither ever
renders, logs or stores an unmasked value.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.roles import admin_required
from gateway.masking_runtime import hash_key
from gateway.models import Connection
from masking import MaskingError, MaskingSpecError, compile_policy, validate_masking_spec
from masking.explain import explain_text
from policies import masking_actions
from policies.masking_forms import MaskingEditor, entity_methods, initial_from
from policies.models import MaskingBinding, MaskingPolicy

TRY_MAX_CHARS = 20_000


def _get_masking_policy_for_user(request: HttpRequest, pk: int) -> MaskingPolicy:
    # Masking policies are admin-only, like policies; every view here is behind admin_required.
    return get_object_or_404(MaskingPolicy, pk=pk)


def spec_problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem of ``spec`` as the gateway would meet it (validation, then compiling)."""
    problems = validate_masking_spec(spec, "masking")
    if problems:
        return problems
    try:
        compile_policy(spec, hash_key=hash_key())
    except MaskingSpecError as exc:
        return list(exc.problems)
    return []


def _bindings(policy: MaskingPolicy) -> list[MaskingBinding]:
    return list(
        policy.bindings.select_related("connection", "group").order_by("connection__name", "group__name")
    )


# --- list, create, edit, delete --------------------------------------------------------------


@admin_required
@require_GET
def masking_list(request: HttpRequest) -> HttpResponse:
    policies = MaskingPolicy.objects.prefetch_related(
        Prefetch(
            "bindings",
            queryset=MaskingBinding.objects.select_related("connection", "group").order_by(
                "connection__name", "group__name"
            ),
        )
    ).order_by("name")
    return render(request, "policies/masking/list.html", {"policies": policies})


def _save_editor(
    request: HttpRequest, editor: MaskingEditor, policy: MaskingPolicy | None
) -> MaskingPolicy | None:
    """Save what the editor describes; None (and the problems on the forms) when refused."""
    if not editor.is_valid():
        return None
    spec = editor.spec()
    problems = spec_problems(spec)
    if problems:
        editor.show_problems(problems)
        return None
    data = editor.policy.cleaned_data
    name = policy.name if policy is not None else data["name"]
    seen = data["version"]
    try:
        saved = masking_actions.do_save_masking_policy(
            request.user,
            name,
            spec,
            description=data["description"],
            bindings=editor.bindings(),
            expected_version=seen,
        )
    except masking_actions.MaskingPolicyChanged:
        if policy is None:
            editor.policy.add_error("name", "A masking policy with this name already exists.")
        else:
            current = MaskingPolicy.objects.filter(pk=policy.pk).values_list("version", flat=True).first()
            editor.policy.add_error(
                None,
                f"Masking policy {name} was saved by someone else since you opened it (it is now at "
                f"version {current}, you edited version {seen}). Nothing was saved: reload it and "
                "make your change again.",
            )
        return None
    except ValidationError as exc:
        for message in exc.messages:
            editor.policy.add_error(None, message)
        return None
    if policy is None:
        messages.success(request, f"Masking policy {saved.name} created.")
    elif saved.version != seen:
        messages.success(request, f"Saved masking policy {saved.name} as version {saved.version}.")
    else:
        messages.success(request, f"Saved masking policy {saved.name}.")
    return saved


@admin_required
@require_http_methods(["GET", "POST"])
def masking_create(request: HttpRequest) -> HttpResponse:
    editor = MaskingEditor(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        saved = _save_editor(request, editor, None)
        if saved is not None:
            return redirect("policies:masking_detail", pk=saved.pk)
    return render(request, "policies/masking/edit.html", {"editor": editor, "policy": None})


@admin_required
@require_http_methods(["GET", "POST"])
def masking_edit(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_masking_policy_for_user(request, pk)
    initial = initial_from(
        policy.name, policy.description, policy.version, policy.spec, masking_actions.bindings_of(policy)
    )
    if request.method == "POST":
        # The name cannot change here (a disabled field takes its initial value).
        editor = MaskingEditor(request.POST, initial=initial, editing=True, original=policy.spec)
        saved = _save_editor(request, editor, policy)
        if saved is not None:
            return redirect("policies:masking_detail", pk=saved.pk)
    else:
        editor = MaskingEditor(None, initial=initial, editing=True)
    return render(request, "policies/masking/edit.html", {"editor": editor, "policy": policy})


@admin_required
@require_http_methods(["GET", "POST"])
def masking_delete(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_masking_policy_for_user(request, pk)
    if request.method == "POST":
        name = policy.name
        masking_actions.do_delete_masking_policy(request.user, policy)
        messages.success(request, f"Masking policy {name} deleted.")
        return redirect("policies:masking_list")
    return render(request, "policies/masking/delete.html", {"policy": policy, "bindings": _bindings(policy)})


# --- the policy page and Try it ---------------------------------------------------------------


class TryTextForm(forms.Form):
    text = forms.CharField(required=False, max_length=TRY_MAX_CHARS, strip=False)
    group = forms.CharField(required=False, max_length=150)


def _detail_context(policy: MaskingPolicy) -> dict[str, Any]:
    from policies.masking_sample import SampleForm

    methods = entity_methods(policy.spec) if isinstance(policy.spec, dict) else {}
    return {
        "policy": policy,
        "entity_methods": [(entity, method) for entity, method in methods.items() if method != "off"],
        "bindings": _bindings(policy),
        "groups": list(Group.objects.order_by("name").values_list("name", flat=True)),
        "sample_form": SampleForm(),
        "connections": list(Connection.objects.filter(kind="postgres").order_by("name")),
    }


@admin_required
@require_GET
def masking_detail(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_masking_policy_for_user(request, pk)
    return render(request, "policies/masking/detail.html", _detail_context(policy))


def try_text(policy: MaskingPolicy, text: str, group: str = "") -> dict[str, Any]:
    """What the saved ``policy`` masks in ``text`` for an agent in ``group`` (the view's result)."""
    try:
        compiled = compile_policy(policy.spec, hash_key=hash_key())
    except MaskingSpecError as exc:
        return {
            "errors": ["This policy does not compile, so the gateway refuses logins that would use it:"]
            + [f"{path}: {message}" for path, message in exc.problems]
        }
    view = compiled.for_groups([group] if group else [])
    try:
        explanation = explain_text(view, text)
    except MaskingError:
        return {"errors": ["This text could not be masked: the gateway would withhold it."]}
    return {"errors": [], "explanation": explanation, "group": group}


@admin_required
@require_POST
def masking_try(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_masking_policy_for_user(request, pk)
    form = TryTextForm(request.POST)
    if form.is_valid():
        result = try_text(policy, form.cleaned_data["text"], form.cleaned_data["group"])
    else:
        result = {"errors": [f"{name}: {'; '.join(errs)}" for name, errs in form.errors.items()]}
    status = 400 if result["errors"] else 200
    if "application/json" in request.headers.get("Accept", ""):
        html = render_to_string("policies/masking/try_result.html", {"result": result}, request=request)
        explanation = result.get("explanation")
        return JsonResponse(
            {
                "ok": not result["errors"],
                "errors": result["errors"],
                "masked": explanation.masked if explanation else None,
                "counts": explanation.counts if explanation else {},
                "html": html,
            },
            status=status,
        )
    context = {**_detail_context(policy), "try_form": form, "try_result": result}
    return render(request, "policies/masking/detail.html", context, status=status)


@admin_required
@require_POST
def masking_sample(request: HttpRequest, pk: int) -> HttpResponse:
    from policies.masking_sample import SampleForm, SampleResult, run_sample

    policy = _get_masking_policy_for_user(request, pk)
    form = SampleForm(request.POST)
    result = SampleResult()
    if not form.is_valid():
        result.errors = [f"{name}: {'; '.join(errs)}" for name, errs in form.errors.items()]
    else:
        connection = Connection.objects.filter(name=form.cleaned_data["connection"], kind="postgres").first()
        if connection is None:
            result.errors = [f"no PostgreSQL connection named {form.cleaned_data['connection']!r}"]
        else:
            try:
                compiled = compile_policy(policy.spec, hash_key=hash_key())
            except MaskingSpecError:
                result.errors = ["This policy does not compile, so nothing can be masked with it."]
            else:
                group = form.cleaned_data["group"]
                masking = compiled.for_groups([group] if group else [])
                if not connection.enabled:
                    result.errors = [f"connection {connection.name} is disabled"]
                else:
                    result = run_sample(masking, connection, form.cleaned_data["query"])
                try:
                    shown_query = masking.mask_text(form.cleaned_data["query"])[0]
                except MaskingError:
                    shown_query = "<withheld: it could not be masked>"
                masking_actions.do_record_sample_query(
                    request.user,
                    policy,
                    connection=connection.name,
                    query=shown_query,
                    rows=len(result.rows),
                    error="; ".join(result.errors),
                )
    context = {**_detail_context(policy), "sample_form": form, "sample_result": result}
    return render(request, "policies/masking/detail.html", context, status=400 if result.errors else 200)
