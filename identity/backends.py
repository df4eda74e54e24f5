"""The console's authentication backends: Django's and allauth's, each reading a logged-in
person's roles in the same query as the person.

Every console request, API call and websocket connection loads its person from the
session through the backend that logged them in (``get_user``), then checks a role. With
the stock backends that took two statements (the person, then their role groups); here
it is one (``identity.models.with_roles``): the roles are still read afresh for each
request, never kept between two.

Sessions remember the backend's dotted path: a session opened under the stock paths (an
older Airlock) is not loaded by these, and that person logs in once more.
"""

from __future__ import annotations

from typing import Any

from allauth.account.auth_backends import AuthenticationBackend as AllauthBackend
from django.contrib.auth.backends import ModelBackend as DjangoModelBackend

from identity.models import User, with_roles


class _RolesWithPerson:
    def get_user(self, user_id: Any) -> User | None:
        user = with_roles(User._default_manager.filter(pk=user_id)).first()
        if user is None or not self.user_can_authenticate(user):  # type: ignore[attr-defined]
            return None
        return user


class ModelBackend(_RolesWithPerson, DjangoModelBackend):
    """Local accounts (username and password), as Django's ``ModelBackend``."""


class AuthenticationBackend(_RolesWithPerson, AllauthBackend):
    """allauth's logins (email or username, OIDC), as its ``AuthenticationBackend``."""
