"""Signal receivers for identity."""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.signals import social_account_added
from django.dispatch import receiver


@receiver(social_account_added)
def sync_groups_when_an_account_is_linked(sender: Any, request: Any, sociallogin: Any, **kwargs: Any) -> None:
    # A local account linked to the IdP is managed by it from now on, like any other.
    from identity.oidc import sync_groups_from_login

    sync_groups_from_login(sociallogin)
