"""Forms of the masking policy editor.

``MaskingEditor`` bundles the policy's form and its four row sets (column rules, custom
entities, exemptions, group overrides), turns them into a ``masking:`` spec and bindings,
and puts the problems of ``masking.validate_masking_spec`` (``masking.custom[1].pattern``)
next to the field of the row they are about. Forms never save: the views call
``policies.masking_actions``.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth.models import Group
from django.http import QueryDict

from masking import BUILTIN_ENTITIES
from masking.validators import VALIDATORS
from policies.forms import POLICY_NAME, join_list, split_list

METHOD_CHOICES = (
    ("redact", "redact: [EMAIL]"),
    ("partial", "partial: [CARD:****1111]"),
    ("hash", "hash: [EMAIL:3f9a1c2b]"),
)
ENTITY_CHOICES = (("off", "off: not masked"), *METHOD_CHOICES)
ROW_EXTRA = 2
_PATH = re.compile(r"^masking\.(columns|custom|exempt)\[(\d+)\](?:\.(\w+))?")
_ENTITY_PATH = re.compile(r"^masking\.entities\.(\w+)")


class MaskingPolicyForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[POLICY_NAME])
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=0)
    default_method = forms.ChoiceField(
        choices=METHOD_CHOICES,
        initial="redact",
        help_text="For custom entities without a method of their own.",
    )
    connections = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Default masking of these connections",
        help_text="Every agent on these connections gets this policy, unless a group override picks another.",
    )

    def __init__(self, *args: Any, connection_names: list[str], editing: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connections"].choices = [(n, n) for n in connection_names]
        for entity in BUILTIN_ENTITIES:
            self.fields[f"entity_{entity}"] = forms.ChoiceField(
                choices=ENTITY_CHOICES, initial="redact", label=entity
            )
        if editing:
            self.fields["name"].disabled = True

    def entity_fields(self) -> list[forms.BoundField]:
        return [self[f"entity_{entity}"] for entity in BUILTIN_ENTITIES]


class ColumnRuleForm(forms.Form):
    match = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "public.users.email", "autocomplete": "off"}),
        help_text="table.column or schema.table.column; * ? [...] globs allowed.",
    )
    method = forms.ChoiceField(choices=METHOD_CHOICES, initial="redact")
    entity = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "masked", "autocomplete": "off"}),
        help_text="The label ([EMAIL]) and hash normalisation; default masked.",
    )

    def spec(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if not data.get("match"):
            return None
        rule = {"match": data["match"].strip(), "method": data["method"]}
        if data.get("entity"):
            rule["entity"] = data["entity"].strip()
        return rule


class CustomEntityForm(forms.Form):
    name = forms.CharField(
        required=False, widget=forms.TextInput(attrs={"placeholder": "employee_id", "autocomplete": "off"})
    )
    pattern = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": r"\bEMP-(?P<secret>[0-9]{6})\b", "spellcheck": "false"}),
        help_text="A regular expression; its group named secret (if any) is what is masked.",
    )
    validator = forms.ChoiceField(
        required=False, choices=[("", "none"), *((v, v) for v in sorted(VALIDATORS))]
    )
    deny_list = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Literal values, matched as whole words, one a line.",
    )
    ignore_case = forms.BooleanField(required=False)
    method = forms.ChoiceField(required=False, choices=[("", "default method"), *METHOD_CHOICES])

    def spec(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if not any(data.get(k) for k in ("name", "pattern", "deny_list")):
            return None
        entry: dict[str, Any] = {"name": (data.get("name") or "").strip()}
        if data.get("pattern"):
            entry["pattern"] = data["pattern"]
        if data.get("validator"):
            entry["validator"] = data["validator"]
        if data.get("deny_list"):
            entry["deny_list"] = [v.strip() for v in data["deny_list"].splitlines() if v.strip()]
        if data.get("ignore_case"):
            entry["ignore_case"] = True
        if data.get("method"):
            entry["method"] = data["method"]
        return entry


class ExemptionForm(forms.Form):
    column = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "orders.order_ref", "autocomplete": "off"}),
    )
    group = forms.ChoiceField(required=False)
    entities = forms.CharField(
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "card", "autocomplete": "off"}),
        help_text="Empty: every entity.",
    )
    reason = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
        help_text="Required: why these values may be seen (kept in the audit log).",
    )

    def __init__(self, *args: Any, group_names: list[str] = (), **kwargs: Any) -> None:  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        self.fields["group"].choices = [("", "any agent"), *((g, g) for g in group_names)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("column") or data.get("group") or data.get("entities")) and not (
            data.get("reason") or ""
        ).strip():
            self.add_error("reason", "Say why this exemption is needed.")
        return data

    def spec(self) -> dict[str, Any] | None:
        data = self.cleaned_data
        if not (data.get("column") or data.get("group") or data.get("entities")):
            return None
        entry: dict[str, Any] = {}
        if data.get("column"):
            entry["column"] = data["column"].strip()
        if data.get("group"):
            entry["group"] = data["group"]
        if data.get("entities"):
            entry["entities"] = split_list(data["entities"])
        entry["reason"] = data["reason"].strip()
        return entry


class OverrideForm(forms.Form):
    connection = forms.ChoiceField(required=False)
    group = forms.ChoiceField(required=False)

    def __init__(
        self,
        *args: Any,
        connection_names: list[str] = (),  # type: ignore[assignment]
        group_names: list[str] = (),  # type: ignore[assignment]
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connection"].choices = [("", "—"), *((n, n) for n in connection_names)]
        self.fields["group"].choices = [("", "—"), *((g, g) for g in group_names)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("connection")) != bool(data.get("group")):
            self.add_error(None, "An override needs both a connection and a group.")
        return data


ColumnRuleFormSet = forms.formset_factory(ColumnRuleForm, extra=ROW_EXTRA)
CustomEntityFormSet = forms.formset_factory(CustomEntityForm, extra=ROW_EXTRA)
ExemptionFormSet = forms.formset_factory(ExemptionForm, extra=ROW_EXTRA)
OverrideFormSet = forms.formset_factory(OverrideForm, extra=ROW_EXTRA)


def entity_methods(spec: dict[str, Any]) -> dict[str, str]:
    """The method of each built-in entity under ``spec`` ("off" when not masked)."""
    default = spec.get("default_method", "redact")
    entities = spec.get("entities", "all")
    if entities == "all":
        methods = dict.fromkeys(BUILTIN_ENTITIES, default)
    elif isinstance(entities, list):
        methods = dict.fromkeys(entities, default)
    else:
        methods = {k: (v.get("method") if isinstance(v, dict) else v) for k, v in entities.items()}
    return {e: methods.get(e, "off") for e in BUILTIN_ENTITIES}


def initial_from(
    name: str, description: str, version: int, spec: dict[str, Any], bindings: list[tuple[str, str | None]]
) -> dict[str, Any]:
    """The editor's initial data for a stored policy."""
    default = spec.get("default_method", "redact")
    methods = entity_methods(spec)
    policy: dict[str, Any] = {
        "name": name,
        "description": description,
        "version": version,
        "default_method": default,
        "connections": [c for c, g in bindings if g is None],
        **{f"entity_{e}": methods[e] for e in BUILTIN_ENTITIES},
    }
    custom = [
        {
            **{k: v for k, v in c.items() if k != "deny_list"},
            "deny_list": "\n".join(c.get("deny_list") or []),
        }
        for c in spec.get("custom", [])
    ]
    exempt = [
        {**x, "entities": join_list(x.get("entities")) if x.get("entities") else ""}
        for x in spec.get("exempt", [])
    ]
    return {
        "policy": policy,
        "columns": list(spec.get("columns", [])),
        "custom": custom,
        "exempt": exempt,
        "overrides": [{"connection": c, "group": g} for c, g in bindings if g is not None],
    }


