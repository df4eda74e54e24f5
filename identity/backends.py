"""The console's authentication backends: Django's and allauth's, each reading a logged-in
person's roles in the same query as the person.

Every console request, API call and websocket connection loads its person from the
session through the backend that logged them in (``get_user``), then checks a role. With
the stock backends that took two statements (the person, then their role groups); here
it is one (``identity.models.with_roles``): the roles are still read afresh for each
request, never kept between two.

The statement is the ORM's (``with_roles``), built once per database and role groups
setting and run again from then on (``person_with_roles``, ``console.prebuilt``): building
it anew cost 1.2 ms of Python per request, three times what the statement costs
(docs/performance.md).

Sessions remember the backend's dotted path: a session opened under the stock paths (an
older Airlock) is not loaded by these, and that person logs in once more.
"""

from __future__ import annotations

from typing import Any

from allauth.account.auth_backends import AuthenticationBackend as AllauthBackend
from django.conf import settings
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend
from django.core.exceptions import ValidationError

from console.prebuilt import BuiltQuery
from identity.models import User, with_roles

# A primary key no person has, built into the statement where the person's goes.
_PLACEHOLDER_PK = -1_234_567_891
_statements: dict[tuple[str, tuple[tuple[str, str], ...]], BuiltQuery] = {}


def person_with_roles(user_id: Any) -> User | None:
    """The person with primary key ``user_id`` read with their roles, as
    ``with_roles(User.objects.filter(pk=user_id)).first()`` reads them; None when there is
    no such person or ``user_id`` is not a key."""
    manager = User._default_manager
    try:
        pk = User._meta.pk.to_python(user_id)  # type: ignore[union-attr]
    except ValidationError:
        return None
    if not isinstance(pk, int) or not -(2**63) <= pk < 2**63:  # no key of a person
        return None
    key = (manager.db, tuple(sorted(settings.AIRLOCK_ROLE_GROUPS.items())))
    built = _statements.get(key)
    if built is None:
        built = _statements[key] = BuiltQuery.of(
            with_roles(manager.filter(pk=_PLACEHOLDER_PK)), _PLACEHOLDER_PK
        )
    return next(iter(built.run(pk)), None)


class _RolesWithPerson:
    def get_user(self, user_id: Any) -> User | None:
        user = person_with_roles(user_id)
        if user is None or not self.user_can_authenticate(user):  # type: ignore[attr-defined]
            return None
        return user


class ModelBackend(_RolesWithPerson, DjangoModelBackend):
    """Local accounts (username and password), as Django's ``ModelBackend``."""


class AuthenticationBackend(_RolesWithPerson, AllauthBackend):
    """allauth's logins (email or username, OIDC), as its ``AuthenticationBackend``."""
