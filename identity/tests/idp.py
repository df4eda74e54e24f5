"""A small OpenID Connect provider on loopback, for tests.

It stands in for a real identity provider (Keycloak, Okta, Entra ID), which cannot run
here. It serves what Airlock relies on, over real HTTP on 127.0.0.1: the discovery
document, the authorization endpoint (the test sets who "signs in"), the token endpoint
(authorization code with PKCE S256 for people; client credentials for agents), signed
ID tokens and access tokens, the JWKS and userinfo. It checks what a real provider
checks: client id and secret, redirect URI, PKCE verifier, single-use codes, bearer
tokens. Keys are made in the test; the key set can be changed while it runs (rotation)
and counts how often it is fetched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


@dataclass
class SigningKey:
    """A key pair made in the test, published in the JWKS under ``kid``."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS256") -> SigningKey:
        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def ed25519(cls, kid: str) -> SigningKey:
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, alg: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers={"kid": kid or self.kid})


@dataclass
class ServiceAccount:
    secret: str
    claims: dict[str, Any]


@dataclass
class FakeIdentityProvider:
    client_id: str = "airlock-console"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    agent_audience: str = "airlock"
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.rsa("idp-key-1")])
    # Whoever signs in at the authorization endpoint next (the test plays the person).
    person: dict[str, Any] | None = None
    # Where the groups claim goes: real providers differ (Keycloak: both; some: one).
    groups_in_id_token: bool = True
    groups_in_userinfo: bool = True
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    jwks_status: int = 200
    jwks_body: bytes | None = None  # served instead of the key set when set (a broken IdP)
    jwks_fetches: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._codes: dict[str, dict[str, Any]] = {}
        self._access: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-idp", daemon=True
        )

    # --- life cycle ---------------------------------------------------------------------
    def start(self) -> FakeIdentityProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def jwks_url(self) -> str:
        return self.issuer + "/jwks"

    # --- tokens ---------------------------------------------------------------------------
    def agent_token(self, sub: str, *, key: SigningKey | None = None, **claims: Any) -> str:
        """A client-credentials access token as this provider would issue it (signed)."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.agent_audience,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
            **claims,
        }
        payload = {name: value for name, value in payload.items() if value is not None}
        return (key or self.keys[0]).sign(payload)

    def _id_token(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        body = {k: v for k, v in claims.items() if k != "groups" or self.groups_in_id_token}
        return self.keys[0].sign(
            {
                "iss": self.issuer,
                "aud": self.client_id,
                "iat": now,
                "exp": now + 300,
                "jti": secrets.token_hex(8),
            }
            | body
        )


def _b64url_sha256(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def _handler_for(idp: FakeIdentityProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, error: str) -> None:
            self._json(status, {"error": error})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                self._json(
                    200,
                    {
                        "issuer": idp.issuer,
                        "authorization_endpoint": idp.issuer + "/authorize",
                        "token_endpoint": idp.issuer + "/token",
                        "userinfo_endpoint": idp.issuer + "/userinfo",
                        "jwks_uri": idp.jwks_url,
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "token_endpoint_auth_methods_supported": [
                            "client_secret_post",
                            "client_secret_basic",
                        ],
                        "code_challenge_methods_supported": ["S256"],
                        "grant_types_supported": ["authorization_code", "client_credentials"],
                    },
                )
            elif url.path == "/jwks":
                with idp._lock:
                    idp.jwks_fetches += 1
                if idp.jwks_status != 200:
                    self._error(idp.jwks_status, "unavailable")
                elif idp.jwks_body is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(idp.jwks_body)))
                    self.end_headers()
                    self.wfile.write(idp.jwks_body)
                else:
                    self._json(200, {"keys": [key.public_jwk() for key in idp.keys]})
            elif url.path == "/authorize":
                self._authorize(query)
            elif url.path == "/userinfo":
                auth = self.headers.get("Authorization", "")
                claims = idp._access.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
                if claims is None:
                    self._json(401, {"error": "invalid_token"}, {"WWW-Authenticate": "Bearer"})
                    return
                body = {k: v for k, v in claims.items() if k != "groups" or idp.groups_in_userinfo}
                self._json(200, body)
            else:
                self._error(404, "not_found")

        def _authorize(self, query: dict[str, str]) -> None:
            if query.get("client_id") != idp.client_id:
                return self._error(400, "unauthorized_client")
            if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
                return self._error(400, "invalid_request")
            if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
                return self._error(400, "invalid_request: PKCE S256 required")
            if not query.get("redirect_uri") or not query.get("state"):
                return self._error(400, "invalid_request")
            if idp.person is None:
                return self._error(400, "login_required")
            code = secrets.token_urlsafe(16)
            with idp._lock:
                idp._codes[code] = {
                    "redirect_uri": query["redirect_uri"],
                    "challenge": query["code_challenge"],
                    "claims": dict(idp.person),
                }
            self.send_response(302)
            self.send_header(
                "Location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
            )
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/token":
                return self._error(404, "not_found")
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            idp.token_requests.append({"grant_type": form.get("grant_type", ""), "client_id": client_id})
            if form.get("grant_type") == "authorization_code":
                self._code_grant(form, client_id, client_secret)
            elif form.get("grant_type") == "client_credentials":
                account = idp.service_accounts.get(client_id)
                if account is None or not secrets.compare_digest(account.secret, client_secret):
                    return self._error(401, "invalid_client")
                self._json(
                    200,
                    {
                        "access_token": idp.agent_token(**account.claims),
                        "token_type": "Bearer",
                        "expires_in": 300,
                    },
                )
            else:
                self._error(400, "unsupported_grant_type")

        def _code_grant(self, form: dict[str, str], client_id: str, client_secret: str) -> None:
            if client_id != idp.client_id or not secrets.compare_digest(client_secret, idp.client_secret):
                return self._error(401, "invalid_client")
            with idp._lock:
                grant = idp._codes.pop(form.get("code", ""), None)  # single use
            if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                return self._error(400, "invalid_grant")
            if _b64url_sha256(form.get("code_verifier", "")) != grant["challenge"]:
                return self._error(400, "invalid_grant: PKCE verifier does not match")
            access = secrets.token_urlsafe(24)
            with idp._lock:
                idp._access[access] = grant["claims"]
            self._json(
                200,
                {
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "id_token": idp._id_token(grant["claims"]),
                },
            )

    return Handler
