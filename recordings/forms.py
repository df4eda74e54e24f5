from __future__ import annotations

from django import forms

from recordings.models import Session

PROTOCOLS = (("", "any"), ("postgres", "PostgreSQL"), ("ssh", "SSH"), ("kubernetes", "Kubernetes"))


class _LocalDateTime(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")


class SessionFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Statements or commands containing")
    agent = forms.CharField(required=False, max_length=255)
    on_behalf_of = forms.CharField(required=False, max_length=150, label="On behalf of")
    connection = forms.CharField(required=False, max_length=63)
    protocol = forms.ChoiceField(required=False, choices=PROTOCOLS)
    status = forms.ChoiceField(required=False, choices=(("", "any"), *Session.Status.choices))
    started_after = forms.DateTimeField(required=False, widget=_LocalDateTime(), label="Started after (UTC)")
    started_before = forms.DateTimeField(
        required=False, widget=_LocalDateTime(), label="Started before (UTC)"
    )
    had_denials = forms.BooleanField(required=False, label="had denials")
    had_approvals = forms.BooleanField(required=False, label="had approvals")
    had_masked = forms.BooleanField(required=False, label="had masked values")
    had_errors = forms.BooleanField(required=False, label="had errors")

    FLAG_FIELDS = {
        "had_denials": "denied_count",
        "had_approvals": "review_count",
        "had_masked": "masked_count",
        "had_errors": "error_count",
    }


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


class HoldForm(forms.Form):
    hold = forms.TypedChoiceField(choices=(("1", "hold"), ("0", "release")), coerce=lambda v: v == "1")
    reason = forms.CharField(max_length=200, required=False)


class ConnectionRuleForm(forms.Form):
    connection = forms.CharField(max_length=63)
    retention_days = forms.IntegerField(required=False, min_value=0, label="Retention (days)")
    hold = forms.TypedChoiceField(
        required=False,
        choices=(("", "unchanged"), ("1", "hold"), ("0", "release")),
        coerce=lambda v: v == "1",
    )
    reason = forms.CharField(max_length=200, required=False)
