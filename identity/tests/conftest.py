"""Fixtures for identity tests: the loopback identity provider and its settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from django.test import Client
from django.urls import reverse

from identity.tests.idp import FakeIdentityProvider


@pytest.fixture(autouse=True, scope="session")
def _static_root() -> None:
    # WhiteNoise warns (an error under our warning filters) when STATIC_ROOT is missing,
    # which it is until collectstatic runs; the test client loads the middleware.
    from django.conf import settings

    settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def idp() -> Iterator[FakeIdentityProvider]:
    provider = FakeIdentityProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def oidc_settings(settings: Any, idp: FakeIdentityProvider) -> Any:
    """Airlock's console configured for the loopback IdP, as console/settings.py would."""
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": "oidc",
                    "name": "Test IdP",
                    "client_id": idp.client_id,
                    "secret": idp.client_secret,
                    "settings": {"server_url": idp.issuer, "token_auth_method": "client_secret_post"},
                }
            ],
        }
    }
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_GROUP_MAP = {
        "eng-airlock-admins": ["admins"],
        "eng-airlock-reviewers": ["reviewers"],
        "eng-dba": ["dba"],
        "eng-sre": ["dba", "oncall"],
    }
    settings.OIDC_GROUPS_PASSTHROUGH = False
    return settings


def oidc_login(client: Client, idp: FakeIdentityProvider, **person: Any) -> Any:
    """Log in through the IdP as a browser would: Airlock -> IdP -> Airlock's callback.

    Returns the response of Airlock's callback.
    """
    idp.person = person
    start = client.post(reverse("openid_connect_login", kwargs={"provider_id": "oidc"}))
    assert start.status_code == 302, start.content[:500]
    assert start["Location"].startswith(idp.issuer + "/authorize?")
    at_idp = requests.get(start["Location"], allow_redirects=False, timeout=10)
    assert at_idp.status_code == 302, at_idp.text
    callback = urlsplit(at_idp.headers["Location"])
    assert callback.netloc == "testserver"
    return client.get(f"{callback.path}?{callback.query}")
