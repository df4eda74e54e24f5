"""Versions (history, diff, rollback) and YAML import/export of one policy."""

from __future__ import annotations

import copy
import re
import textwrap

import pytest
import yaml
from django.contrib.auth.models import Group
from django.urls import reverse

from gateway.declarative.plan import apply_config
from policies import actions
from policies.models import Policy
from policies.packs import pack
from policies.tests.factories import SHOP_SPEC, make_policy
from policies.yamlio import canonical_yaml, spec_diff

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client, alice):
    client.force_login(alice)
    return client


def url(name, policy, **kwargs):
    return reverse(f"policies:{name}", kwargs={"pk": policy.pk, **kwargs})


def _three_versions(alice):
    policy = make_policy()  # v1 by nobody
    v2 = copy.deepcopy(SHOP_SPEC)
    v2["rules"][2]["timeout"] = "15m"
    actions.do_save_policy(alice, policy.name, v2, comment="longer wait")
    v3 = copy.deepcopy(v2)
    del v3["rules"][0]
    return actions.do_save_policy(alice, policy.name, v3, comment="drops are fine now")


def test_the_history_lists_number_author_time_and_comment(admin, alice, bob):
    policy = _three_versions(alice)

    html = admin.get(url("versions", policy)).content.decode()

    rows = re.findall(r"<tr>\s*<td class=\"n\">(.*?)</tr>", html, re.S)
    assert len(rows) == 3
    assert '>3</a> <span class="badge ok">current</span>' in rows[0]
    assert "alice" in rows[0] and "drops are fine now" in rows[0]
    assert "alice" in rows[1] and "longer wait" in rows[1]
    assert "—" in rows[2]  # version 1 had no person as its author
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0])


def test_a_version_shows_its_diff_against_the_previous_one(admin, alice, bob):
    policy = _three_versions(alice)

    response = admin.get(url("version", policy, number=2))

    diff = response.context["diff"]
    assert [(line.kind, line.text) for line in diff if line.kind in ("add", "remove")] == [
        ("remove", "-  timeout: 10m"),
        ("add", "+  timeout: 15m"),
    ]
    html = response.content.decode()
    assert '<span class="diff-remove">-  timeout: 10m</span>' in html
    assert '<span class="diff-add">+  timeout: 15m</span>' in html
    # Compared with another version on request.
    against_one = admin.get(url("version", policy, number=3) + "?against=1").context["diff"]
    removed = [line.text for line in against_one if line.kind == "remove"]
    assert "-- name: no-drop" in removed and "-  timeout: 10m" in removed


def test_the_canonical_yaml_does_not_depend_on_key_order():
    reordered = {
        "rules": [dict(reversed(list(rule.items()))) for rule in SHOP_SPEC["rules"]],
        "on_parse_error": "deny",
        "default": "deny",
    }

    assert canonical_yaml(reordered) == canonical_yaml(SHOP_SPEC)
    assert spec_diff(SHOP_SPEC, reordered, "a", "b") == []
    assert canonical_yaml(SHOP_SPEC).startswith(
        "default: deny\non_parse_error: deny\nrules:\n- name: no-drop\n"
    )


def test_rolling_back_makes_a_new_version_with_the_old_content(admin, alice, bob):
    policy = _three_versions(alice)

    response = admin.post(url("rollback", policy, number=1), {"version": "3"})

    assert response["Location"] == url("detail", policy)
    policy.refresh_from_db()
    assert policy.version == 4 and policy.spec == SHOP_SPEC
    latest = policy.versions.get(number=4)
    assert (latest.author, latest.comment) == (alice, "rollback to version 1")
    # The version page of the current content offers no rollback.
    assert "Roll back to version 4" not in admin.get(url("version", policy, number=4)).content.decode()
    assert "Roll back to version 2" in admin.get(url("version", policy, number=2)).content.decode()


def test_a_rollback_from_a_stale_page_is_refused(admin, alice, bob):
    policy = _three_versions(alice)

    response = admin.post(url("rollback", policy, number=1), {"version": "2"}, follow=True)

    assert "was saved by someone else" in response.content.decode()
    policy.refresh_from_db()
    assert policy.version == 3


def test_a_version_whose_reviewers_are_gone_cannot_be_restored(admin, alice, bob):
    policy = _three_versions(alice)
    actions.do_save_policy(alice, policy.name, {"default": "deny", "rules": []})
    Group.objects.get(name="dba").user_set.clear()

    response = admin.post(url("rollback", policy, number=1), {"version": "4"}, follow=True)

    assert "Version 1 cannot be restored" in response.content.decode()
    assert "reviewer group &#x27;dba&#x27; does not exist or has no members" in response.content.decode()
    policy.refresh_from_db()
    assert policy.version == 4


