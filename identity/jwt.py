"""Agents authenticated by a JWT from a configured OpenID Connect issuer.

A CI job or an agent runtime with an IdP service account (the OAuth 2.0
client-credentials grant) presents the access token it got from its IdP in place of an
Airlock token. :func:`verify_agent_jwt` checks it and maps it to an agent:

1. The token is parsed without trust only to learn its issuer and key id. The issuer
   must be one of ``settings.AIRLOCK_JWT_ISSUERS`` (exact string match) and the header's
   ``alg`` one of that issuer's allowed asymmetric algorithms: ``none`` and the HMAC
   family are never accepted, so a public key can never be used as an HMAC secret.
2. The signing key is looked up by ``kid`` in the issuer's JWKS (PyJWT's
   ``PyJWKClient``): the key set is cached, refreshed once on an unknown ``kid``, and
   refreshed at most once per ``jwks_min_refresh_seconds``, so that a flood of tokens
   with made-up key ids cannot hammer the IdP. The key's own algorithm must match the
   header's.
3. Signature, ``exp``, ``nbf``, ``iss`` and ``aud`` are verified (``exp``, ``iss`` and
   ``aud`` are required), with ``leeway_seconds`` of clock skew.
4. The subject claim (``sub`` unless configured) names the agent: the enabled agent
   whose ``external_subject`` is ``"<issuer>|<subject>"``; failing that, when the issuer
   has ``match_agent_name`` on, the agent *not bound to any subject* whose name equals the
   subject. Nothing else: an unknown subject is refused, never created.
5. Groups: the agent's own groups, plus the groups claim mapped through the issuer's
   ``group_map`` (and passthrough), exactly like people's groups (``identity.groupmap``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured

from identity.auth import AgentAuthError, AgentIdentity, identity_for_jwt
from identity.groupmap import GroupMapping, claim_values, normalise_group_map
from identity.models import Agent

log = logging.getLogger(__name__)

__all__ = ["AgentAuthError", "IssuerConfig", "issuer_configs", "reset_jwks_clients", "verify_agent_jwt"]

# Asymmetric algorithms only: a verifier that accepts HS* can be fooled into using the
# issuer's *public* key as an HMAC secret (the "algorithm confusion" attack).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# Real access tokens are a few kilobytes; anything much larger is not worth parsing.
MAX_TOKEN_LENGTH = 16 * 1024
MAX_SUBJECT_LENGTH = 200
MAX_KID_LENGTH = 200
HTTP_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class IssuerConfig:
    """One trusted issuer of agent JWTs (an entry of ``settings.AIRLOCK_JWT_ISSUERS``)."""

    issuer: str
    audience: tuple[str, ...]
    jwks_url: str = ""  # empty: read jwks_uri from the issuer's discovery document
    subject_claim: str = "sub"
    groups_claim: str = "groups"
    group_map: Mapping[str, frozenset[str]] = field(default_factory=dict)
    groups_passthrough: bool = False
    match_agent_name: bool = False
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_seconds: int = 30
    jwks_cache_seconds: int = 300
    jwks_min_refresh_seconds: float = 30

    @classmethod
    def from_setting(cls, raw: Mapping[str, Any], index: int) -> IssuerConfig:
        where = f"AIRLOCK_JWT_ISSUERS[{index}]"
        try:
            issuer = str(raw["issuer"]).strip()
            if not issuer:
                raise ValueError("issuer: required")
            _check_url(issuer, "issuer")
            audience = raw.get("audience") or ()
            audience = (audience,) if isinstance(audience, str) else tuple(audience)
            if not audience or not all(isinstance(a, str) and a for a in audience):
                raise ValueError("audience: required (a string or a list of strings)")
            jwks_url = str(raw.get("jwks_url") or "").strip()
            if jwks_url:
                _check_url(jwks_url, "jwks_url")
            algorithms = tuple(raw.get("algorithms") or DEFAULT_ALGORITHMS)
            refused = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
            if refused:
                raise ValueError(f"algorithms: {', '.join(refused)} not allowed (asymmetric algorithms only)")
            config = cls(
                issuer=issuer,
                audience=audience,
                jwks_url=jwks_url,
                subject_claim=str(raw.get("subject_claim") or "sub"),
                groups_claim=str(raw.get("groups_claim") or "groups"),
                group_map=normalise_group_map(raw.get("group_map") or {}),
                groups_passthrough=bool(raw.get("groups_passthrough", False)),
                match_agent_name=bool(raw.get("match_agent_name", False)),
                algorithms=algorithms,
                leeway_seconds=int(raw.get("leeway_seconds", 30)),
                jwks_cache_seconds=int(raw.get("jwks_cache_seconds", 300)),
                jwks_min_refresh_seconds=float(raw.get("jwks_min_refresh_seconds", 30)),
            )
        except KeyError as exc:
            raise ImproperlyConfigured(f"{where}.{exc.args[0]}: required") from None
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"{where}.{exc}") from None
        if config.leeway_seconds < 0 or config.jwks_cache_seconds <= 0 or config.jwks_min_refresh_seconds < 0:
            raise ImproperlyConfigured(f"{where}: leeway and JWKS timings must not be negative")
        return config

    def group_mapping(self) -> GroupMapping:
        return GroupMapping(
            mapping=self.group_map,
            passthrough=self.groups_passthrough,
            role_groups=frozenset(settings.AIRLOCK_ROLE_GROUPS.values()),
        )


def _check_url(url: str, what: str) -> None:
    """HTTPS only, except on loopback: keys fetched over plain HTTP could be swapped."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise ValueError(f"{what}: {url!r} must be an https:// URL (http:// only on loopback)")


