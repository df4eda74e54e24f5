"""The identity environment variables, read by the real settings module in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHOW = """
import json, django
django.setup()
from django.conf import settings
from identity.jwt import issuer_configs
app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
[issuer] = issuer_configs()
print(json.dumps({
    "server_url": app["settings"]["server_url"],
    "client_id": app["client_id"],
    "group_map": {k: sorted(v) for k, v in settings.OIDC_GROUP_MAP.items()},
    "issuer": issuer.issuer,
    "audience": issuer.audience,
    "agent_group_map": {k: sorted(v) for k, v in issuer.group_map.items()},
    "min_refresh": issuer.jwks_min_refresh_seconds,
    "match_agent_name": issuer.match_agent_name,
}))
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ, DJANGO_SETTINGS_MODULE="console.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_oidc_and_agent_jwt_settings_come_from_the_environment():
    result = _python(
        SHOW,
        AIRLOCK_OIDC_ISSUER="https://sso.example.com/realms/ops",
        AIRLOCK_OIDC_CLIENT_ID="airlock",
        AIRLOCK_OIDC_CLIENT_SECRET="s3cret",
        AIRLOCK_OIDC_GROUP_MAP="ops-admins=admins, ops-sre=dba, ops-sre=oncall",
        AIRLOCK_AGENT_JWT_ISSUER="https://sso.example.com/realms/ops",
        AIRLOCK_AGENT_JWT_AUDIENCE="airlock-gateway",
        AIRLOCK_AGENT_JWT_GROUP_MAP="ci=deployers",
        AIRLOCK_AGENT_JWT_JWKS_MIN_REFRESH_SECONDS="60",
        AIRLOCK_AGENT_JWT_MATCH_AGENT_NAME="true",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "server_url": "https://sso.example.com/realms/ops",
        "client_id": "airlock",
        "group_map": {"ops-admins": ["admins"], "ops-sre": ["dba", "oncall"]},
        "issuer": "https://sso.example.com/realms/ops",
        "audience": ["airlock-gateway"],
        "agent_group_map": {"ci": ["deployers"]},
        "min_refresh": 60.0,
        "match_agent_name": True,
    }


def test_a_malformed_group_map_names_the_variable():
    result = _python("import django; django.setup()", AIRLOCK_OIDC_GROUP_MAP="ops-admins=admins,oops")

    assert result.returncode != 0
    assert "AIRLOCK_OIDC_GROUP_MAP: 'oops' is not of the form idp-group=airlock-group" in result.stderr


def test_an_agent_jwt_issuer_over_plain_http_fails_the_system_check():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=dict(os.environ, AIRLOCK_AGENT_JWT_ISSUER="http://sso.example.com"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "identity.E001" in result.stderr and "must be an https:// URL" in result.stderr
