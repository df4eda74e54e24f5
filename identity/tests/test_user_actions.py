"""People's actions: creation, groups, enabling; each one audited, none holding a password."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditRecord
from identity.actions import (
    do_create_user,
    do_set_user_active,
    do_set_user_groups,
    do_sync_idp_groups,
)
from identity.groupmap import GroupMapping
from identity.models import User

pytestmark = pytest.mark.django_db


def test_a_person_is_created_with_roles_and_groups(alice, role_groups):
    user = do_create_user(alice, "erin", roles=["reviewer"], groups=["dba"], password="Blue-Harbour-73")

    assert user.has_role("reviewer") and user.check_password("Blue-Harbour-73")
    record = AuditRecord.objects.get(action="user.create")
    assert record.actor == "alice" and record.actor_user == alice
    assert record.after["groups"] == ["dba", "reviewers"]
    assert "Blue-Harbour-73" not in str(record.after) and user.password not in str(record.after)


def test_an_unknown_role_or_a_weak_password_creates_nobody(alice):
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        do_create_user(alice, "erin", roles=["owner"])
    with pytest.raises(ValidationError):
        do_create_user(alice, "erin", password="erin")
    assert not User.objects.filter(username="erin").exists()
    assert not AuditRecord.objects.exists()


def test_setting_groups_records_before_and_after(alice, mallory, role_groups):
    do_set_user_groups(alice, mallory, ["auditors", "dba"])

    assert mallory.has_role("auditor")
    record = AuditRecord.objects.get(action="user.groups")
    assert record.before["groups"] == [] and record.after["groups"] == ["auditors", "dba"]

    do_set_user_groups(alice, mallory, ["dba", "auditors"])
    assert AuditRecord.objects.filter(action="user.groups").count() == 1  # no change, no record


def test_a_disabled_person_holds_no_role(alice, bob):
    do_set_user_active(alice, bob, False)

    bob = User.objects.get(pk=bob.pk)
    assert not bob.is_active and bob.role_names() == set()
    assert AuditRecord.objects.get(action="user.disable").target_id == str(bob.pk)
    do_set_user_active(alice, bob, False)
    assert AuditRecord.objects.filter(action="user.disable").count() == 1


def test_an_idp_sync_creates_missing_mapping_targets(mallory):
    mapping = GroupMapping({"eng-payments": frozenset({"payments"})})

    change = do_sync_idp_groups(mallory, ["eng-payments"], mapping=mapping)

    assert change.add == {"payments"}
    assert list(mallory.groups.values_list("name", flat=True)) == ["payments"]
