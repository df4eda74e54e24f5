"""Django's deployment checks for its middleware, with the console's subclasses of it.

Django's security checks find ``SecurityMiddleware``, ``XFrameOptionsMiddleware`` and
``CsrfViewMiddleware`` by their dotted paths in ``MIDDLEWARE``. The console lists its own
subclasses of them (``console.middleware``: the same middleware, its hooks called on the
event loop), so Django's presence checks (``security.W001``/``W002``/``W003``) would warn
of middleware that is there, and the checks that apply only when it is there (HSTS, SSL
redirect, ``X-Frame-Options: DENY``, the CSRF cookie's ``Secure``...) would pass without
looking. ``settings.SILENCED_SYSTEM_CHECKS`` silences the three presence warnings; here
the presence is checked by class (``airlock.W002``-``W004``), and Django's other checks
are run as if Django's own dotted paths were listed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks.security import base, csrf
from django.test.utils import override_settings
from django.utils.module_loading import import_string

# Django's middleware whose presence its checks look for, with the warning each gives.
WATCHED = {
    "django.middleware.security.SecurityMiddleware": (
        "airlock.W002",
        "SecurityMiddleware (django.middleware.security, or console.middleware's subclass of it) "
        "is not in MIDDLEWARE: SECURE_HSTS_SECONDS, SECURE_CONTENT_TYPE_NOSNIFF, SECURE_REFERRER_POLICY, "
        "SECURE_CROSS_ORIGIN_OPENER_POLICY and SECURE_SSL_REDIRECT have no effect.",
    ),
    "django.middleware.clickjacking.XFrameOptionsMiddleware": (
        "airlock.W003",
        "XFrameOptionsMiddleware is not in MIDDLEWARE: pages are served without an X-Frame-Options header.",
    ),
    "django.middleware.csrf.CsrfViewMiddleware": (
        "airlock.W004",
        "CsrfViewMiddleware is not in MIDDLEWARE: forms are not protected against cross-site request forgery.",
    ),
}

# Django's checks that apply only when the middleware is there (their own ids).
_WHEN_PRESENT = (
    base.check_sts,
    base.check_sts_include_subdomains,
    base.check_sts_preload,
    base.check_content_type_nosniff,
    base.check_ssl_redirect,
    base.check_xframe_deny,
    base.check_referrer_policy,
    base.check_cross_origin_opener_policy,
    csrf.check_csrf_cookie_secure,
)


def as_django_names(middleware: list[str]) -> list[str]:
    """``middleware`` with each subclass of a watched Django middleware named as Django's."""
    watched = {name: import_string(name) for name in WATCHED}
    named = []
    for path in middleware:
        try:
            cls = import_string(path)
        except ImportError:
            cls = None
        if not isinstance(cls, type):
            named.append(path)
            continue
        named.append(next((name for name, parent in watched.items() if issubclass(cls, parent)), path))
    return named


@checks.register(checks.Tags.security, deploy=True)
def middleware_security(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    names = as_django_names(list(settings.MIDDLEWARE))
    found: list[checks.CheckMessage] = [
        checks.Warning(message, id=check_id)
        for name, (check_id, message) in WATCHED.items()
        if name not in names
    ]
    if names == list(settings.MIDDLEWARE):
        return found  # Django's own paths: its checks already ran as they are
    with override_settings(MIDDLEWARE=names):
        for check in _WHEN_PRESENT:
            found.extend(check(app_configs))
    return found