def issuer_configs() -> list[IssuerConfig]:
    """Every configured issuer, validated (``ImproperlyConfigured`` names a bad entry)."""
    return [IssuerConfig.from_setting(raw, i) for i, raw in enumerate(settings.AIRLOCK_JWT_ISSUERS)]


# --- Keys -------------------------------------------------------------------------
_lock = threading.Lock()
_clients: dict[tuple[str, int, float], jwt.PyJWKClient] = {}
_discovered: dict[str, str] = {}


def reset_jwks_clients() -> None:
    """Forget every cached key set (tests, and after changing issuers at run time)."""
    with _lock:
        _clients.clear()
        _discovered.clear()


def _jwks_url(config: IssuerConfig) -> str:
    if config.jwks_url:
        return config.jwks_url
    with _lock:
        known = _discovered.get(config.issuer)
    if known:
        return known
    url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=False)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("agent JWT: cannot read the discovery document of %s: %s", config.issuer, exc)
        raise AgentAuthError("cannot fetch the issuer's signing keys") from None
    jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
    # OpenID Connect Discovery 1.0 section 4.3: the issuer in the document must be ours.
    if not isinstance(jwks_uri, str) or document.get("issuer") != config.issuer:
        log.warning(
            "agent JWT: the discovery document of %s has no jwks_uri or another issuer", config.issuer
        )
        raise AgentAuthError("cannot fetch the issuer's signing keys")
    try:
        _check_url(jwks_uri, "jwks_uri")
    except ValueError as exc:
        log.warning("agent JWT: %s", exc)
        raise AgentAuthError("cannot fetch the issuer's signing keys") from None
    with _lock:
        _discovered[config.issuer] = jwks_uri
    return jwks_uri


def _jwks_client(config: IssuerConfig) -> jwt.PyJWKClient:
    url = _jwks_url(config)
    key = (url, config.jwks_cache_seconds, config.jwks_min_refresh_seconds)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = jwt.PyJWKClient(
                url,
                cache_jwk_set=True,
                lifespan=config.jwks_cache_seconds,
                cooldown_duration=config.jwks_min_refresh_seconds,
                timeout=HTTP_TIMEOUT_SECONDS,
            )
            _clients[key] = client
    return client


def _signing_key(config: IssuerConfig, kid: str) -> jwt.PyJWK:
    client = _jwks_client(config)
    try:
        return client.get_signing_key(kid)
    except (jwt.PyJWKClientConnectionError, ValueError) as exc:
        # ValueError: the endpoint answered with something that is not JSON.
        log.warning("agent JWT: cannot fetch the JWKS of %s: %s", config.issuer, exc)
        raise AgentAuthError("cannot fetch the issuer's signing keys") from None
    except (jwt.PyJWKClientError, jwt.PyJWKSetError, jwt.InvalidKeyError):
        raise _refuse(f"no signing key with key id {kid!r} at the issuer", config.issuer) from None