class MaskingEditor:
    """The whole editor: the policy form and its row sets, bound or not."""

    def __init__(
        self,
        data: QueryDict | None,
        *,
        initial: dict[str, Any] | None = None,
        editing: bool = False,
        original: dict[str, Any] | None = None,
    ) -> None:
        from gateway.models import Connection

        initial = initial or {"policy": {"version": 0}}
        connection_names = list(Connection.objects.order_by("name").values_list("name", flat=True))
        group_names = list(Group.objects.order_by("name").values_list("name", flat=True))
        self.policy = MaskingPolicyForm(
            data, initial=initial["policy"], connection_names=connection_names, editing=editing
        )
        self.columns = ColumnRuleFormSet(data, initial=initial.get("columns"), prefix="columns")
        self.custom = CustomEntityFormSet(data, initial=initial.get("custom"), prefix="custom")
        self.exempt = ExemptionFormSet(
            data, initial=initial.get("exempt"), prefix="exempt", form_kwargs={"group_names": group_names}
        )
        self.overrides = OverrideFormSet(
            data,
            initial=initial.get("overrides"),
            prefix="overrides",
            form_kwargs={"connection_names": connection_names, "group_names": group_names},
        )
        self._rows: dict[str, list[forms.Form]] = {}
        # The stored spec: how it wrote what the form means (entities as a list, a method
        # as {method: ...}) is kept, so that saving an untouched page changes nothing.
        self._original = original

    @property
    def parts(self) -> list[Any]:
        return [self.policy, self.columns, self.custom, self.exempt, self.overrides]

    def is_valid(self) -> bool:
        return all([part.is_valid() for part in self.parts])  # every part, for every error

    def spec(self) -> dict[str, Any]:
        """The ``masking:`` spec the valid forms describe."""
        data = self.policy.cleaned_data
        default = data["default_method"]
        spec: dict[str, Any] = {}
        if default != "redact":
            spec["default_method"] = default
        methods = {e: data[f"entity_{e}"] for e in BUILTIN_ENTITIES}
        original = self._original
        if (
            original is not None
            and original.get("default_method", "redact") == default
            and entity_methods(original) == methods
        ):
            if "default_method" in original:
                spec["default_method"] = original["default_method"]
            if "entities" in original:
                spec["entities"] = original["entities"]
        elif any(m != default for m in methods.values()):
            spec["entities"] = {e: m for e, m in methods.items() if m != "off"}
        for key, formset in (("custom", self.custom), ("columns", self.columns), ("exempt", self.exempt)):
            rows: list[forms.Form] = []
            entries = []
            for form in formset.forms:
                entry = form.spec()  # type: ignore[attr-defined]
                if entry is not None:
                    rows.append(form)
                    entries.append(entry)
            self._rows[key] = rows
            if entries:
                spec[key] = entries
        return spec

    def bindings(self) -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = [(c, None) for c in self.policy.cleaned_data["connections"]]
        for form in self.overrides.forms:
            if form.cleaned_data.get("connection") and form.cleaned_data.get("group"):
                found.append((form.cleaned_data["connection"], form.cleaned_data["group"]))
        return found

    def show_problems(self, problems: list[tuple[str, str]]) -> None:
        """Each ``(path, message)`` of ``validate_masking_spec`` next to its field."""
        for path, message in problems:
            entity = _ENTITY_PATH.match(path)
            row = _PATH.match(path)
            if entity and f"entity_{entity.group(1)}" in self.policy.fields:
                self.policy.add_error(f"entity_{entity.group(1)}", message)
            elif row and int(row.group(2)) < len(self._rows.get(row.group(1), [])):
                form = self._rows[row.group(1)][int(row.group(2))]
                field = row.group(3)
                if field in form.fields:
                    form.add_error(field, message)
                else:
                    rest = path[row.end() :]
                    form.add_error(None, f"{field or ''}{rest}: {message}".lstrip(": ") if field else message)
            else:
                self.policy.add_error(None, f"{path}: {message}")
