"""The server side of a SCRAM-SHA-256 exchange (RFC 5802, RFC 7677), sans-I/O.

PostgreSQL's flavour (docs section 55.3.1 "SCRAM-SHA-256 Authentication"): the user name
in the client-first-message is ignored (libpq sends an empty one; the user is the
startup packet's), and channel binding is not offered (only ``SCRAM-SHA-256``, not the
``-PLUS`` variant), so the GS2 header is ``n,,`` or ``y,,``.

An agent may hold several tokens; they share the agent's salt, so the salt can be sent
before the proof says which token the client holds. For an unknown agent the exchange
runs with a salt derived from a server secret and a verifier that matches nothing, so
the messages and the work done look the same as for a known agent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from identity.tokens import SCRAM_ITERATIONS, ScramVerifier, match_client_proof, server_signature

MECHANISM = "SCRAM-SHA-256"


class ScramError(Exception):
    """The client's SCRAM messages are malformed (reported as an authentication failure)."""


def fake_salt(server_secret: bytes, agent_name: str) -> bytes:
    """A salt for an agent that does not exist: stable per name, unpredictable without the secret."""
    return hmac.new(server_secret, b"airlock-scram-salt\x00" + agent_name.encode(), hashlib.sha256).digest()[
        :16
    ]


def _unmatchable_verifier(salt: bytes, iterations: int) -> ScramVerifier:
    # Random keys: no proof can match, but checking against it costs what a real one does.
    return ScramVerifier(iterations, salt, secrets.token_bytes(32), secrets.token_bytes(32))


@dataclass
class ScramServer:
    """One SCRAM-SHA-256 exchange.

    >>> server = ScramServer(salt=b"0123456789abcdef", verifiers=[verifier])  # doctest: +SKIP
    >>> server_first = server.first(client_first)                               # doctest: +SKIP
    >>> matched, server_final = server.final(client_final)                      # doctest: +SKIP

    ``matched`` is the verifier whose token produced the proof, or None.
    """

    salt: bytes
    verifiers: list[ScramVerifier]
    iterations: int = SCRAM_ITERATIONS

    def __post_init__(self) -> None:
        usable = [v for v in self.verifiers if v.salt == self.salt and v.iterations == self.iterations]
        # Always check at least one candidate so that "no token" costs what "wrong token" does.
        self._candidates = usable or [_unmatchable_verifier(self.salt, self.iterations)]
        self._client_first_bare = b""
        self._server_first = b""
        self._nonce = b""
        self._gs2_header = b""

    def first(self, client_first: bytes) -> bytes:
        """Answer the client-first-message with the server-first-message."""
        if client_first.startswith((b"n,", b"y,")):
            # "y": the client supports channel binding but thinks we do not: correct.
            header_end = client_first.find(b",", 2)
        else:
            raise ScramError("channel binding is not supported")
        if header_end < 0:
            raise ScramError("malformed GS2 header")
        self._gs2_header = client_first[: header_end + 1]
        bare = client_first[header_end + 1 :]
        attrs = _attributes(bare)
        client_nonce = attrs.get(b"r")
        if not client_nonce or b"m" in attrs:
            raise ScramError("client-first-message has no nonce or an unsupported extension")
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18))
        self._server_first = (
            b"r="
            + self._nonce
            + b",s="
            + base64.b64encode(self.salt)
            + b",i="
            + str(self.iterations).encode()
        )
        return self._server_first

    def final(self, client_final: bytes) -> tuple[ScramVerifier | None, bytes]:
        """Check the client-final-message: (matched verifier or None, server-final-message)."""
        if not self._server_first:
            raise ScramError("client-final-message before client-first-message")
        proof_at = client_final.rfind(b",p=")
        if proof_at < 0:
            raise ScramError("client-final-message has no proof")
        without_proof = client_final[:proof_at]
        attrs = _attributes(without_proof)
        try:
            proof = base64.b64decode(client_final[proof_at + 3 :], validate=True)
            binding = base64.b64decode(attrs.get(b"c", b""), validate=True)
        except ValueError:
            raise ScramError("malformed base64 in client-final-message") from None
        auth_message = self._client_first_bare + b"," + self._server_first + b"," + without_proof
        matched = match_client_proof(self._candidates, auth_message, proof)
        # The nonce and binding checks come after the proof check so that every failure
        # costs the same; each one alone fails the exchange.
        nonce_ok = hmac.compare_digest(attrs.get(b"r", b""), self._nonce)
        binding_ok = hmac.compare_digest(binding, self._gs2_header)
        if matched is None or not nonce_ok or not binding_ok:
            return None, b""
        return matched, b"v=" + base64.b64encode(server_signature(matched, auth_message))


def _attributes(message: bytes) -> dict[bytes, bytes]:
    attrs: dict[bytes, bytes] = {}
    for part in message.split(b","):
        if len(part) < 2 or part[1:2] != b"=":
            raise ScramError("malformed SCRAM attribute")
        attrs[part[:1]] = part[2:]
    return attrs