def test_export_downloads_an_apply_document_of_the_policy(admin, alice, bob):
    policy = _three_versions(alice)
    actions.do_save_policy(alice, policy.name, policy.spec, description="agents on the shop")

    response = admin.get(url("export", policy))

    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="agents-default.yaml"'
    text = response.content.decode()
    assert text.startswith("# Airlock policy agents-default, version 3 ")
    document = yaml.safe_load(text)
    policy.refresh_from_db()
    assert document == {
        "policies": [{"name": "agents-default", "description": "agents on the shop", **policy.spec}]
    }

    old = admin.get(url("export", policy) + "?version=1")
    assert old["Content-Disposition"] == 'attachment; filename="agents-default-v1.yaml"'
    assert yaml.safe_load(old.content)["policies"][0]["rules"] == SHOP_SPEC["rules"]


def test_an_exported_policy_imports_back_to_the_same_policy(admin, alice, bob):
    spec = pack("read-only-agent")
    spec.pop("description")
    spec["rules"].append(
        {
            "name": "writes",
            "match": {"operations": ["write"], "no_where": False},
            "action": "review",
            "reviewers": ["dba"],
            "approvals": 2,
            "timeout": "1h30m",
            "approval_mode": "return",
            "message": "ask first",
        }
    )
    policy = actions.do_save_policy(alice, "ro", spec, description="read-only, multi-line\ndescription")
    exported = admin.get(url("export", policy)).content.decode()
    # A rule's review settings read together, in the canonical order.
    assert "    timeout: 1h30m\n    approval_mode: return\n" in exported
    policy.delete()

    response = admin.post(reverse("policies:import"), {"yaml": exported})

    imported = Policy.objects.get(name="ro")
    assert response["Location"] == url("detail", imported)
    assert imported.spec == spec and imported.description == "read-only, multi-line\ndescription"
    assert imported.versions.get().comment == "imported from YAML"
    # The export is also a file manage.py apply takes as is, with the same result.
    imported.delete()
    apply_config(exported, environ={})
    assert Policy.objects.get(name="ro").spec == spec


def test_importing_over_an_existing_policy_needs_consent_and_makes_a_new_version(admin, alice, bob):
    policy = make_policy()
    text = textwrap.dedent(
        """\
        name: agents-default
        default: allow
        rules:
          - {name: no-drop, match: {facts: [destructive]}, action: deny}
        """
    )

    refused = admin.post(reverse("policies:import"), {"yaml": text})
    assert "A policy named agents-default exists (version 1)" in refused.context["form"].errors["replace"][0]
    policy.refresh_from_db()
    assert policy.version == 1

    admin.post(reverse("policies:import"), {"yaml": text, "replace": "on", "comment": "from the repo"})
    policy.refresh_from_db()
    assert policy.version == 2 and policy.spec["default"] == "allow"
    assert policy.versions.get(number=2).comment == "from the repo"


def test_a_file_can_be_uploaded(admin, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("p.yaml", b"policies:\n  - name: uploaded\n    default: allow\n")
    admin.post(reverse("policies:import"), {"file": upload})

    assert Policy.objects.get(name="uploaded").spec == {"default": "allow"}


def test_a_bad_import_lists_every_problem_by_path_and_line_and_imports_nothing(admin, alice, bob):
    text = textwrap.dedent(
        """\
        policies:
          - name: broken
            default: maybe
            colour: blue
            rules:
              - {name: a, match: {operations: [reads]}, action: allow}
              - {name: a, match: {tables: [x.y.z]}, action: review, reviewers: [ghosts]}
              - {name: c, action: deny, match: {facts: [destructive], facts: [no_where]}}
        """
    )

    response = admin.post(reverse("policies:import"), {"yaml": text})

    problems = {(p.path, p.line) for p in response.context["problems"]}
    assert problems >= {
        ("policies[0].default", 3),
        ("policies[0].colour", 4),
        ("policies[0].rules[0].match.operations[0]", 6),
        ("policies[0].rules[1].name", 7),
        ("policies[0].rules[1].match.tables[0]", 7),
        ("policies[0].rules[1].reviewers[0]", 7),
        ("policies[0].rules[2].match.facts", 8),
    }, problems
    html = response.content.decode()
    assert "problems; nothing was imported" in html
    assert '<code>policies[0].rules[1].reviewers[0]</code> <span class="muted">(line 7)</span>' in html
    assert not Policy.objects.filter(name="broken").exists()


def test_a_bare_entry_is_reported_by_its_own_paths(admin, alice):
    response = admin.post(reverse("policies:import"), {"yaml": "name: p\ndefault: maybe\n"})

    assert [(p.path, p.line) for p in response.context["problems"]] == [("default", 2)]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("policies: [{name: a}, {name: b}]", "policies", "must hold exactly one policy (it holds 2)"),
        ("groups: [{name: x}]\npolicies: [{name: a}]", "groups", "only a policy can be imported here"),
        ("- just a list", "(top)", "must be a policies: section with one policy"),
        ("policies: [{name: a, default: [unclosed", "(yaml)", "line 1"),
    ],
)
def test_other_documents_are_refused_with_a_reason(admin, alice, text, path, message):
    response = admin.post(reverse("policies:import"), {"yaml": text})

    problems = response.context["problems"]
    assert any(p.path == path and message in p.message for p in problems), problems
    assert not Policy.objects.exists()
