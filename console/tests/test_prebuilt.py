"""``BuiltQuery``: a queryset's statement built once, run again with other values."""

from __future__ import annotations

import pytest

from console.prebuilt import BuiltQuery
from identity.models import User


@pytest.mark.django_db
def test_a_built_query_finds_what_the_queryset_finds_for_each_value():
    ann = User.objects.create_user(username="ann-prebuilt", email="ann@example.com")
    bob = User.objects.create_user(username="bob-prebuilt", email="bob@example.com")
    built = BuiltQuery.of(
        User.objects.filter(pk=-77, username__startswith="placeholder"), -77, "placeholder%"
    )
    for person in (ann, bob):
        assert [u.pk for u in built.run(person.pk, "ann%")] == [
            u.pk for u in User.objects.filter(pk=person.pk, username__startswith="ann")
        ]
    assert list(built.run(10**9, "%")) == []


@pytest.mark.django_db
def test_a_placeholder_must_be_in_exactly_one_place_and_each_gets_a_value():
    with pytest.raises(ValueError, match="in 0 places"):
        BuiltQuery.of(User.objects.filter(pk=1), -5)
    with pytest.raises(ValueError, match="in 2 places"):
        BuiltQuery.of(User.objects.filter(pk=-5, id__gte=-5), -5)
    built = BuiltQuery.of(User.objects.filter(pk=-5), -5)
    with pytest.raises(TypeError, match="takes 1 values, not 2"):
        built.run(1, 2)
