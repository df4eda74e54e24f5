import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from identity import actions as identity_actions
from identity.models import User


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def _new_person(**overrides):
    data = {
        "username": "erin",
        "email": "erin@example.test",
        "first_name": "Erin",
        "last_name": "",
        "password1": "Correct-Horse-77",
        "password2": "Correct-Horse-77",
    }
    data.update(overrides)
    return data


def test_an_admin_adds_a_person_who_can_then_log_in_with_the_role_given(admin_client, role_groups, db):
    response = admin_client.post(reverse("person_create"), _new_person(groups=[role_groups["reviewer"].pk]))
    assert response["Location"] == reverse("people_list")
    erin = User.objects.get(username="erin")
    assert erin.role_names() == {"reviewer"}
    assert Client().login(username="erin", password="Correct-Horse-77")
    record = AuditRecord.objects.get(action="user.create")
    assert record.after["groups"] == ["reviewers"]
    assert "Correct-Horse-77" not in str(record.after)
    assert erin.password not in str(record.after)


def test_a_weak_or_mismatched_password_is_refused(admin_client, db):
    weak = admin_client.post(reverse("person_create"), _new_person(password1="erin", password2="erin"))
    assert b"This password is too short." in weak.content
    differ = admin_client.post(reverse("person_create"), _new_person(password2="Correct-Horse-78"))
    assert b"The two passwords differ." in differ.content
    assert b"Correct-Horse-7" not in differ.content
    assert not User.objects.filter(username="erin").exists()


def test_a_username_is_taken_whatever_its_case(admin_client, alice, db):
    response = admin_client.post(reverse("person_create"), _new_person(username="ALICE"))
    assert b"already exists" in response.content


def test_the_list_shows_roles_and_groups(admin_client, bob, db):
    html = admin_client.get(reverse("people_list")).content.decode()
    assert '<tr data-username="bob">' in html
    row = html.split('<tr data-username="bob">')[1].split("</tr>")[0]
    assert '<span class="badge role">reviewer</span>' in row
    assert '<span class="badge">dba</span>' in row


def test_an_admin_sets_a_persons_groups_and_it_is_audited(admin_client, carol, role_groups, db):
    dba = Group.objects.create(name="dba")
    response = admin_client.post(
        reverse("person_edit", kwargs={"pk": carol.pk}), {"groups": [role_groups["admin"].pk, dba.pk]}
    )
    assert response.status_code == 302
    carol = User.objects.get(pk=carol.pk)
    assert carol.role_names() == {"admin"}
    record = AuditRecord.objects.get(action="user.groups")
    assert (record.before["groups"], record.after["groups"]) == (["auditors"], ["admins", "dba"])


def test_the_last_admin_keeps_the_admin_role(admin_client, alice, db):
    response = admin_client.post(reverse("person_edit", kwargs={"pk": alice.pk}), {"groups": []})
    assert response.status_code == 200
    assert b"last active admin" in response.content
    assert User.objects.get(pk=alice.pk).role_names() == {"admin"}


def test_an_admin_cannot_disable_themselves(admin_client, alice, db):
    response = admin_client.post(
        reverse("person_set_active", kwargs={"pk": alice.pk}), {"active": "0"}, follow=True
    )
    assert b"you cannot disable your own account" in response.content
    assert User.objects.get(pk=alice.pk).is_active


def test_the_last_admin_cannot_be_disabled_by_anyone(alice, db):
    with pytest.raises(ValidationError, match="last active admin"):
        identity_actions.do_set_user_active("cli", alice, False)


def test_a_disabled_person_can_no_longer_log_in_or_use_an_open_session(admin_client, carol, db):
    carols = Client()
    carols.force_login(carol)
    assert carols.get("/").status_code == 200
    response = admin_client.post(reverse("person_set_active", kwargs={"pk": carol.pk}), {"active": "0"})
    assert response.status_code == 302
    assert not Client().login(username="carol", password="carol-Pass-1234")
    assert carols.get("/")["Location"].startswith("/accounts/login/")
    assert AuditRecord.objects.filter(action="user.disable", target_repr="carol").exists()
    admin_client.post(reverse("person_set_active", kwargs={"pk": carol.pk}), {"active": "1"})
    assert Client().login(username="carol", password="carol-Pass-1234")


def test_groups_are_listed_with_their_members_and_created(admin_client, bob, db):
    response = admin_client.post(reverse("group_list"), {"name": "oncall"})
    assert response["Location"] == reverse("group_list")
    assert Group.objects.filter(name="oncall").exists()
    assert AuditRecord.objects.filter(action="group.create", target_repr="oncall").exists()
    duplicate = admin_client.post(reverse("group_list"), {"name": "oncall"})
    assert b"A group with this name already exists." in duplicate.content
    html = admin_client.get(reverse("group_list")).content.decode()
    assert "<td>dba</td>" in html
