"""Forms of the policy editor.

Forms translate what a person typed into a policy spec (or a rule of one) and show the
engine's problems next to the field they are about: the view validates the whole
candidate spec (``policies.spec.validate_policy_spec``, then ``compile_policy`` with the
reviewer groups that can approve) and hands the problems to ``show_problems``, which
maps each problem's path (``policy.rules[2].match.tables[0]``) to a field. Forms never
save anything themselves: the views call ``policies.actions``.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.validators import RegexValidator

from policies.classification import FACTS, OPERATIONS
from policies.packs import PACKS
from policies.spec import DEFAULT_ACTIONS, MAX_APPROVALS, PROTOCOLS, as_list

POLICY_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$",
    "Use letters, digits, '.', '_' and '-', starting with a letter or digit.",
)
_SEPARATORS = re.compile(r"[,\n]")
_PATH_STEP = re.compile(r"^\.?([A-Za-z_]+)(?:\[(\d+)\])?")

LIST_HELP = "Separate several with commas or new lines."
RULE_ACTIONS = (
    ("allow", "allow: the statement runs"),
    ("deny", "deny: refused with the message"),
    ("review", "review: held until reviewers approve"),
    ("observe", "observe: note the match, enforce nothing"),
)


def split_list(text: str) -> list[str]:
    """``"a, b\\nc"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [item.strip() for item in _SEPARATORS.split(text or "") if item.strip()]


def join_list(value: Any) -> str:
    if value is None:
        return ""
    return ", ".join(str(item) for item in as_list(value))


def list_field(label: str, help_text: str = "", *, rows: int = 0) -> forms.CharField:
    widget: forms.Widget = (
        forms.Textarea(attrs={"rows": rows}) if rows else forms.TextInput(attrs={"autocomplete": "off"})
    )
    return forms.CharField(
        label=label,
        required=False,
        widget=widget,
        help_text=f"{help_text} {LIST_HELP}".strip(),
    )


def _timeout_value(text: str) -> int | str:
    # A stored whole number of seconds stays a number, so editing a rule does not turn
    # ``timeout: 600`` into ``"600"`` (a spurious change in the version history).
    return int(text) if text.isdigit() else text


class ProblemsMixin:
    """Shows spec problems (``(path, message)``) next to the fields they are about."""

    def name_reviewer_groups(self, groups: set[str]) -> None:
        """Say, under the reviewers field, which groups can review now."""
        form: forms.Form = self  # type: ignore[assignment]
        field = form.fields["reviewers"]
        names = ", ".join(sorted(groups)) if groups else "none: put someone in a group first"
        field.help_text = f"{field.help_text} Groups that can review: {names}."

    # Path step after the prefix -> form field ("match.tables" -> "tables").
    problem_fields: dict[str, str] = {}
    list_fields: tuple[str, ...] = ()

    def show_problems(self, problems: list[tuple[str, str]], prefix: str) -> None:
        form: forms.Form = self  # type: ignore[assignment]
        # add_error drops a field from cleaned_data: read the typed lists first.
        lists = {name: split_list(form.cleaned_data.get(name) or "") for name in self.list_fields}
        for path, message in problems:
            field, index = self._field_of(path, prefix)
            if field is None:
                form.add_error(None, f"{path}: {message}")
                continue
            items = lists.get(field, [])
            if index is not None and index < len(items) and repr(items[index]) not in message:
                # Say which item of the list the problem is about.
                message = f"{items[index]!r}: {message}"
            form.add_error(field, message)

    def _field_of(self, path: str, prefix: str) -> tuple[str | None, int | None]:
        if not path.startswith(prefix) or path[len(prefix) : len(prefix) + 1] not in (".", "["):
            return None, None
        rest = path[len(prefix) :]
        step = _PATH_STEP.match(rest)
        if step is None:
            return None, None
        key, index = step.group(1), step.group(2)
        if key == "match":
            nested = _PATH_STEP.match(rest[step.end() :])
            if nested is None:
                return None, None
            key, index = f"match.{nested.group(1)}", nested.group(2)
        field = self.problem_fields.get(key)
        return field, int(index) if index is not None and field else None


class CommentField(forms.CharField):
    def __init__(self) -> None:
        super().__init__(
            max_length=255,
            required=False,
            label="Comment",
            help_text="Why this change (kept with the version; optional).",
        )


class PolicyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[POLICY_NAME])
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    start_from = forms.ChoiceField(
        label="Start from",
        required=False,
        widget=forms.RadioSelect,
        choices=[("", "an empty policy: no rules, everything is denied")]
        + [(name, f"the {name} pack: {spec['description']}") for name, spec in PACKS.items()],
    )
    comment = CommentField()


class VersionedForm(forms.Form):
    """Every change names the version it was made against (see ``PolicyChanged``)."""

    version = forms.IntegerField(widget=forms.HiddenInput, min_value=0)


