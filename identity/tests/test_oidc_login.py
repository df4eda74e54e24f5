"""OIDC login for people, end to end: Django's test client, allauth, and a real loopback IdP."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from identity.actions import do_set_user_active
from identity.models import User
from identity.tests.conftest import oidc_login

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("oidc_settings")]


def _groups(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def _person(sub: str = "u-1001", **claims):
    return {
        "sub": sub,
        "preferred_username": "dana",
        "email": "dana@example.com",
        "email_verified": True,
        "name": "Dana Scully",
        **claims,
    }


def test_first_login_creates_the_person_with_the_mapped_groups(idp, role_groups):
    client = Client()
    response = oidc_login(client, idp, **_person(groups=["eng-airlock-admins", "eng-sre", "marketing"]))

    assert response.status_code == 302
    user = User.objects.get(username="dana")
    assert user.email == "dana@example.com"
    assert not user.has_usable_password()
    assert _groups(user) == {"admins", "dba", "oncall"}
    assert user.has_role("admin")
    # The session is the person's, and an IdP group made them an admin.
    assert client.get("/").status_code == 200
    assert int(client.session["_auth_user_id"]) == user.pk

    created = AuditRecord.objects.get(action="user.create", target_id=str(user.pk))
    assert created.actor == "oidc"
    synced = AuditRecord.objects.get(action="user.groups.sync", target_id=str(user.pk))
    assert synced.actor == "oidc"
    assert synced.detail["added"] == ["admins", "dba", "oncall"]
    assert synced.detail["removed"] == []
    assert synced.after["groups"] == ["admins", "dba", "oncall"]


def test_a_later_login_adds_and_removes_groups(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-airlock-admins", "eng-dba"]))
    user = User.objects.get(username="dana")
    assert _groups(user) == {"admins", "dba"}

    client = Client()
    oidc_login(client, idp, **_person(groups=["eng-airlock-reviewers", "eng-dba"]))

    user.refresh_from_db()
    assert User.objects.filter(email="dana@example.com").count() == 1
    assert _groups(user) == {"reviewers", "dba"}
    assert not user.has_role("admin") and user.has_role("reviewer")
    last = AuditRecord.objects.filter(action="user.groups.sync").order_by("-id").first()
    assert last.detail["added"] == ["reviewers"]
    assert last.detail["removed"] == ["admins"]
    assert last.before["groups"] == ["admins", "dba"]
    assert last.after["groups"] == ["dba", "reviewers"]


def test_groups_outside_the_mapping_are_neither_granted_nor_taken_away(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-dba"]))
    user = User.objects.get(username="dana")
    # An admin gives dana a group by hand that no IdP group maps to.
    qa = Group.objects.create(name="qa")
    user.groups.add(qa)
    Group.objects.create(name="marketing")

    oidc_login(Client(), idp, **_person(groups=["marketing", "qa-team", "unmapped"]))

    # eng-dba left the claim: dba (a mapping target) goes; qa (not managed) stays;
    # marketing exists in Airlock but passthrough is off, so it is not granted.
    assert _groups(user) == {"qa"}
    assert not Group.objects.filter(name__in=["qa-team", "unmapped"]).exists()


def test_an_unchanged_login_writes_no_group_record(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-dba"]))
    oidc_login(Client(), idp, **_person(groups=["eng-dba", "unmapped"]))

    user = User.objects.get(username="dana")
    assert AuditRecord.objects.filter(action="user.groups.sync", target_id=str(user.pk)).count() == 1


def test_a_login_without_the_groups_claim_takes_the_managed_groups_away(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-airlock-admins"]))
    user = User.objects.get(username="dana")
    assert user.has_role("admin")

    oidc_login(Client(), idp, **_person())

    assert _groups(user) == set()


def test_a_malformed_groups_claim_counts_as_no_groups(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-airlock-admins"]))
    oidc_login(Client(), idp, **_person(groups={"eng-airlock-admins": True}))

    assert _groups(User.objects.get(username="dana")) == set()


def test_the_groups_claim_is_read_from_the_id_token_when_userinfo_lacks_it(idp, role_groups):
    idp.groups_in_userinfo = False
    oidc_login(Client(), idp, **_person(groups=["eng-dba"]))

    assert _groups(User.objects.get(username="dana")) == {"dba"}


def test_a_nested_groups_claim_can_be_named_by_a_dotted_path(idp, role_groups, settings):
    settings.OIDC_GROUPS_CLAIM = "realm_access.roles"
    oidc_login(Client(), idp, **_person(realm_access={"roles": ["eng-dba"]}))

    assert _groups(User.objects.get(username="dana")) == {"dba"}


def test_passthrough_grants_existing_groups_of_the_same_name_but_never_a_role(idp, role_groups, settings):
    settings.OIDC_GROUPS_PASSTHROUGH = True
    Group.objects.create(name="oncall-eu")
    oidc_login(Client(), idp, **_person(groups=["oncall-eu"]))
    user = User.objects.get(username="dana")
    user.groups.add(Group.objects.create(name="by-hand"))

    oidc_login(
        Client(), idp, **_person(groups=["oncall-eu", "admins", "reviewers", "not-in-airlock", "eng-dba"])
    )

    # Role groups come only from an explicit mapping; unknown names create nothing;
    # with passthrough every group is managed, so the group given by hand is gone.
    assert _groups(user) == {"oncall-eu", "dba"}
    assert not user.has_role("admin", "reviewer")
    assert not Group.objects.filter(name="not-in-airlock").exists()


def test_an_idp_username_equal_to_a_local_account_does_not_log_in_as_it(idp, alice):
    client = Client()
    oidc_login(client, idp, **_person(sub="u-evil", preferred_username="alice", email="someone@example.com"))

    newcomer = User.objects.get(email="someone@example.com")
    assert newcomer.pk != alice.pk
    assert newcomer.username != "alice"
    assert int(client.session["_auth_user_id"]) == newcomer.pk
    assert not newcomer.has_role("admin")
    alice.refresh_from_db()
    assert alice.has_role("admin")


def test_a_refused_token_exchange_logs_nobody_in(idp, oidc_settings):
    oidc_settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]["secret"] = "not-the-secret"
    client = Client()

    response = oidc_login(client, idp, **_person(groups=["eng-airlock-admins"]))

    assert response.status_code == 401  # allauth's "login failed" page
    assert "_auth_user_id" not in client.session
    assert not User.objects.filter(username="dana").exists()
    assert not AuditRecord.objects.filter(action__startswith="user.").exists()


def test_audit_records_of_a_login_hold_no_token_or_secret(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-dba"]))

    dumped = json.dumps(list(AuditRecord.objects.values("before", "after", "detail")))
    assert idp.client_secret not in dumped
    for access_token in idp._access:
        assert access_token not in dumped
    assert "eyJ" not in dumped  # no JWT (ID token) either


def test_linking_a_local_account_to_the_idp_syncs_its_groups(idp, mallory):
    client = Client()
    client.force_login(mallory)
    idp.person = _person(sub="u-mallory", preferred_username="mallory", groups=["eng-dba"])
    start = client.post(
        reverse("openid_connect_login", kwargs={"provider_id": "oidc"}), {"process": "connect"}
    )
    at_idp = requests.get(start["Location"], allow_redirects=False, timeout=10)
    callback = urlsplit(at_idp.headers["Location"])
    client.get(f"{callback.path}?{callback.query}")

    assert mallory.socialaccount_set.filter(uid="u-mallory").exists()
    assert _groups(mallory) == {"dba"}
    assert AuditRecord.objects.filter(action="user.groups.sync", target_id=str(mallory.pk)).exists()


def test_an_idp_email_equal_to_a_local_accounts_does_not_log_in_as_it(idp, alice):
    alice.email = "alice@example.com"
    alice.save()
    client = Client()

    response = oidc_login(
        client, idp, **_person(sub="u-evil", preferred_username="eve", email="alice@example.com")
    )

    # allauth asks for another address instead of connecting the IdP identity to alice.
    assert response.status_code == 302 and response["Location"] == reverse("socialaccount_signup")
    assert "_auth_user_id" not in client.session
    assert not alice.socialaccount_set.exists()
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]
    alice.refresh_from_db()
    assert alice.has_role("admin")


def test_a_disabled_person_cannot_log_in_through_the_idp(idp, role_groups):
    oidc_login(Client(), idp, **_person(groups=["eng-dba"]))
    user = User.objects.get(username="dana")
    do_set_user_active("test", user, False)
    client = Client()

    oidc_login(client, idp, **_person(groups=["eng-dba"]))

    assert "_auth_user_id" not in client.session
