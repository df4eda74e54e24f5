"""OpenID Connect login for people: reading the groups claim and syncing groups.

django-allauth's generic ``openid_connect`` provider does the protocol (discovery,
authorization code with PKCE, token exchange, ID token checks, userinfo). Airlock hooks
in at two points (``identity.adapters.SocialAccountAdapter``): when a person logs in
again (``pre_social_login``, before the session exists) and when a first login creates
the person (``save_user``); a local account linked to the IdP later is synced when the
link is made (``social_account_added``, in ``identity.signals``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from identity.actions import do_sync_idp_groups
from identity.groupmap import GroupChange, claim_values, has_claim
from identity.models import User

log = logging.getLogger(__name__)

OIDC_PROVIDER = "openid_connect"


def is_oidc_login(sociallogin: Any) -> bool:
    provider = getattr(sociallogin, "provider", None)
    if provider is not None:
        return getattr(provider, "id", None) == OIDC_PROVIDER
    apps = settings.SOCIALACCOUNT_PROVIDERS.get(OIDC_PROVIDER, {}).get("APPS", [])
    return sociallogin.account.provider in {app.get("provider_id") for app in apps}


def groups_claim(extra_data: Any) -> list[str]:
    """The IdP group names of a login: the userinfo response's claim, else the ID token's.

    A missing claim means no groups. A malformed claim (not a string or a list of
    strings) also counts as no groups, so that a broken IdP setup takes groups away
    rather than granting any.
    """
    claim = settings.OIDC_GROUPS_CLAIM
    sources = []
    if isinstance(extra_data, dict):
        for part in ("userinfo", "id_token"):
            if isinstance(extra_data.get(part), dict):
                sources.append(extra_data[part])
        if not sources:
            sources.append(extra_data)  # extra_data of allauth before 65.11: the claims
    for claims in sources:
        if not has_claim(claims, claim):
            continue
        values = claim_values(claims, claim)
        if values is None:
            log.warning("OIDC: the %r claim is not a list of strings; treated as no groups", claim)
            return []
        return values
    return []


def sync_groups_from_login(sociallogin: Any) -> GroupChange | None:
    """Set the person's managed groups from this login's claim (OIDC logins only)."""
    if not is_oidc_login(sociallogin):
        return None
    user = sociallogin.user
    if not isinstance(user, User) or user.pk is None:
        return None
    return do_sync_idp_groups(user, groups_claim(sociallogin.account.extra_data))
