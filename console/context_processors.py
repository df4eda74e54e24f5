from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

# (URL name, label, roles that see it). An entry whose URL does not exist in this build
# (an app that has not shipped its pages yet) is left out: the menu links only to real pages.
NAVIGATION: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("dashboard", "Dashboard", frozenset({"admin", "reviewer", "auditor"})),
    ("approvals:inbox", "Approvals", frozenset({"reviewer"})),
    ("connection_list", "Connections", frozenset({"admin"})),
    ("agent_list", "Agents", frozenset({"admin"})),
    ("policies:list", "Policies", frozenset({"admin"})),
    ("people_list", "People & groups", frozenset({"admin"})),
    ("recordings:session_list", "Sessions", frozenset({"admin", "auditor"})),
    ("audit_log", "Audit log", frozenset({"admin", "auditor"})),
    ("person_tokens", "API tokens", frozenset({"admin", "reviewer", "auditor"})),
)


def navigation_for(roles: set[str], path: str = "") -> list[dict[str, Any]]:
    items = []
    for url_name, label, allowed in NAVIGATION:
        if not roles & allowed:
            continue
        try:
            url = reverse(url_name)
        except NoReverseMatch:
            continue
        active = path == url if url == "/" else path.startswith(url)
        items.append({"url": url, "label": label, "active": active, "name": url_name})
    return items


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Navigation entries for the person's roles, and what the login page needs."""
    context: dict[str, Any] = {"oidc_login_name": settings.OIDC_PROVIDER_NAME if settings.OIDC_ISSUER else ""}
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {**context, "nav_items": [], "user_roles": set(), "user_role_list": []}
    roles = user.role_names()
    return {
        **context,
        "nav_items": navigation_for(roles, request.path),
        "user_roles": roles,
        "user_role_list": sorted(roles),
    }
