"""Roles read with the person (``with_roles``) are the roles read on their own."""

from __future__ import annotations

from itertools import combinations

import pytest

from identity.models import ROLES, User, with_roles


@pytest.mark.django_db
def test_roles_read_with_the_person_are_the_roles_read_alone(role_groups, django_assert_num_queries):
    people = []
    for size in range(len(ROLES) + 1):
        for held in combinations(ROLES, size):
            user = User.objects.create_user(username="p-" + ("-".join(held) or "none"))
            user.groups.add(*(role_groups[role] for role in held))
            people.append(user)
    root = User.objects.create_user(username="root", is_superuser=True)
    gone = User.objects.create_user(username="gone", is_active=False)
    gone.groups.add(role_groups["reviewer"])
    people += [root, gone]
    expected = {user.pk: User.objects.get(pk=user.pk).role_names() for user in people}
    assert expected[root.pk] == set(ROLES) and expected[gone.pk] == set()
    with django_assert_num_queries(1):
        found = {user.pk: user.role_names() for user in with_roles(User.objects.all())}
    assert found == expected


@pytest.mark.django_db
def test_a_role_given_or_taken_shows_at_the_next_read(bob, role_groups):
    assert with_roles(User.objects.filter(pk=bob.pk)).get().role_names() == {"reviewer"}
    bob.groups.remove(role_groups["reviewer"])
    bob.groups.add(role_groups["auditor"])
    assert with_roles(User.objects.filter(pk=bob.pk)).get().role_names() == {"auditor"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["identity.backends.ModelBackend", "identity.backends.AuthenticationBackend"]
)
def test_a_logged_in_person_is_read_with_their_roles_in_one_statement(
    path, bob, role_groups, django_assert_num_queries
):
    from django.contrib.auth import load_backend

    backend = load_backend(path)
    with django_assert_num_queries(1):
        person = backend.get_user(bob.pk)
        assert person is not None and person.role_names() == {"reviewer"} and person.has_role("reviewer")
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    assert backend.get_user(bob.pk) is None
    assert backend.get_user(10**9) is None


@pytest.mark.django_db
def test_a_session_request_reads_session_and_person_in_two_statements(bob, client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(bob)
    with CaptureQueriesContext(connection) as seen:
        answer = client.get("/api/approvals/?status=pending")
    assert answer.status_code == 200
    # The session, then the person with their roles; what follows is the view's own.
    assert "django_session" in seen.captured_queries[0]["sql"]
    assert "airlock_holds_reviewer" in seen.captured_queries[1]["sql"]


@pytest.mark.django_db
def test_the_precompiled_read_gives_what_the_orm_gives(role_groups, django_assert_num_queries):
    from identity.backends import person_with_roles

    people = []
    for size in range(len(ROLES) + 1):
        for held in combinations(ROLES, size):
            user = User.objects.create_user(
                username="q-" + ("-".join(held) or "none"), email=f"{size}@example.com"
            )
            user.groups.add(*(role_groups[role] for role in held))
            people.append(user)
    people.append(User.objects.create_user(username="q-root", is_superuser=True))
    for user in people:
        expected = with_roles(User.objects.filter(pk=user.pk)).first()
        with django_assert_num_queries(1):
            found = person_with_roles(user.pk)
            assert found is not None and found.role_names() == expected.role_names()
        assert type(found) is User
        assert [getattr(found, f.attname) for f in User._meta.concrete_fields] == [
            getattr(expected, f.attname) for f in User._meta.concrete_fields
        ]
        assert person_with_roles(str(user.pk)).pk == user.pk  # as a session keeps it
    for not_a_key in ("abc", "", None, 10**30, -(10**30), 10**9):
        assert person_with_roles(not_a_key) is None


@pytest.mark.django_db
def test_the_precompiled_read_follows_the_role_groups_setting(bob, role_groups, settings):
    from django.contrib.auth.models import Group

    from identity.backends import person_with_roles

    assert person_with_roles(bob.pk).role_names() == {"reviewer"}
    auditors = Group.objects.create(name="audit-team")
    bob.groups.add(auditors)
    settings.AIRLOCK_ROLE_GROUPS = {**settings.AIRLOCK_ROLE_GROUPS, "auditor": "audit-team"}
    assert person_with_roles(bob.pk).role_names() == {"reviewer", "auditor"}
