"""The masking policy editor: forms, views, actions (audit, versions, bindings) and Try it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from console.tests.factories import make_connection
from masking import BUILTIN_ENTITIES
from policies import masking_actions
from policies.models import MaskingBinding, MaskingPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(alice) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(alice)
    return client


def form_data(**overrides: Any) -> dict[str, Any]:
    """A complete editor POST: every entity redacted, empty rows, nothing bound."""
    data: dict[str, Any] = {
        "name": "pii",
        "description": "",
        "version": "0",
        "default_method": "redact",
        **{f"entity_{e}": "redact" for e in BUILTIN_ENTITIES},
    }
    for prefix in ("columns", "custom", "exempt", "overrides"):
        data[f"{prefix}-TOTAL_FORMS"] = "2"
        data[f"{prefix}-INITIAL_FORMS"] = "0"
        for i in range(2):
            data.setdefault(f"{prefix}-{i}-method", "redact" if prefix == "columns" else "")
    data.update(overrides)
    return data


def test_an_admin_creates_a_masking_policy_with_rules_entities_exemptions_and_bindings(admin_client, alice):
    make_connection("shop")
    Group.objects.create(name="fraud-team")
    response = admin_client.post(
        reverse("policies:masking_create"),
        form_data(
            entity_email="hash",
            entity_card="partial",
            entity_ip="off",
            **{
                "columns-0-match": "public.users.email",
                "columns-0-method": "hash",
                "columns-0-entity": "email",
                "custom-0-name": "employee_id",
                "custom-0-pattern": r"\bEMP-(?P<secret>[0-9]{6})\b",
                "custom-1-name": "codename",
                "custom-1-deny_list": "Falcon\nNight Jar",
                "custom-1-ignore_case": "on",
                "exempt-0-group": "fraud-team",
                "exempt-0-entities": "card",
                "exempt-0-reason": "fraud investigations need the card numbers",
                "connections": ["shop"],
                "overrides-0-connection": "shop",
                "overrides-0-group": "fraud-team",
            },
        ),
    )
    policy = MaskingPolicy.objects.get(name="pii")
    assert response.status_code == 302
    assert response["Location"] == reverse("policies:masking_detail", kwargs={"pk": policy.pk})
    spec = policy.spec
    assert spec["entities"]["email"] == "hash" and spec["entities"]["card"] == "partial"
    assert "ip" not in spec["entities"]
    assert spec["columns"] == [{"match": "public.users.email", "method": "hash", "entity": "email"}]
    assert spec["custom"][0] == {"name": "employee_id", "pattern": r"\bEMP-(?P<secret>[0-9]{6})\b"}
    assert spec["custom"][1] == {
        "name": "codename",
        "deny_list": ["Falcon", "Night Jar"],
        "ignore_case": True,
    }
    assert spec["exempt"] == [
        {"group": "fraud-team", "entities": ["card"], "reason": "fraud investigations need the card numbers"}
    ]
    assert masking_actions.bindings_of(policy) == [("shop", None), ("shop", "fraud-team")]
    created = AuditRecord.objects.get(action="masking_policy.create")
    assert created.actor_user == alice
    exemption = AuditRecord.objects.get(action="masking_policy.exemption_add")
    assert exemption.detail["reason"] == "fraud investigations need the card numbers"
    page = admin_client.get(response["Location"]).content.decode()
    assert "fraud investigations need the card numbers" in page
    assert "public.users.email" in page
    assert '<span class="badge">email: hash</span>' in page and "ip: " not in page


def test_the_policy_page_lists_every_entity_of_an_empty_spec(admin_client):
    policy = masking_actions.do_save_masking_policy(None, "builtin-like", {})
    page = admin_client.get(reverse("policies:masking_detail", kwargs={"pk": policy.pk})).content.decode()
    for entity in BUILTIN_ENTITIES:
        assert f'<span class="badge">{entity}: redact</span>' in page


@pytest.mark.parametrize(
    ("fields", "field_name", "message"),
    [
        (
            {"custom-0-name": "emp", "custom-0-pattern": "EMP-([0-9]"},
            "custom-0-pattern",
            "not a valid regular expression",
        ),
        ({"custom-0-name": "emp", "custom-0-pattern": "(a+)+b"}, "custom-0-pattern", "exponential time"),
        ({"columns-0-match": "users", "columns-0-method": "redact"}, "columns-0-match", "table.column"),
        (
            {"exempt-0-column": "orders.ref", "exempt-0-entities": "passport", "exempt-0-reason": "why not"},
            "exempt-0-entities",
            "'passport' is not an entity of this policy",
        ),
        ({"exempt-0-column": "orders.ref", "exempt-0-entities": "card"}, "exempt-0-reason", "Say why"),
        ({"custom-0-name": "Bad Name", "custom-0-pattern": "x+"}, "custom-0-name", "lower-case name"),
    ],
)
def test_a_bad_spec_is_shown_next_to_its_field_and_nothing_is_saved(
    admin_client, fields, field_name, message
):
    response = admin_client.post(reverse("policies:masking_create"), form_data(**fields))
    assert response.status_code == 200
    assert not MaskingPolicy.objects.exists()
    assert not AuditRecord.objects.filter(action__startswith="masking_policy").exists()
    editor = response.context["editor"]
    prefix, index, name = field_name.split("-")
    formset = getattr(editor, prefix)
    errors = " ".join(formset.forms[int(index)].errors.get(name, []))
    assert message in errors, (field_name, formset.forms[int(index)].errors)


def test_editing_bumps_the_version_and_a_stale_edit_saves_nothing(admin_client):
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    url = reverse("policies:masking_edit", kwargs={"pk": policy.pk})
    page = admin_client.get(url)
    assert page.status_code == 200
    response = admin_client.post(url, form_data(version="1", entity_email="partial"))
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.version == 2 and policy.spec["entities"]["email"] == "partial"
    assert AuditRecord.objects.filter(action="masking_policy.update").count() == 1
    stale = admin_client.post(url, form_data(version="1", entity_email="hash"))
    assert stale.status_code == 200
    assert "saved by someone else" in stale.content.decode()
    policy.refresh_from_db()
    assert policy.version == 2 and policy.spec["entities"]["email"] == "partial"


def test_the_name_cannot_be_changed_or_taken(admin_client):
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    admin_client.post(
        reverse("policies:masking_edit", kwargs={"pk": policy.pk}), form_data(version="1", name="other")
    )
    assert list(MaskingPolicy.objects.values_list("name", flat=True)) == ["pii"]
    taken = admin_client.post(reverse("policies:masking_create"), form_data(name="pii"))
    assert taken.status_code == 200
    assert "already exists" in taken.content.decode()


def test_a_connection_taken_by_another_policy_is_refused_with_a_clear_message(admin_client):
    make_connection("shop")
    masking_actions.do_save_masking_policy(None, "first", {}, bindings=[("shop", None)])
    response = admin_client.post(
        reverse("policies:masking_create"), form_data(name="second", connections=["shop"])
    )
    assert response.status_code == 200
    assert "already has masking policy" in response.content.decode()
    assert not MaskingPolicy.objects.filter(name="second").exists()


def test_removing_an_exemption_is_audited(admin_client):
    policy = masking_actions.do_save_masking_policy(
        None, "pii", {"exempt": [{"column": "orders.ref", "entities": ["card"], "reason": "order refs"}]}
    )
    response = admin_client.post(
        reverse("policies:masking_edit", kwargs={"pk": policy.pk}), form_data(version="1")
    )
    assert response.status_code == 302
    removed = AuditRecord.objects.get(action="masking_policy.exemption_remove")
    assert removed.before == {
        "exemption": {"column": "orders.ref", "entities": ["card"], "reason": "order refs"}
    }


def test_delete_removes_the_policy_and_its_bindings_with_an_audit_record(admin_client):
    make_connection("shop")
    policy = masking_actions.do_save_masking_policy(None, "pii", {}, bindings=[("shop", None)])
    response = admin_client.post(reverse("policies:masking_delete", kwargs={"pk": policy.pk}))
    assert response.status_code == 302
    assert not MaskingPolicy.objects.exists() and not MaskingBinding.objects.exists()
    assert AuditRecord.objects.filter(action="masking_policy.delete").count() == 1


# --- Try it ---------------------------------------------------------------------------------


def _try(client: Client, policy: MaskingPolicy, text: str, group: str = "") -> Any:
    return client.post(
        reverse("policies:masking_try", kwargs={"pk": policy.pk}),
        {"text": text, "group": group},
        headers={"accept": "application/json"},
    )


def test_try_it_says_what_is_masked_where_by_which_detector_and_how(admin_client):
    policy = masking_actions.do_save_masking_policy(
        None,
        "pii",
        {
            "entities": {"email": "redact", "card": "partial"},
            "custom": [{"name": "employee_id", "pattern": r"\bEMP-[0-9]{6}\b"}],
        },
    )
    text = "mail bob@example.com, card 4111 1111 1111 1111, EMP-123456"
    response = _try(admin_client, policy, text)
    assert response.status_code == 200
    data = response.json()
    assert data["masked"] == "mail [EMAIL], card [CARD:****1111], [EMPLOYEE_ID]"
    assert data["counts"] == {"email": 1, "card": 1, "employee_id": 1}
    html = data["html"]
    assert "bob@example.com" not in html and "4111 1111 1111 1111" not in html
    assert "5–20" in html  # bob@example.com at offsets 5..20
    assert "partial" in html and "custom entity" in html


def test_try_it_applies_the_chosen_groups_exemptions(admin_client):
    policy = masking_actions.do_save_masking_policy(
        None, "pii", {"exempt": [{"group": "fraud-team", "entities": ["card"], "reason": "fraud"}]}
    )
    text = "card 4111 1111 1111 1111"
    assert _try(admin_client, policy, text).json()["masked"] == "card [CARD]"
    assert _try(admin_client, policy, text, "fraud-team").json()["masked"] == text


def test_try_it_without_javascript_shows_the_result_on_the_page(admin_client):
    policy = masking_actions.do_save_masking_policy(None, "pii", {})
    response = admin_client.post(
        reverse("policies:masking_try", kwargs={"pk": policy.pk}), {"text": "write to bob@example.com"}
    )
    assert response.status_code == 200
    assert "write to [EMAIL]" in response.content.decode()


def _as_posted(editor: Any) -> dict[str, Any]:
    """What the browser posts back for an editor page left untouched."""
    data: dict[str, Any] = {}
    for form in [
        editor.policy,
        *editor.columns.forms,
        *editor.custom.forms,
        *editor.exempt.forms,
        *editor.overrides.forms,
    ]:
        for bound in form:
            value = bound.value()
            if isinstance(value, bool):
                if value:
                    data[bound.html_name] = "on"
            elif isinstance(value, list):
                data[bound.html_name] = value
            elif value is not None:
                data[bound.html_name] = str(value)
    for formset in (editor.columns, editor.custom, editor.exempt, editor.overrides):
        for field in formset.management_form:
            data[field.html_name] = str(field.value())
    return data


def test_saving_an_untouched_policy_changes_nothing(admin_client):
    make_connection("shop")
    Group.objects.create(name="fraud-team")
    spec = {
        "default_method": "partial",
        "entities": {"email": "hash", "card": {"method": "partial"}},
        "custom": [
            {
                "name": "codename",
                "deny_list": ["Falcon", "Night Jar"],
                "ignore_case": True,
                "method": "redact",
            }
        ],
        "columns": [{"match": "public.users.email", "method": "hash", "entity": "email"}],
        "exempt": [{"group": "fraud-team", "entities": ["card"], "reason": "fraud"}],
    }
    policy = masking_actions.do_save_masking_policy(
        None, "pii", spec, bindings=[("shop", None), ("shop", "fraud-team")]
    )
    url = reverse("policies:masking_edit", kwargs={"pk": policy.pk})
    editor = admin_client.get(url).context["editor"]
    before = AuditRecord.objects.count()
    response = admin_client.post(url, _as_posted(editor))
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.version == 1
    assert masking_actions.bindings_of(policy) == [("shop", None), ("shop", "fraud-team")]
    assert policy.spec["custom"] == spec["custom"] and policy.spec["exempt"] == spec["exempt"]
    assert AuditRecord.objects.count() == before
