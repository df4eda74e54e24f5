"""The policy editor (admins): policies, their rules in order, versions, import/export, "Try it".

Every change is a new version through ``policies.actions.do_save_policy`` (author, time,
comment), made against the version the person was looking at (``expected_version``), and
only when the whole spec compiles with the reviewer groups that can approve. Problems are
shown next to the field they are about (``policies.forms.ProblemsMixin``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.roles import admin_required
from gateway.declarative.loader import ConfigError
from gateway.models import Connection
from identity.models import Agent
from policies import actions
from policies.engine import PolicyError, compile_policy
from policies.forms import (
    ImportForm,
    MoveForm,
    PolicyCreateForm,
    RuleForm,
    SettingsForm,
    TryForm,
    VersionedForm,
    join_list,
)
from policies.imports import read_policy_yaml
from policies.models import Policy, PolicyVersion, default_spec
from policies.packs import pack
from policies.spec import MATCH_KEYS, validate_policy_spec
from policies.stored import compile_stored, decision_as_dict, request_for, reviewer_groups
from policies.yamlio import canonical_yaml, policy_document_yaml, spec_diff

# --- helpers ------------------------------------------------------------------------------


def _get_policy_for_user(request: HttpRequest, pk: int) -> Policy:
    # Policies are admin-only; every view here is behind admin_required already.
    return get_object_or_404(Policy, pk=pk)


def _get_version_for_user(request: HttpRequest, policy: Policy, number: int) -> PolicyVersion:
    return get_object_or_404(PolicyVersion.objects.select_related("author"), policy=policy, number=number)


def _rules(policy: Policy) -> list[dict[str, Any]]:
    rules = policy.spec.get("rules", [])
    return rules if isinstance(rules, list) else []


def _rule_at(policy: Policy, index: int) -> dict[str, Any]:
    rules = _rules(policy)
    if not 0 <= index < len(rules):
        raise Http404("no such rule")
    return rules[index]  # type: ignore[no-any-return]


def spec_problems(name: str, spec: dict[str, Any], known_groups: set[str]) -> list[tuple[str, str]]:
    """Every problem of ``spec`` as the editor shows it (paths start with ``policy``)."""
    problems = validate_policy_spec(spec, "policy")
    if problems:
        return problems
    try:
        compile_policy(name, 0, spec, known_groups=known_groups)
    except PolicyError as exc:
        return exc.problems
    return []


def _stale_message(policy: Policy, seen: int) -> str:
    return (
        f"Policy {policy.name} was saved by someone else since you opened it (it is now at version "
        f"{policy.version}, you edited version {seen}). Nothing was saved: reload it and make your change again."
    )


def _save(
    request: HttpRequest,
    policy: Policy,
    spec: dict[str, Any],
    *,
    expected: int,
    comment: str,
    known_groups: set[str],
    description: str | None = None,
) -> Policy:
    """Save ``spec`` as the next version; raises ``PolicyChanged`` or ``ValidationError``."""
    old_description = policy.description
    saved = actions.do_save_policy(
        request.user,
        policy.name,
        spec,
        description=policy.description if description is None else description,
        comment=comment,
        expected_version=expected,
        known_groups=known_groups,
    )
    if saved.version != expected:
        messages.success(request, f"Saved policy {saved.name} as version {saved.version}.")
    elif saved.description != old_description:
        messages.success(request, f"Saved the description of policy {saved.name}.")
    else:
        messages.info(request, "Nothing changed.")
    return saved


def _match_summary(rule: dict[str, Any]) -> list[tuple[str, str]]:
    match = rule.get("match") or {}
    if not isinstance(match, dict):
        return []
    keys = [k for k in MATCH_KEYS if k in match] + sorted(k for k in match if k not in MATCH_KEYS)
    summary = []
    for key in keys:
        value = match[key]
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, str | list):
            text = value if key == "regex" else join_list(value)
        else:
            text = str(value)
        summary.append((key, text))
    return summary


def _rule_rows(policy: Policy) -> list[dict[str, Any]]:
    rows = []
    rules = _rules(policy)
    for index, rule in enumerate(rules):
        rows.append(
            {
                "index": index,
                "number": index + 1,
                "first": index == 0,
                "last": index == len(rules) - 1,
                "rule": rule,
                "match": _match_summary(rule),
            }
        )
    return rows


def _try_choices(policy: Policy) -> dict[str, Any]:
    # Connections using this policy first: they are what it decides for.
    connections = sorted(
        Connection.objects.select_related("policy"),
        key=lambda c: (c.policy_id != policy.pk, c.name),
    )
    return {"try_agents": list(Agent.objects.order_by("name")), "try_connections": connections}


def _detail_context(policy: Policy) -> dict[str, Any]:
    return {
        "policy": policy,
        "rules": _rule_rows(policy),
        "connections": list(policy.connections.order_by("name")),
        "recent_versions": list(policy.versions.select_related("author")[:5]),
        "version_form": VersionedForm(initial={"version": policy.version}),
        **_try_choices(policy),
    }


# --- list, create, delete -----------------------------------------------------------------


@admin_required
@require_GET
def policy_list(request: HttpRequest) -> HttpResponse:
    policies = Policy.objects.prefetch_related(
        Prefetch("connections", queryset=Connection.objects.order_by("name"))
    ).order_by("name")
    rows = [
        {"policy": p, "rule_count": len(_rules(p)), "default": p.spec.get("default", "deny")}
        for p in policies
    ]
    return render(request, "policies/list.html", {"rows": rows})


@admin_required
@require_http_methods(["GET", "POST"])
def policy_create(request: HttpRequest) -> HttpResponse:
    form = PolicyCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        spec = pack(data["start_from"]) if data["start_from"] else default_spec()
        pack_description = spec.pop("description", "")
        description = data["description"] or pack_description
        comment = data["comment"] or (
            f"created from the {data['start_from']} pack" if data["start_from"] else "created"
        )
        try:
            policy = actions.do_save_policy(
                request.user,
                data["name"],
                spec,
                description=description,
                comment=comment,
                expected_version=0,
                known_groups=reviewer_groups(),
            )
        except actions.PolicyChanged:
            form.add_error("name", "A policy with this name already exists.")
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Policy {policy.name} created.")
            return redirect("policies:detail", pk=policy.pk)
    return render(request, "policies/create.html", {"form": form})


@admin_required
@require_http_methods(["GET", "POST"])
def policy_delete(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    if request.method == "POST":
        name = policy.name
        try:
            actions.do_delete_policy(request.user, policy)
        except actions.PolicyInUse as exc:
            messages.error(request, f"Not deleted: {exc}. Give those connections another policy first.")
            return redirect("policies:detail", pk=policy.pk)
        messages.success(request, f"Policy {name} deleted.")
        return redirect("policies:list")
    return render(
        request,
        "policies/delete.html",
        {"policy": policy, "connections": list(policy.connections.order_by("name"))},
    )


# --- the policy page, settings and rules ----------------------------------------------------


@admin_required
@require_GET
def policy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    return render(request, "policies/detail.html", _detail_context(policy))


def _stale(form: VersionedForm, policy: Policy) -> bool:
    seen = form.cleaned_data["version"]
    if seen != policy.version:
        form.add_error(None, _stale_message(policy, seen))
        return True
    return False


def _save_form(
    request: HttpRequest,
    policy: Policy,
    form: SettingsForm | RuleForm,
    spec: dict[str, Any],
    prefix: str,
    comment: str,
    description: str | None = None,
) -> Policy | None:
    """Validate ``spec`` (problems shown on ``form``) and save it; None when not saved."""
    known = reviewer_groups()
    form.show_problems(spec_problems(policy.name, spec, known), prefix)
    if form.errors:
        return None
    try:
        return _save(
            request,
            policy,
            spec,
            expected=form.cleaned_data["version"],
            comment=form.cleaned_data["comment"] or comment,
            known_groups=known,
            description=description,
        )
    except actions.PolicyChanged:
        policy.refresh_from_db()
        form.add_error(None, _stale_message(policy, form.cleaned_data["version"]))
    except ValidationError as exc:
        form.add_error(None, exc)
    return None


@admin_required
@require_http_methods(["GET", "POST"])
def policy_settings(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    if request.method == "POST":
        form = SettingsForm(request.POST)
        if form.is_valid() and not _stale(form, policy):
            saved = _save_form(
                request,
                policy,
                form,
                form.spec(policy.spec),
                "policy",
                "changed the settings",
                description=form.cleaned_data["description"],
            )
            if saved is not None:
                return redirect("policies:detail", pk=policy.pk)
    else:
        form = SettingsForm(initial=SettingsForm.initial_from(policy))
    form.name_reviewer_groups(reviewer_groups())
    return render(request, "policies/settings.html", {"policy": policy, "form": form})


def _position_choices(policy: Policy) -> list[tuple[str, str]]:
    rules = _rules(policy)
    choices = [(str(len(rules)), "at the end")]
    choices += [(str(i), f"before rule {i + 1} ({r.get('name', '?')})") for i, r in enumerate(rules)]
    return choices


@admin_required
@require_http_methods(["GET", "POST"])
def rule_add(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    positions = _position_choices(policy)
    if request.method == "POST":
        form = RuleForm(request.POST)
        position = request.POST.get("position", str(len(_rules(policy))))
        if form.is_valid() and not _stale(form, policy):
            index = int(position) if position in {value for value, _ in positions} else len(_rules(policy))
            rule = form.rule()
            rules = list(_rules(policy))
            rules.insert(index, rule)
            saved = _save_form(
                request,
                policy,
                form,
                {**policy.spec, "rules": rules},
                f"policy.rules[{index}]",
                f"added rule {rule['name']!r}",
            )
            if saved is not None:
                return redirect(reverse("policies:detail", kwargs={"pk": policy.pk}) + f"#rule-{index + 1}")
    else:
        form = RuleForm(initial={"version": policy.version, "action": "deny"})
        position = str(len(_rules(policy)))
    form.name_reviewer_groups(reviewer_groups())
    return render(
        request,
        "policies/rule_form.html",
        {"policy": policy, "form": form, "index": None, "positions": positions, "position": position},
    )


@admin_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    current = _rule_at(policy, index)
    if request.method == "POST":
        form = RuleForm(request.POST)
        if form.is_valid() and not _stale(form, policy):
            rule = form.rule()
            rules = list(_rules(policy))
            rules[index] = rule
            saved = _save_form(
                request,
                policy,
                form,
                {**policy.spec, "rules": rules},
                f"policy.rules[{index}]",
                f"edited rule {rule['name']!r}",
            )
            if saved is not None:
                return redirect(reverse("policies:detail", kwargs={"pk": policy.pk}) + f"#rule-{index + 1}")
    else:
        form = RuleForm(initial=RuleForm.initial_from(current, policy.version))
    form.name_reviewer_groups(reviewer_groups())
    return render(
        request,
        "policies/rule_form.html",
        {"policy": policy, "form": form, "index": index, "number": index + 1, "rule": current},
    )


def _button_save(request: HttpRequest, policy: Policy, spec: dict[str, Any], seen: int, comment: str) -> None:
    """Save from a button (delete, move): problems become messages on the policy page."""
    try:
        _save(request, policy, spec, expected=seen, comment=comment, known_groups=reviewer_groups())
    except actions.PolicyChanged:
        policy.refresh_from_db()
        messages.error(request, _stale_message(policy, seen))
    except ValidationError as exc:
        messages.error(request, "Not saved: " + "; ".join(exc.messages))


@admin_required
@require_POST
def rule_delete(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    rule = _rule_at(policy, index)
    form = VersionedForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The form was incomplete: nothing was deleted.")
    else:
        rules = [r for i, r in enumerate(_rules(policy)) if i != index]
        _button_save(
            request,
            policy,
            {**policy.spec, "rules": rules},
            form.cleaned_data["version"],
            f"deleted rule {rule.get('name')!r}",
        )
    return redirect("policies:detail", pk=policy.pk)


@admin_required
@require_POST
def rule_move(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    rule = _rule_at(policy, index)
    form = MoveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The form was incomplete: nothing was moved.")
        return redirect("policies:detail", pk=policy.pk)
    direction = form.cleaned_data["direction"]
    target = index - 1 if direction == "up" else index + 1
    rules = list(_rules(policy))
    if not 0 <= target < len(rules):
        messages.info(
            request, f"Rule {rule.get('name')!r} is already {'first' if direction == 'up' else 'last'}."
        )
        return redirect("policies:detail", pk=policy.pk)
    rules[index], rules[target] = rules[target], rules[index]
    _button_save(
        request,
        policy,
        {**policy.spec, "rules": rules},
        form.cleaned_data["version"],
        f"moved rule {rule.get('name')!r} {direction}",
    )
    return redirect(reverse("policies:detail", kwargs={"pk": policy.pk}) + f"#rule-{target + 1}")


# --- try it ---------------------------------------------------------------------------------


@dataclass
class TryResult:
    errors: list[str] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    version: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def try_statement(policy: Policy, form: TryForm) -> TryResult:
    """The decision of ``policy`` (or one of its versions) exactly as the gateway makes it."""
    if not form.is_valid():
        return TryResult(errors=[f"{name}: {'; '.join(errs)}" for name, errs in form.errors.items()])
    data = form.cleaned_data
    agent = Agent.objects.prefetch_related("groups").filter(name=data["agent"]).first()
    connection = Connection.objects.select_related("policy").filter(name=data["connection"]).first()
    errors = []
    if agent is None:
        errors.append(f"no agent named {data['agent']!r}")
    if connection is None:
        errors.append(f"no connection named {data['connection']!r}")
    number = data["version"] or policy.version
    spec = policy.spec
    if number != policy.version:
        old = PolicyVersion.objects.filter(policy=policy, number=number).first()
        if old is None:
            errors.append(f"policy {policy.name} has no version {number}")
        else:
            spec = old.spec
    if errors or agent is None or connection is None:
        return TryResult(errors=errors)
    result = TryResult(version=number)
    if connection.policy_id != policy.pk:
        using = f"policy {connection.policy.name}" if connection.policy else "no policy"
        result.notes.append(
            f"Connection {connection.name} uses {using}, not this one: this is what {policy.name} would decide."
        )
    if not set(agent.group_names()) & set(connection.groups.values_list("name", flat=True)):
        result.notes.append(
            f"Agent {agent.name} is in none of the groups of connection {connection.name}: "
            "the gateway refuses its login there."
        )
    if not agent.enabled:
        result.notes.append(f"Agent {agent.name} is disabled: the gateway refuses its login.")
    try:
        compiled = compile_stored(policy, spec=spec, version=number)
    except PolicyError as exc:
        result.errors = [f"{path}: {message}" for path, message in exc.problems]
        result.errors.insert(
            0, f"Version {number} of this policy does not compile, so the gateway denies everything:"
        )
        return result
    if data["statement"].strip():
        decision = compiled.evaluate(request_for(connection, agent, data["statement"]))
        result.decision = decision_as_dict(decision)
    return result


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@admin_required
@require_POST
def policy_try(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    form = TryForm(request.POST)
    result = try_statement(policy, form)
    if _wants_json(request):
        html = render_to_string("policies/includes/try_result.html", {"result": result}, request=request)
        return JsonResponse(
            {
                "ok": result.ok,
                "errors": result.errors,
                "notes": result.notes,
                "version": result.version,
                "decision": result.decision,
                "html": html,
            },
            status=200 if result.ok else 400,
        )
    # Without JavaScript the form posts here and the policy page shows the result.
    context = {**_detail_context(policy), "try_form": form, "try_result": result}
    return render(request, "policies/detail.html", context, status=200 if result.ok else 400)


# --- versions -------------------------------------------------------------------------------


@admin_required
@require_GET
def version_list(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    versions = policy.versions.select_related("author")
    return render(request, "policies/versions.html", {"policy": policy, "versions": versions})


@admin_required
@require_GET
def version_detail(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    version = _get_version_for_user(request, policy, number)
    against_number = request.GET.get("against", "")
    if against_number.isdigit():
        against = _get_version_for_user(request, policy, int(against_number))
    else:
        against = PolicyVersion.objects.filter(policy=policy, number__lt=number).order_by("-number").first()
    diff = spec_diff(
        against.spec if against else None,
        version.spec,
        f"version {against.number}" if against else "(nothing)",
        f"version {number}",
    )
    return render(
        request,
        "policies/version.html",
        {
            "policy": policy,
            "version": version,
            "against": against,
            "diff": diff,
            "yaml": canonical_yaml(version.spec),
            "is_current": actions.canonical_spec(version.spec) == actions.canonical_spec(policy.spec),
            "version_form": VersionedForm(initial={"version": policy.version}),
            "other_versions": policy.versions.exclude(number=number).values_list("number", flat=True),
            **_try_choices(policy),
        },
    )


@admin_required
@require_POST
def version_rollback(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    _get_version_for_user(request, policy, number)
    form = VersionedForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The form was incomplete: nothing was rolled back.")
        return redirect("policies:version", pk=policy.pk, number=number)
    seen = form.cleaned_data["version"]
    try:
        saved = actions.do_rollback_policy(
            request.user, policy, number, expected_version=seen, known_groups=reviewer_groups()
        )
    except actions.PolicyChanged:
        policy.refresh_from_db()
        messages.error(request, _stale_message(policy, seen))
        return redirect("policies:version", pk=policy.pk, number=number)
    except ValidationError as exc:
        messages.error(request, f"Version {number} cannot be restored: " + "; ".join(exc.messages))
        return redirect("policies:version", pk=policy.pk, number=number)
    if saved.version == seen:
        messages.info(request, f"Version {number} is what the policy holds already: nothing changed.")
    else:
        messages.success(
            request, f"Rolled back to version {number}: the policy is now at version {saved.version}."
        )
    return redirect("policies:detail", pk=policy.pk)


# --- import and export ----------------------------------------------------------------------


def _filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "policy"


@admin_required
@require_GET
def policy_export(request: HttpRequest, pk: int) -> HttpResponse:
    policy = _get_policy_for_user(request, pk)
    number = request.GET.get("version", "")
    spec, version_number = policy.spec, policy.version
    if number.isdigit() and int(number) != policy.version:
        version = _get_version_for_user(request, policy, int(number))
        spec, version_number = version.spec, version.number
    header = (
        f"Airlock policy {policy.name}, version {version_number} "
        f"(exported {timezone.now():%Y-%m-%d %H:%M} UTC).\n"
        "Apply it with: manage.py apply -f FILE, or import it in the console."
    )
    text = policy_document_yaml(policy.name, policy.description, spec, header=header)
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    suffix = "" if version_number == policy.version else f"-v{version_number}"
    response["Content-Disposition"] = f'attachment; filename="{_filename(policy.name)}{suffix}.yaml"'
    return response


@admin_required
@require_http_methods(["GET", "POST"])
def policy_import(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST or None, request.FILES or None)
    problems = []
    if request.method == "POST" and form.is_valid():
        known = reviewer_groups()
        try:
            imported = read_policy_yaml(form.cleaned_data["text"], known)
        except ConfigError as exc:
            problems = exc.problems
        else:
            existing = Policy.objects.filter(name=imported.name).first()
            if existing is not None and not form.cleaned_data["replace"]:
                form.add_error(
                    "replace",
                    f"A policy named {imported.name} exists (version {existing.version}). Tick this to save "
                    "the imported one as its next version, or change the name in the YAML.",
                )
            else:
                seen = existing.version if existing else 0
                try:
                    policy = actions.do_save_policy(
                        request.user,
                        imported.name,
                        imported.spec,
                        description=imported.description,
                        comment=form.cleaned_data["comment"] or "imported from YAML",
                        expected_version=seen,
                        known_groups=known,
                    )
                except actions.PolicyChanged as exc:
                    form.add_error(None, f"{exc}: nothing was imported, try again.")
                except ValidationError as exc:
                    form.add_error(None, exc)
                else:
                    if existing is None:
                        messages.success(request, f"Policy {policy.name} imported.")
                    elif policy.version != seen:
                        messages.success(
                            request, f"Policy {policy.name} imported as version {policy.version}."
                        )
                    elif policy.description != existing.description:
                        messages.success(request, f"Policy {policy.name}: the description was updated.")
                    else:
                        messages.info(request, f"Policy {policy.name} already holds this: nothing changed.")
                    return redirect("policies:detail", pk=policy.pk)
    return render(request, "policies/import.html", {"form": form, "problems": problems})
