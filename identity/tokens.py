"""Agent and person tokens: generation, hashing and SCRAM-SHA-256 verifiers (pure functions).

An agent's token is ``alk_`` followed by 43 url-safe base64 characters (256 random bits);
a person's API token is ``alp_`` and the same (a different prefix, so that neither is ever
mistaken for the other, and a secret scanner can tell them apart). An agent's token is
stored only as SHA-256 (``token_hash``) and as a SCRAM-SHA-256 verifier in PostgreSQL's
format (RFC 5802, RFC 7677; PostgreSQL "SCRAM-SHA-256 Authentication"), so that the
PostgreSQL gateway can check a SCRAM login without ever holding the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "alk_"  # noqa: S105 - a public prefix, not a secret
PERSON_TOKEN_PREFIX = "alp_"  # noqa: S105 - a public prefix, not a secret
SCRAM_ITERATIONS = 4096
PREFIX_LENGTH = 12


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 40 <= len(value) <= 100


def generate_person_token() -> str:
    return PERSON_TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_person_token(value: str) -> bool:
    return value.startswith(PERSON_TOKEN_PREFIX) and 40 <= len(value) <= 100


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_display_prefix(raw: str) -> str:
    return raw[:PREFIX_LENGTH]


def new_salt() -> bytes:
    return secrets.token_bytes(16)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    # SASLprep of an ASCII token is the identity, so no normalisation is needed here.
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


@dataclass(frozen=True)
class ScramVerifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        b64 = base64.b64encode
        return (
            f"SCRAM-SHA-256${self.iterations}:{b64(self.salt).decode()}"
            f"${b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )

    @classmethod
    def decode(cls, text: str) -> ScramVerifier:
        try:
            method, iter_salt, keys = text.split("$")
            iterations, salt = iter_salt.split(":")
            stored, server = keys.split(":")
            if method != "SCRAM-SHA-256":
                raise ValueError(method)
            return cls(
                int(iterations), base64.b64decode(salt), base64.b64decode(stored), base64.b64decode(server)
            )
        except ValueError as exc:
            raise ValueError("malformed SCRAM verifier") from exc


def make_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> ScramVerifier:
    salted = salted_password(password, salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramVerifier(
        iterations=iterations,
        salt=salt,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


def match_client_proof(
    verifiers: list[ScramVerifier], auth_message: bytes, client_proof: bytes
) -> ScramVerifier | None:
    """Return the verifier whose key produced ``client_proof``, or None.

    RFC 5802 section 3: ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage) and the
    proof is valid when H(ClientKey) == StoredKey. An agent may hold several tokens (for
    rotation) sharing one salt, so each candidate is tried; every candidate is checked
    with a constant-time comparison and the loop never stops early.
    """
    found: ScramVerifier | None = None
    for verifier in verifiers:
        signature = _hmac(verifier.stored_key, auth_message)
        if len(client_proof) != len(signature):
            continue
        client_key = bytes(a ^ b for a, b in zip(client_proof, signature, strict=True))
        if hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key) and found is None:
            found = verifier
    return found


def server_signature(verifier: ScramVerifier, auth_message: bytes) -> bytes:
    return _hmac(verifier.server_key, auth_message)