class SettingsForm(ProblemsMixin, VersionedForm):
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    default = forms.ChoiceField(
        choices=[(a, a) for a in DEFAULT_ACTIONS], help_text="What happens when no rule matches."
    )
    on_parse_error = forms.ChoiceField(
        label="On parse error",
        choices=[(a, a) for a in DEFAULT_ACTIONS],
        help_text="What happens to a statement that does not parse or cannot be judged.",
    )
    reviewers = list_field("Reviewers", "Groups that review when the default or on parse error is review.")
    approvals = forms.IntegerField(required=False, min_value=1, max_value=MAX_APPROVALS)
    timeout = forms.CharField(required=False, help_text="30s, 10m, 2h, 1d.")
    trusted_functions = list_field(
        "Trusted functions", "Extension functions (globs) known to be read-only.", rows=2
    )
    comment = CommentField()

    problem_fields = {
        "default": "default",
        "on_parse_error": "on_parse_error",
        "reviewers": "reviewers",
        "approvals": "approvals",
        "timeout": "timeout",
        "trusted_functions": "trusted_functions",
    }
    list_fields = ("reviewers", "trusted_functions")

    @staticmethod
    def initial_from(policy: Any) -> dict[str, Any]:
        spec = policy.spec
        return {
            "version": policy.version,
            "description": policy.description,
            "default": spec.get("default", "deny"),
            "on_parse_error": spec.get("on_parse_error", "deny"),
            "reviewers": join_list(spec.get("reviewers")),
            "approvals": spec.get("approvals"),
            "timeout": str(spec.get("timeout", "")),
            "trusted_functions": join_list(spec.get("trusted_functions")),
        }

    def spec(self, current: dict[str, Any]) -> dict[str, Any]:
        """``current`` with the settings of this form (its rules untouched)."""
        data = self.cleaned_data
        spec = {
            k: v
            for k, v in current.items()
            if k
            not in ("default", "on_parse_error", "reviewers", "approvals", "timeout", "trusted_functions")
        }
        spec["default"] = data["default"]
        spec["on_parse_error"] = data["on_parse_error"]
        if split_list(data["reviewers"]):
            spec["reviewers"] = split_list(data["reviewers"])
        if data["approvals"] is not None:
            spec["approvals"] = data["approvals"]
        if data["timeout"].strip():
            spec["timeout"] = _timeout_value(data["timeout"].strip())
        if split_list(data["trusted_functions"]):
            spec["trusted_functions"] = split_list(data["trusted_functions"])
        return spec


def _checkboxes(label: str, values: tuple[str, ...], help_text: str = "") -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(
        label=label,
        required=False,
        choices=[(v, v) for v in values],
        widget=forms.CheckboxSelectMultiple,
        help_text=help_text,
    )


# Match keys edited as a comma/newline separated list of names or globs.
MATCH_LIST_KEYS = ("connections", "agents", "groups", "tables", "functions", "settings")
MATCH_CHOICE_KEYS = ("protocol", "operations", "facts")


