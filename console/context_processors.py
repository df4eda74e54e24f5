from typing import Any

from django.http import HttpRequest


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Navigation entries for the person's roles."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_roles": set()}
    roles = user.role_names()
    items = [("dashboard", "Dashboard")]
    return {"nav_items": items, "user_roles": roles}
