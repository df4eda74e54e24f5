"""django-allauth adapters: no open sign-up; OIDC logins create people and sync groups."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.db import transaction
from django.http import HttpRequest

from audit.actions import record


class AccountAdapter(DefaultAccountAdapter):
    """People are created by admins or by single sign-on, never by open sign-up."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Single sign-on creates the person on first login; groups sync on every login."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        return True

    def pre_social_login(self, request: HttpRequest, sociallogin: Any) -> None:
        # A returning person: sync before the session is made, so that a group the IdP
        # took away is gone before the first page is served.
        from identity.oidc import sync_groups_from_login

        if sociallogin.is_existing:
            sync_groups_from_login(sociallogin)

    def save_user(self, request: HttpRequest, sociallogin: Any, form: Any = None) -> Any:
        from identity.actions import user_snapshot
        from identity.oidc import is_oidc_login, sync_groups_from_login

        with transaction.atomic():
            user = super().save_user(request, sociallogin, form)
            provider = "oidc" if is_oidc_login(sociallogin) else sociallogin.account.provider
            record(provider, "user.create", user, after=user_snapshot(user), via="single sign-on")
            sync_groups_from_login(sociallogin)
        return user