class RuleForm(ProblemsMixin, VersionedForm):
    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    action = forms.ChoiceField(choices=RULE_ACTIONS)
    would = forms.ChoiceField(
        label="Would",
        required=False,
        choices=[("", "—"), *((a, a) for a in DEFAULT_ACTIONS)],
        help_text="For observe rules: what the rule would do (deny when not said).",
    )
    message = forms.CharField(
        required=False, strip=False, help_text="What the agent sees (e.g. in the 42501 error)."
    )
    # What the rule matches (all given keys must match).
    protocol = _checkboxes("Protocol", PROTOCOLS)
    connections = list_field("Connections", "Connection names or globs (shop, shop-*).")
    agents = list_field("Agents", "Agent names or globs.")
    groups = list_field("Agent groups", "The agent is in one of these groups.")
    operations = _checkboxes("Operations", OPERATIONS)
    tables = list_field("Tables", "Globs over schema.table (public.*, billing.invoice_*).", rows=2)
    functions = list_field("Functions", "Names, globs or sets (@server_files, @backend_control).", rows=2)
    settings = list_field("Settings", "Run-time settings the statement changes (role, *_timeout).", rows=2)
    facts = _checkboxes("Facts", FACTS)
    no_where = forms.ChoiceField(
        label="Reaches every row",
        required=False,
        choices=[("", "either"), ("true", "yes (no WHERE, TRUNCATE...)"), ("false", "no")],
    )
    regex = forms.CharField(
        label="Regular expression",
        required=False,
        strip=False,
        help_text="Searched (case-insensitive) in the normalized statement.",
    )
    # Review rules only.
    reviewers = list_field("Reviewers", "Groups whose members approve.")
    approvals = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_APPROVALS, help_text="How many approvals (1 when empty)."
    )
    timeout = forms.CharField(required=False, help_text="How long a statement waits: 30s, 10m, 2h, 1d.")
    approval_mode = forms.ChoiceField(
        label="Approval mode",
        required=False,
        choices=[
            ("", "the connection's (wait unless its approval_mode option says return)"),
            ("wait", "wait: hold the statement until reviewers decide"),
            ("return", "return: refuse at once naming the request; the same statement runs once approved"),
        ],
        help_text="Whether the agent waits for the decision. Set here, it overrides the connection's option.",
    )
    comment = CommentField()

    problem_fields = {
        "name": "name",
        "description": "description",
        "action": "action",
        "would": "would",
        "message": "message",
        "reviewers": "reviewers",
        "approvals": "approvals",
        "timeout": "timeout",
        "approval_mode": "approval_mode",
        "match": "protocol",  # the match as a whole (e.g. not a mapping): shown at its first field
        "match.no_where": "no_where",
        "match.regex": "regex",
        **{f"match.{key}": key for key in MATCH_LIST_KEYS + MATCH_CHOICE_KEYS},
    }
    list_fields = (*MATCH_LIST_KEYS, "reviewers")

    match_fields = (
        "protocol",
        "connections",
        "agents",
        "groups",
        "operations",
        "tables",
        "functions",
        "settings",
        "facts",
        "no_where",
        "regex",
    )
    review_fields = ("reviewers", "approvals", "timeout", "approval_mode")

    @staticmethod
    def initial_from(rule: dict[str, Any], version: int) -> dict[str, Any]:
        match = rule.get("match") or {}
        initial: dict[str, Any] = {
            "version": version,
            "name": rule.get("name", ""),
            "description": rule.get("description", ""),
            "action": rule.get("action", "deny"),
            "would": rule.get("would", ""),
            "message": rule.get("message", ""),
            "regex": match.get("regex", ""),
            "reviewers": join_list(rule.get("reviewers")),
            "approvals": rule.get("approvals"),
            "timeout": str(rule.get("timeout", "")),
            "approval_mode": rule.get("approval_mode", ""),
        }
        for key in MATCH_LIST_KEYS:
            initial[key] = join_list(match.get(key))
        for key in MATCH_CHOICE_KEYS:
            initial[key] = as_list(match.get(key, []))
        if "no_where" in match:
            initial["no_where"] = "true" if match["no_where"] else "false"
        return initial

    def rule(self) -> dict[str, Any]:
        data = self.cleaned_data
        rule: dict[str, Any] = {"name": data["name"].strip()}
        if data["description"]:
            rule["description"] = data["description"]
        match: dict[str, Any] = {}
        for key in self.match_fields:
            if key in MATCH_CHOICE_KEYS:
                if data[key]:
                    match[key] = list(data[key])
            elif key in MATCH_LIST_KEYS:
                if split_list(data[key]):
                    match[key] = split_list(data[key])
            elif key == "no_where":
                if data[key] in ("true", "false"):
                    match[key] = data[key] == "true"
            elif key == "regex" and data[key]:
                match[key] = data[key]
        if match:
            rule["match"] = match
        rule["action"] = data["action"]
        if data["would"]:
            rule["would"] = data["would"]
        if data["message"]:
            rule["message"] = data["message"]
        if split_list(data["reviewers"]):
            rule["reviewers"] = split_list(data["reviewers"])
        if data["approvals"] is not None:
            rule["approvals"] = data["approvals"]
        if data["timeout"].strip():
            rule["timeout"] = _timeout_value(data["timeout"].strip())
        if data["approval_mode"]:
            rule["approval_mode"] = data["approval_mode"]
        return rule


class MoveForm(VersionedForm):
    direction = forms.ChoiceField(choices=[("up", "up"), ("down", "down")])


class ImportForm(forms.Form):
    yaml = forms.CharField(
        label="YAML",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false"}),
        help_text="A policies: section with one policy (as manage.py export writes it), "
        "or one policy entry on its own.",
    )
    file = forms.FileField(label="or a file", required=False)
    replace = forms.BooleanField(
        label="Replace the policy of that name if it exists (as a new version)", required=False
    )
    comment = CommentField()

    MAX_BYTES = 1_000_000

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("file")
        if upload is not None:
            if upload.size > self.MAX_BYTES:
                self.add_error("file", f"The file is larger than {self.MAX_BYTES // 1000} kB.")
                return cleaned
            try:
                cleaned["text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("file", "The file is not UTF-8 text.")
                return cleaned
        else:
            cleaned["text"] = cleaned.get("yaml") or ""
        if not cleaned["text"].strip():
            self.add_error("yaml", "Paste a policy or choose a file.")
        elif len(cleaned["text"]) > self.MAX_BYTES:
            self.add_error("yaml", f"The text is longer than {self.MAX_BYTES // 1000} kB.")
        return cleaned


class TryForm(forms.Form):
    statement = forms.CharField(required=False, strip=False, max_length=100_000)
    agent = forms.CharField(max_length=63)
    connection = forms.CharField(max_length=63)
    version = forms.IntegerField(required=False, min_value=1)
