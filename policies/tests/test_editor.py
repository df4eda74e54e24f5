"""The policy editor's pages, against the real PostgreSQL (roles are in console/tests/test_access.py)."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from audit.models import AuditRecord
from console.tests.factories import make_agent, make_connection
from policies.models import Policy
from policies.packs import pack
from policies.tests.factories import SHOP_SPEC, make_policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def shop(bob):
    """agents-default v1 on connection shop, used by billing-bot; bob staffs the dba group."""
    policy = make_policy()
    connection = make_connection(policy=policy)
    make_agent()
    return {"policy": policy, "connection": connection}


def url(name, policy, **kwargs):
    return reverse(f"policies:{name}", kwargs={"pk": policy.pk, **kwargs})


def rule_form(version, **fields):
    data = {"version": str(version), "name": "", "action": "deny", "comment": ""}
    data.update(fields)
    return data


def names(policy):
    policy.refresh_from_db()
    return [rule["name"] for rule in policy.spec["rules"]]


# --- list, create, delete ---------------------------------------------------------------


def test_the_list_shows_each_policy_with_version_default_rules_and_connections(admin, shop):
    make_policy("spare", {"default": "allow", "rules": []})

    response = admin.get(reverse("policies:list"))

    html = response.content.decode()
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    agents_row = next(r for r in rows if "agents-default" in r)
    assert re.search(
        r'class="n">1</td>\s*<td><span class="badge action-deny">deny</span></td>\s*<td class="n">3<',
        agents_row,
    )
    assert "shop" in agents_row
    spare_row = next(r for r in rows if ">spare<" in r)
    assert "action-allow" in spare_row and "no connection" in spare_row


def test_an_admin_creates_an_empty_policy_and_one_from_a_pack(admin, alice):
    response = admin.post(reverse("policies:create"), {"name": "empty", "description": "", "start_from": ""})
    empty = Policy.objects.get(name="empty")
    assert response["Location"] == url("detail", empty)
    assert (empty.version, empty.spec) == (1, {"default": "deny", "on_parse_error": "deny", "rules": []})

    admin.post(
        reverse("policies:create"), {"name": "ro", "start_from": "read-only-agent", "comment": "start"}
    )

    ro = Policy.objects.get(name="ro")
    expected = pack("read-only-agent")
    description = expected.pop("description")
    assert ro.spec == expected and ro.description == description
    version = ro.versions.get()
    assert (version.author, version.comment) == (alice, "start")


def test_creating_a_policy_whose_name_is_taken_changes_nothing(admin, shop):
    response = admin.post(
        reverse("policies:create"), {"name": "agents-default", "start_from": "no-server-files"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["name"] == ["A policy with this name already exists."]
    shop["policy"].refresh_from_db()
    assert shop["policy"].version == 1 and shop["policy"].spec == SHOP_SPEC


def test_a_policy_in_use_is_not_deleted(admin, shop):
    response = admin.post(url("delete", shop["policy"]), follow=True)

    assert Policy.objects.filter(pk=shop["policy"].pk).exists()
    assert "used by connection(s) shop" in response.content.decode()
    page = admin.get(url("delete", shop["policy"])).content.decode()
    assert (
        "cannot be deleted while connections use it" in page and "Delete agents-default</button>" not in page
    )


def test_an_unused_policy_is_deleted_with_an_audit_record(admin):
    policy = make_policy("spare")

    response = admin.post(url("delete", policy))

    assert response["Location"] == reverse("policies:list")
    assert not Policy.objects.filter(name="spare").exists()
    assert AuditRecord.objects.filter(action="policy.delete", actor="alice").count() == 1


# --- rules: add, edit, delete, reorder --------------------------------------------------


def test_adding_a_rule_saves_a_new_version_with_author_and_comment(admin, alice, shop):
    policy = shop["policy"]
    response = admin.post(
        url("rule_add", policy),
        rule_form(
            1,
            name="no-secrets",
            action="deny",
            facts=["catalog_secrets"],
            tables="secret.*,  vault.keys\nbilling.card_*",
            message="secrets stay secret",
            position="0",
            comment="keep secrets out",
        ),
    )

    assert response.status_code == 302
    assert response["Location"] == url("detail", policy) + "#rule-1"
    policy.refresh_from_db()
    assert policy.version == 2
    assert policy.spec["rules"][0] == {
        "name": "no-secrets",
        "match": {"tables": ["secret.*", "vault.keys", "billing.card_*"], "facts": ["catalog_secrets"]},
        "action": "deny",
        "message": "secrets stay secret",
    }
    assert policy.spec["rules"][1:] == SHOP_SPEC["rules"]
    version = policy.versions.get(number=2)
    assert (version.author, version.comment) == (alice, "keep secrets out")


def test_a_rule_added_at_the_end_without_a_comment_gets_a_descriptive_one(admin, shop):
    policy = shop["policy"]
    admin.post(url("rule_add", policy), rule_form(1, name="ddl", operations=["ddl"], action="deny"))

    assert names(policy) == ["no-drop", "reads", "writes", "ddl"]
    assert policy.versions.get(number=2).comment == "added rule 'ddl'"


def test_editing_a_rule_round_trips_every_field(admin, shop):
    policy = shop["policy"]
    edit = admin.get(url("rule_edit", policy, index=2))
    initial = {k: v for k, v in edit.context["form"].initial.items()}
    assert (
        initial["reviewers"] == "dba" and initial["operations"] == ["write"] and initial["timeout"] == "10m"
    )

    # Saving the form as shown changes nothing: no new version.
    data = {k: v for k, v in initial.items() if v not in (None, "", [])}
    response = admin.post(url("rule_edit", policy, index=2), data, follow=True)

    assert "Nothing changed." in response.content.decode()
    policy.refresh_from_db()
    assert policy.version == 1


def test_editing_a_rule_changes_only_that_rule(admin, shop):
    policy = shop["policy"]
    admin.post(
        url("rule_edit", policy, index=2),
        rule_form(
            1,
            name="writes",
            action="review",
            operations=["write"],
            no_where="true",
            reviewers="dba",
            approvals="2",
            timeout="15m",
        ),
    )

    policy.refresh_from_db()
    assert policy.version == 2
    assert policy.spec["rules"][2] == {
        "name": "writes",
        "match": {"operations": ["write"], "no_where": True},
        "action": "review",
        "reviewers": ["dba"],
        "approvals": 2,
        "timeout": "15m",
    }
    assert policy.spec["rules"][:2] == SHOP_SPEC["rules"][:2]


def test_a_review_rules_approval_mode_is_edited_in_the_form(admin, shop):
    policy = shop["policy"]
    page = admin.get(url("rule_edit", policy, index=2)).content.decode()
    assert 'name="approval_mode"' in page and "the connection&#x27;s" in page

    fields = dict(name="writes", action="review", operations=["write"], reviewers="dba")
    admin.post(url("rule_edit", policy, index=2), rule_form(1, **fields, approval_mode="return"))
    policy.refresh_from_db()
    assert policy.version == 2 and policy.spec["rules"][2]["approval_mode"] == "return"
    assert '<span class="approval-mode">return</span>' in admin.get(url("detail", policy)).content.decode()
    # The form shows the stored mode; saving it empty leaves the choice to the connection.
    form = admin.get(url("rule_edit", policy, index=2)).context["form"]
    assert form.initial["approval_mode"] == "return"
    admin.post(url("rule_edit", policy, index=2), rule_form(2, **fields, approval_mode=""))
    policy.refresh_from_db()
    assert policy.version == 3 and "approval_mode" not in policy.spec["rules"][2]


def test_an_approval_mode_on_a_rule_that_does_not_review_is_shown_at_its_field(admin, shop):
    policy = shop["policy"]
    response = admin.post(
        url("rule_edit", policy, index=2),
        rule_form(1, name="writes", action="deny", operations=["write"], approval_mode="return"),
    )

    assert response.status_code == 200
    assert _field_errors(response, "approval_mode") == ["only review rules have an approval mode"]
    classes, text = _field_block(response.content.decode(), "approval_mode")
    assert "has-error" in classes and "only review rules have an approval mode" in text
    bad = admin.post(
        url("rule_edit", policy, index=2),
        rule_form(1, name="writes", action="review", reviewers="dba", approval_mode="later"),
    )
    assert _field_errors(bad, "approval_mode")[0].startswith("Select a valid choice")
    policy.refresh_from_db()
    assert policy.version == 1 and policy.spec == SHOP_SPEC


def _field_errors(response, field):
    return response.context["form"].errors.get(field, [])


class _FieldBlocks(HTMLParser):
    """Collects the text and input names inside each ``<div class="field ...">``."""

    def __init__(self):
        super().__init__()
        self.blocks = []  # (classes, names, text)
        self._stack = []  # open divs: index into blocks, or None for other divs

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div":
            classes = (attrs.get("class") or "").split()
            if "field" in classes:
                self.blocks.append((classes, set(), []))
                self._stack.append(len(self.blocks) - 1)
            else:
                self._stack.append(None)
        elif tag in ("input", "textarea", "select") and attrs.get("name"):
            for index in self._stack:
                if index is not None:
                    self.blocks[index][1].add(attrs["name"])

    def handle_endtag(self, tag):
        if tag == "div" and self._stack:
            self._stack.pop()

    def handle_data(self, data):
        for index in self._stack:
            if index is not None:
                self.blocks[index][2].append(data)


def _field_block(html, field):
    """(classes, text) of the innermost field block holding the input ``field``."""
    parser = _FieldBlocks()
    parser.feed(html)
    found = [(classes, "".join(text)) for classes, names, text in parser.blocks if field in names]
    assert found, f"no field {field} in the page"
    return min(found, key=lambda block: len(block[1]))


def test_problems_are_shown_next_to_the_field_they_are_about_and_nothing_is_saved(admin, shop):
    policy = shop["policy"]
    response = admin.post(
        url("rule_edit", policy, index=2),
        rule_form(
            1,
            name="reads",  # the name of rule 2
            action="allow",
            tables="public.*, a.b.c",
            functions="@no_such_set",
            regex="(unclosed",
            reviewers="dba",  # an allow rule has no reviewers
        ),
    )

    assert response.status_code == 200
    assert _field_errors(response, "name") == ["duplicate rule name 'reads'"]
    assert _field_errors(response, "tables") == ["'a.b.c': a table pattern is 'table' or 'schema.table'"]
    assert _field_errors(response, "functions")[0].startswith("unknown function set '@no_such_set'")
    assert _field_errors(response, "regex")[0].startswith("is not a valid regular expression")
    assert _field_errors(response, "reviewers") == [
        "only review rules have reviewers, approvals and a timeout"
    ]
    # On the page, each message is inside its field's block, which is marked as in error.
    html = response.content.decode()
    classes, text = _field_block(html, "tables")
    assert "has-error" in classes and "'a.b.c': a table pattern is 'table' or 'schema.table'" in text
    classes, text = _field_block(html, "regex")
    assert "has-error" in classes and "is not a valid regular expression" in text
    classes, text = _field_block(html, "message")
    assert "has-error" not in classes
    assert "public.*, a.b.c</textarea>" in html  # what was typed is kept
    policy.refresh_from_db()
    assert policy.version == 1 and policy.spec == SHOP_SPEC


def test_a_review_rule_whose_reviewers_cannot_be_found_is_refused(admin, shop):
    Group.objects.create(name="empty-team")  # exists, nobody in it
    policy = shop["policy"]
    response = admin.post(
        url("rule_add", policy),
        rule_form(1, name="ddl", action="review", operations=["ddl"], reviewers="dba, empty-team, ghosts"),
    )

    assert _field_errors(response, "reviewers") == [
        "reviewer group 'empty-team' does not exist or has no members",
        "reviewer group 'ghosts' does not exist or has no members",
    ]
    assert names(policy) == ["no-drop", "reads", "writes"]

    missing = admin.post(
        url("rule_add", policy), rule_form(1, name="ddl", action="review", operations=["ddl"])
    )
    assert _field_errors(missing, "reviewers") == ["a review needs a non-empty list of reviewer groups"]


def test_a_reviewer_group_whose_only_member_is_disabled_cannot_review(admin, shop, bob):
    bob.is_active = False
    bob.save()
    policy = shop["policy"]

    response = admin.post(url("rule_add", policy), rule_form(1, name="ddl", operations=["ddl"]))

    # The new rule is fine; the existing review rule no longer is, and the page says where.
    assert response.context["form"].non_field_errors() == [
        "policy.rules[2].reviewers[0]: reviewer group 'dba' does not exist or has no members"
    ]
    assert names(policy) == ["no-drop", "reads", "writes"]


def test_settings_problems_are_shown_next_to_their_fields(admin, shop):
    policy = shop["policy"]
    response = admin.post(
        url("settings", policy),
        {
            "version": "1",
            "default": "review",
            "on_parse_error": "deny",
            "timeout": "forever",
            "reviewers": "",
        },
    )

    assert _field_errors(response, "reviewers") == ["a review needs a non-empty list of reviewer groups"]
    assert _field_errors(response, "timeout") == ["must be a duration such as 30s, 10m, 2h or 1d"]
    policy.refresh_from_db()
    assert policy.version == 1


def test_settings_are_saved_as_a_new_version_with_the_rules_untouched(admin, shop):
    policy = shop["policy"]
    response = admin.post(
        url("settings", policy),
        {
            "version": "1",
            "description": "for the shop agents",
            "default": "review",
            "on_parse_error": "deny",
            "reviewers": "dba",
            "approvals": "1",
            "timeout": "600",
            "trusted_functions": "uuid_generate_v4\nst_*",
        },
    )

    assert response["Location"] == url("detail", policy)
    policy.refresh_from_db()
    assert policy.version == 2 and policy.description == "for the shop agents"
    assert policy.spec == {
        **SHOP_SPEC,
        "default": "review",
        "reviewers": ["dba"],
        "approvals": 1,
        "timeout": 600,
        "trusted_functions": ["uuid_generate_v4", "st_*"],
    }


def test_a_change_made_against_an_old_version_is_refused(admin, shop):
    policy = shop["policy"]
    admin.post(url("rule_move", policy, index=0), {"version": "1", "direction": "down"})
    policy.refresh_from_db()
    assert policy.version == 2

    # Another admin's page still shows version 1: its positions are stale.
    response = admin.post(url("rule_delete", policy, index=0), {"version": "1"}, follow=True)
    assert "was saved by someone else since you opened it" in response.content.decode()
    edit = admin.post(url("rule_edit", policy, index=0), rule_form(1, name="x", operations=["read"]))
    assert "you edited version 1" in str(edit.context["form"].non_field_errors())
    assert names(policy) == ["reads", "no-drop", "writes"] and policy.version == 2


def test_deleting_a_rule_saves_a_new_version(admin, shop):
    policy = shop["policy"]
    admin.post(url("rule_delete", policy, index=0), {"version": "1"})

    assert names(policy) == ["reads", "writes"]
    assert policy.versions.get(number=2).comment == "deleted rule 'no-drop'"


def test_a_rule_that_does_not_exist_is_404(admin, shop):
    assert admin.get(url("rule_edit", shop["policy"], index=3)).status_code == 404
    assert admin.post(url("rule_delete", shop["policy"], index=7), {"version": "1"}).status_code == 404


def _try(client, policy, statement, **extra):
    data = {"statement": statement, "agent": "billing-bot", "connection": "shop", **extra}
    response = client.post(url("try", policy), data, HTTP_ACCEPT="application/json")
    return response.json()


def test_moving_a_rule_changes_which_rule_decides(admin, shop):
    # Two rules that both match a read of orders: the first one decides.
    spec = copy.deepcopy(SHOP_SPEC)
    spec["rules"].insert(
        0, {"name": "allow-orders", "match": {"tables": ["public.orders"]}, "action": "allow"}
    )
    spec["rules"].insert(1, {"name": "deny-orders", "match": {"tables": ["public.orders"]}, "action": "deny"})
    policy = make_policy(shop["policy"].name, spec)
    before = _try(admin, policy, "SELECT * FROM orders")
    assert (before["decision"]["action"], before["decision"]["rule"]) == ("allow", "allow-orders")

    admin.post(url("rule_move", policy, index=1), {"version": str(policy.version), "direction": "up"})

    assert names(policy)[:2] == ["deny-orders", "allow-orders"]
    after = _try(admin, policy, "SELECT * FROM orders")
    assert (after["decision"]["action"], after["decision"]["rule"]) == ("deny", "deny-orders")
    assert after["version"] == policy.version


def test_the_first_rule_does_not_move_up(admin, shop):
    policy = shop["policy"]
    response = admin.post(url("rule_move", policy, index=0), {"version": "1", "direction": "up"}, follow=True)

    assert "is already first" in response.content.decode()
    assert names(policy) == ["no-drop", "reads", "writes"] and policy.version == 1


def test_the_policy_page_shows_rules_in_order_with_their_buttons(admin, shop):
    html = admin.get(url("detail", shop["policy"])).content.decode()

    assert re.findall(r'data-rule="([^"]+)"', html) == ["no-drop", "reads", "writes"]
    assert html.count('name="direction" value="up"') == 3
    # The first rule cannot move up, the last cannot move down.
    assert re.search(r'aria-label="Move rule no-drop up" disabled', html)
    assert re.search(r'aria-label="Move rule writes down" disabled', html)
    assert "by dba" in html and "no DROP here" in html
