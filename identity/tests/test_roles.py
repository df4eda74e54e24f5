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
