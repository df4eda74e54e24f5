"""``manage.py apply`` compiles every policy with the groups it knows, as the engine does."""

from __future__ import annotations

import textwrap
from io import StringIO

import pytest
from django.core.management import call_command

from gateway.declarative.loader import ConfigError
from gateway.declarative.plan import apply_config
from gateway.tests.dbdump import dump_database
from policies.models import Policy

pytestmark = pytest.mark.django_db

NEEDS_REVIEW = textwrap.dedent(
    """\
    groups: [{name: agents}, {name: dba}]
    policies:
      - name: careful
        default: review
        reviewers: [dba, platform]
        rules:
          - {name: reads, match: {operations: [read]}, action: allow}
          - {name: ddl, match: {operations: [ddl]}, action: review, reviewers: [nobody-group]}
    """
)


def test_a_policy_that_does_not_compile_is_refused_with_every_problem_by_path(alice):
    before = dump_database()

    with pytest.raises(ConfigError) as caught:
        apply_config(NEEDS_REVIEW, environ={})

    reported = {(p.path, p.line, p.message) for p in caught.value.problems}
    assert reported == {
        ("policies[0].reviewers[1]", 5, "reviewer group 'platform' does not exist or has no members"),
        (
            "policies[0].rules[1].reviewers[0]",
            8,
            "reviewer group 'nobody-group' does not exist or has no members",
        ),
    }
    assert dump_database() == before


def test_a_structurally_bad_policy_still_has_its_reviewer_groups_checked(alice):
    text = NEEDS_REVIEW.replace("default: review", "default: review\n    on_parse_error: sometimes")

    with pytest.raises(ConfigError) as caught:
        apply_config(text, environ={})

    paths = {p.path for p in caught.value.problems}
    assert paths == {
        "policies[0].on_parse_error",
        "policies[0].reviewers[1]",
        "policies[0].rules[1].reviewers[0]",
    }


def test_reviewer_groups_with_nobody_in_them_are_applied_with_a_warning(alice):
    text = NEEDS_REVIEW.replace(", platform", "").replace("nobody-group", "dba")

    result = apply_config(text, environ={})

    assert Policy.objects.get(name="careful").spec["default"] == "review"
    assert [(w.path, w.line) for w in result.warnings] == [
        ("policies[0].reviewers[0]", 5),
        ("policies[0].rules[1].reviewers[0]", 8),
    ]
    assert result.warnings[0].message == (
        "reviewer group 'dba' has no active members yet: the policy is refused until someone is in it"
    )


def test_no_warning_once_the_group_has_an_active_member(alice):
    text = NEEDS_REVIEW.replace(", platform", "").replace("nobody-group", "dba")
    staffed = text.replace("{name: dba}", "{name: dba, members: [alice]}")

    assert apply_config(staffed, environ={}).warnings == []
    # Members given in the database (the file does not manage them) count as well.
    assert apply_config(text, environ={}).warnings == []
    alice.is_active = False
    alice.save()
    assert len(apply_config(text, environ={}).warnings) == 2


def test_the_command_prints_the_warnings(alice, tmp_path):
    path = tmp_path / "airlock.yaml"
    path.write_text(NEEDS_REVIEW.replace(", platform", "").replace("nobody-group", "dba"))
    out, err = StringIO(), StringIO()

    call_command("apply", "-f", str(path), stdout=out, stderr=err)

    assert (
        "warning: policies[0].reviewers[0]: reviewer group 'dba' has no active members yet" in err.getvalue()
    )
    assert "+ policy careful" in out.getvalue()


RULE_MODES = textwrap.dedent(
    """\
    groups: [{name: dba, members: [alice]}]
    policies:
      - name: careful
        default: allow
        rules:
          - {name: deletes, match: {operations: [write]}, action: review, reviewers: [dba],
             approval_mode: return}
          - {name: ddl, match: {operations: [ddl]}, action: review, reviewers: [dba], approval_mode: wait}
    """
)


def test_a_review_rules_approval_mode_applies_exports_and_applies_back(alice):
    from gateway.declarative.export import export_yaml

    apply_config(RULE_MODES, environ={})
    spec = Policy.objects.get(name="careful").spec
    assert [rule.get("approval_mode") for rule in spec["rules"]] == ["return", "wait"]

    exported = export_yaml()
    assert "approval_mode: return" in exported
    # The export applied to the same state changes nothing; to an empty one, it rebuilds it.
    assert apply_config(exported, environ={}).changes == []
    Policy.objects.all().delete()
    apply_config(exported, environ={})
    assert Policy.objects.get(name="careful").spec == spec


def test_an_unknown_approval_mode_is_refused_with_its_path_and_line(alice):
    before = dump_database()

    with pytest.raises(ConfigError) as caught:
        apply_config(RULE_MODES.replace("approval_mode: wait", "approval_mode: later"), environ={})

    assert [(p.path, p.line, p.message) for p in caught.value.problems] == [
        ("policies[0].rules[1].approval_mode", 8, "must be one of wait, return")
    ]
    assert dump_database() == before