# --- Verification -----------------------------------------------------------------
def _refuse(reason: str, issuer: str = "") -> AgentAuthError:
    log.info("agent JWT refused: %s (issuer %s)", reason, issuer or "unknown")
    return AgentAuthError(reason)


def verify_agent_jwt(token: str) -> AgentIdentity:
    """Verify an agent's JWT and return the agent it names. Raises :class:`AgentAuthError`.

    Synchronous (database, and network when the key set must be fetched): call it
    through ``sync_to_async`` from async code.
    """
    if not isinstance(token, str) or not token:
        raise _refuse("no token given")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _refuse("the token is too large")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _refuse("the token is not a well-formed JWT") from None

    issuer = unverified.get("iss")
    try:
        configs = issuer_configs()
    except ImproperlyConfigured as exc:
        log.error("agent JWT: %s", exc)
        raise AgentAuthError("agent JWTs are not configured correctly on this server") from None
    config = next((c for c in configs if isinstance(issuer, str) and c.issuer == issuer), None)
    if config is None:
        raise _refuse(f"unknown issuer {str(issuer)[:200]!r}" if issuer else "the token names no issuer")

    alg = header.get("alg")
    if alg not in config.algorithms:
        raise _refuse(f"algorithm {str(alg)[:20]!r} is not allowed", config.issuer)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _refuse("the token has no key id (kid)", config.issuer)
    if len(kid) > MAX_KID_LENGTH:
        raise _refuse("the token's key id (kid) is too long", config.issuer)
    key = _signing_key(config, kid)
    if key.algorithm_name != alg:
        raise _refuse(f"key {kid!r} is not for algorithm {alg!r}", config.issuer)

    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=list(config.audience),
            issuer=config.issuer,
            leeway=config.leeway_seconds,
            options={"require": ["exp", "iss", "aud"], "verify_signature": True},
        )
    except jwt.ExpiredSignatureError:
        raise _refuse("the token has expired", config.issuer) from None
    except jwt.ImmatureSignatureError:
        raise _refuse("the token is not valid yet (nbf)", config.issuer) from None
    except jwt.InvalidAudienceError:
        raise _refuse("the token is for another audience", config.issuer) from None
    except jwt.InvalidIssuerError:
        raise _refuse("the token is from another issuer", config.issuer) from None
    except jwt.InvalidSignatureError:
        raise _refuse("the token's signature does not verify", config.issuer) from None
    except jwt.MissingRequiredClaimError as exc:
        raise _refuse(f"the token has no {exc.claim!r} claim", config.issuer) from None
    except jwt.PyJWTError as exc:
        raise _refuse(f"the token is invalid: {exc}", config.issuer) from None

    subject = claims.get(config.subject_claim)
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise _refuse(f"the token has no usable {config.subject_claim!r} claim", config.issuer)
    external_subject = f"{config.issuer}|{subject}"
    agent = _agent_for(config, subject, external_subject)

    raw_groups = claim_values(claims, config.groups_claim)
    if raw_groups is None:
        log.warning(
            "agent JWT: the %r claim of %s is not a list of strings; ignored", config.groups_claim, subject
        )
        raw_groups = []
    mapping = config.group_mapping()
    existing = (
        set(Group.objects.filter(name__in=raw_groups).values_list("name", flat=True))
        if mapping.passthrough and raw_groups
        else set()
    )
    claim_groups = mapping.map_groups(raw_groups, existing)
    expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=UTC)
    return identity_for_jwt(agent, claim_groups, expires_at, external_subject)


def _agent_for(config: IssuerConfig, subject: str, external_subject: str) -> Agent:
    agents = Agent.objects.select_related("on_behalf_of")
    agent = agents.filter(external_subject=external_subject).first()
    if agent is None and config.match_agent_name:
        # Only an agent bound to no subject: one bound elsewhere is not up for grabs.
        agent = agents.filter(name=subject, external_subject="").first()
    if agent is None:
        raise _refuse(f"no agent is bound to subject {subject!r} of this issuer", config.issuer)
    if not agent.enabled:
        raise _refuse(f"agent {agent.name!r} is disabled", config.issuer)
    return agent
