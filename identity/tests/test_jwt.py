"""Agent JWTs: verified against a JWKS served on loopback, with keys made in the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from identity.actions import do_create_agent, do_update_agent
from identity.auth import AgentAuthError, authenticate_agent
from identity.jwt import issuer_configs, reset_jwks_clients, verify_agent_jwt
from identity.tests.idp import FakeIdentityProvider, ServiceAccount, SigningKey

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    reset_jwks_clients()
    yield
    reset_jwks_clients()


@pytest.fixture
def issuer(settings, idp: FakeIdentityProvider) -> dict:
    """The loopback IdP as the one trusted issuer; returns its (mutable) settings entry."""
    entry = {
        "issuer": idp.issuer,
        "jwks_url": idp.jwks_url,
        "audience": "airlock",
        "jwks_min_refresh_seconds": 0,
    }
    settings.AIRLOCK_JWT_ISSUERS = [entry]
    return entry


@pytest.fixture
def billing_bot(idp, alice):
    return do_create_agent(
        "test",
        "billing-bot",
        groups=["agents"],
        on_behalf_of=alice,
        external_subject=f"{idp.issuer}|svc-billing",
    )


def _refused(token: str) -> str:
    with pytest.raises(AgentAuthError) as caught:
        verify_agent_jwt(token)
    return caught.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(idp, **extra) -> dict:
    now = int(time.time())
    return {"iss": idp.issuer, "sub": "svc-billing", "aud": "airlock", "iat": now, "exp": now + 300} | extra


def test_a_valid_token_authenticates_as_its_bound_agent(idp, issuer, billing_bot):
    identity = verify_agent_jwt(idp.agent_token("svc-billing"))

    assert identity.agent == billing_bot
    assert identity.name == "billing-bot"
    assert identity.via == "jwt"
    assert identity.token_id is None
    assert identity.groups == frozenset({"agents"})
    assert identity.on_behalf_of == "alice"
    assert identity.subject == f"{idp.issuer}|svc-billing"
    assert identity.expires_at > datetime.now(tz=UTC)


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: SigningKey.rsa("k-rs256"),
        lambda: SigningKey.rsa("k-ps256", alg="PS256"),
        lambda: SigningKey.ec("k-es256"),
        lambda: SigningKey.ed25519("k-eddsa"),
    ],
    ids=["RS256", "PS256", "ES256", "EdDSA"],
)
def test_every_allowed_key_kind_verifies(idp, issuer, billing_bot, make_key):
    key = make_key()
    idp.keys.append(key)

    assert verify_agent_jwt(idp.agent_token("svc-billing", key=key)).name == "billing-bot"


def test_a_token_signed_by_another_key_under_the_issuers_kid_is_refused(idp, issuer, billing_bot):
    impostor = SigningKey.rsa(idp.keys[0].kid)

    assert _refused(impostor.sign(_claims(idp))) == "the token's signature does not verify"


def test_a_token_whose_claims_were_changed_after_signing_is_refused(idp, issuer, billing_bot):
    header, _, signature = idp.agent_token("svc-someone-else").split(".")
    forged = _b64(json.dumps(_claims(idp)).encode())

    assert _refused(f"{header}.{forged}.{signature}") == "the token's signature does not verify"


def test_a_token_for_another_audience_is_refused(idp, issuer, billing_bot):
    assert (
        _refused(idp.agent_token("svc-billing", aud="some-other-api")) == "the token is for another audience"
    )


def test_a_token_from_an_unknown_issuer_is_refused_without_fetching_any_key(idp, issuer, billing_bot):
    token = idp.keys[0].sign(_claims(idp, iss="https://idp.attacker.example"))

    assert _refused(token) == "unknown issuer 'https://idp.attacker.example'"
    assert idp.jwks_fetches == 0


def test_no_issuer_configured_means_no_jwt_is_accepted(idp, settings, billing_bot):
    settings.AIRLOCK_JWT_ISSUERS = []

    assert _refused(idp.agent_token("svc-billing")).startswith("unknown issuer")


def test_an_expired_token_is_refused(idp, issuer, billing_bot):
    now = int(time.time())

    reason = _refused(idp.agent_token("svc-billing", iat=now - 900, nbf=now - 900, exp=now - 120))

    assert reason == "the token has expired"


def test_a_token_that_is_not_valid_yet_is_refused(idp, issuer, billing_bot):
    now = int(time.time())

    assert (
        _refused(idp.agent_token("svc-billing", nbf=now + 600, exp=now + 900))
        == "the token is not valid yet (nbf)"
    )


def test_a_token_without_exp_is_refused(idp, issuer, billing_bot):
    assert _refused(idp.agent_token("svc-billing", exp=None)) == "the token has no 'exp' claim"


def test_an_unsigned_token_alg_none_is_refused_without_fetching_any_key(idp, issuer, billing_bot):
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": idp.keys[0].kid}).encode())
    payload = _b64(json.dumps(_claims(idp)).encode())

    assert _refused(f"{header}.{payload}.") == "algorithm 'none' is not allowed"
    assert idp.jwks_fetches == 0


def test_an_hmac_token_keyed_with_the_issuers_public_key_is_refused(idp, issuer, billing_bot):
    # The "algorithm confusion" attack: the public key, known to all, used as an HMAC secret.
    public_pem = (
        idp.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.keys[0].kid}).encode())
    payload = _b64(json.dumps(_claims(idp)).encode())
    signature = _b64(hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())

    assert _refused(f"{header}.{payload}.{signature}") == "algorithm 'HS256' is not allowed"


def test_a_symmetric_key_in_the_jwks_is_never_used(idp, issuer, billing_bot):
    class OctKey(SigningKey):
        def public_jwk(self):
            return {"kty": "oct", "kid": self.kid, "k": _b64(self.private), "alg": "HS256"}

    oct_key = OctKey("k-oct", "HS256", secrets.token_bytes(32))
    idp.keys.append(oct_key)
    rs_header = _b64(json.dumps({"alg": "RS256", "kid": "k-oct"}).encode())
    payload = _b64(json.dumps(_claims(idp)).encode())
    signature = _b64(hmac.new(oct_key.private, f"{rs_header}.{payload}".encode(), hashlib.sha256).digest())

    assert _refused(oct_key.sign(_claims(idp))) == "algorithm 'HS256' is not allowed"
    assert _refused(f"{rs_header}.{payload}.{signature}") == "key 'k-oct' is not for algorithm 'RS256'"


def test_a_token_without_a_usable_kid_is_refused(idp, issuer, billing_bot):
    no_kid = jwt.encode(_claims(idp), idp.keys[0].private, algorithm="RS256")

    assert _refused(no_kid) == "the token has no key id (kid)"
    assert _refused(idp.keys[0].sign(_claims(idp), kid="k" * 300)) == "the token's key id (kid) is too long"


def test_an_unknown_kid_refreshes_the_keys_and_a_new_key_is_accepted(idp, issuer, billing_bot):
    verify_agent_jwt(idp.agent_token("svc-billing"))
    assert idp.jwks_fetches == 1
    rotated = SigningKey.rsa("idp-key-2")
    idp.keys.append(rotated)

    identity = verify_agent_jwt(idp.agent_token("svc-billing", key=rotated))

    assert identity.name == "billing-bot"
    assert idp.jwks_fetches == 2
    verify_agent_jwt(idp.agent_token("svc-billing", key=rotated))
    assert idp.jwks_fetches == 2  # cached from now on


def test_an_unknown_kid_that_the_issuer_does_not_publish_is_refused(idp, issuer, billing_bot):
    stranger = SigningKey.rsa("nobody-knows-me")

    assert (
        _refused(stranger.sign(_claims(idp))) == "no signing key with key id 'nobody-knows-me' at the issuer"
    )


def test_a_flood_of_unknown_kids_does_not_hammer_the_issuer(idp, issuer, billing_bot):
    issuer["jwks_min_refresh_seconds"] = 300
    verify_agent_jwt(idp.agent_token("svc-billing"))
    stranger = SigningKey.rsa("unused")

    for _ in range(50):
        _refused(stranger.sign(_claims(idp), kid=secrets.token_hex(8)))

    assert idp.jwks_fetches == 1


def test_after_the_minimum_interval_an_unknown_kid_refreshes_again(idp, issuer, billing_bot):
    issuer["jwks_min_refresh_seconds"] = 2
    rotated = SigningKey.rsa("idp-key-2")
    verify_agent_jwt(idp.agent_token("svc-billing"))
    idp.keys.append(rotated)
    token = idp.agent_token("svc-billing", key=rotated)

    # Refused (without a fetch) until the interval has passed, then fetched once.
    refusals = 0
    deadline = time.monotonic() + 15
    while True:
        try:
            identity = verify_agent_jwt(token)
            break
        except AgentAuthError as exc:
            refusals += 1
            assert exc.reason == "no signing key with key id 'idp-key-2' at the issuer"
            assert idp.jwks_fetches == 1
            assert time.monotonic() < deadline
            time.sleep(0.05)

    assert refusals >= 1
    assert identity.name == "billing-bot"
    assert idp.jwks_fetches == 2


def test_an_unreachable_jwks_refuses_the_token(idp, issuer, billing_bot):
    idp.jwks_status = 503

    assert _refused(idp.agent_token("svc-billing")) == "cannot fetch the issuer's signing keys"


@pytest.mark.parametrize(
    "body", [b"<html>maintenance</html>", b"[]", b'{"keys": []}', b'{"keys": [{"kty": "RSA"}]}']
)
def test_a_broken_jwks_refuses_the_token(idp, issuer, billing_bot, body):
    idp.jwks_body = body

    assert _refused(idp.agent_token("svc-billing")) in {
        "cannot fetch the issuer's signing keys",
        f"no signing key with key id {idp.keys[0].kid!r} at the issuer",
    }


def test_the_jwks_is_found_through_discovery_when_not_configured(idp, issuer, billing_bot):
    issuer["jwks_url"] = ""

    assert verify_agent_jwt(idp.agent_token("svc-billing")).name == "billing-bot"
    assert idp.jwks_fetches == 1


def test_a_token_from_the_client_credentials_grant_is_accepted(idp, issuer, billing_bot):
    idp.service_accounts["billing-ci"] = ServiceAccount("ci-secret", {"sub": "svc-billing"})
    response = requests.post(
        idp.issuer + "/token",
        data={"grant_type": "client_credentials", "client_id": "billing-ci", "client_secret": "ci-secret"},
        timeout=10,
    )
    response.raise_for_status()

    identity = authenticate_agent(response.json()["access_token"], agent_name="billing-bot")

    assert identity.name == "billing-bot" and identity.via == "jwt"


def test_a_jwt_for_another_agent_than_the_one_named_is_refused(idp, issuer, billing_bot):
    with pytest.raises(AgentAuthError, match="another agent"):
        authenticate_agent(idp.agent_token("svc-billing"), agent_name="report-bot")


def test_an_unbound_subject_is_refused(idp, issuer, billing_bot):
    assert (
        _refused(idp.agent_token("svc-unknown"))
        == "no agent is bound to subject 'svc-unknown' of this issuer"
    )


def test_name_matching_applies_only_when_enabled_and_only_to_unbound_agents(idp, issuer, billing_bot):
    do_create_agent("test", "report-bot", groups=["agents"])
    assert _refused(idp.agent_token("report-bot")).startswith("no agent is bound")

    issuer["match_agent_name"] = True

    assert verify_agent_jwt(idp.agent_token("report-bot")).name == "report-bot"
    # billing-bot is bound to svc-billing: its name alone does not open it.
    assert _refused(idp.agent_token("billing-bot")).startswith("no agent is bound")


def test_a_disabled_agent_is_refused(idp, issuer, billing_bot):
    do_update_agent("test", billing_bot, enabled=False)

    assert _refused(idp.agent_token("svc-billing")) == "agent 'billing-bot' is disabled"


def test_claim_groups_are_mapped_and_added_to_the_agents_own(idp, issuer, billing_bot, role_groups):
    issuer["group_map"] = {"ci-deployers": "deployers", "ops": ["admins"]}
    Group.objects.create(name="dba")

    identity = verify_agent_jwt(
        idp.agent_token("svc-billing", groups=["ci-deployers", "dba", "admins", "stray"])
    )

    assert identity.groups == {"agents", "deployers"}

    issuer["groups_passthrough"] = True
    identity = verify_agent_jwt(
        idp.agent_token("svc-billing", groups=["ci-deployers", "dba", "admins", "stray"])
    )

    # Passthrough: existing groups only, never a role group.
    assert identity.groups == {"agents", "deployers", "dba"}


def test_garbage_is_refused_as_malformed(issuer):
    assert _refused("eyJhbGciOi.not-base64!.x") == "the token is not a well-formed JWT"
    assert _refused("x" * 20_000) == "the token is too large"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"audience": "airlock"}, "AIRLOCK_JWT_ISSUERS[0].issuer: required"),
        ({"issuer": "https://idp.example"}, "audience: required"),
        ({"issuer": "https://idp.example", "audience": "a", "algorithms": ["HS256"]}, "HS256 not allowed"),
        (
            {"issuer": "https://idp.example", "audience": "a", "algorithms": ["none", "RS256"]},
            "none not allowed",
        ),
        (
            {"issuer": "https://idp.example", "audience": "a", "jwks_url": "http://idp.example/jwks"},
            "https://",
        ),
    ],
)
def test_a_bad_issuer_setting_is_refused_by_name(settings, entry, message):
    settings.AIRLOCK_JWT_ISSUERS = [entry]

    with pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[").replace("]", r"\]")):
        issuer_configs()
    with pytest.raises(SystemCheckError, match="identity.E001"):
        call_command("check")
