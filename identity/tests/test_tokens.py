import base64
import hashlib
import hmac

from identity.tokens import (
    ScramVerifier,
    generate_token,
    looks_like_token,
    make_verifier,
    match_client_proof,
    new_salt,
    server_signature,
    token_hash,
)


def _client_proof(password: str, verifier: ScramVerifier, auth_message: bytes) -> bytes:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), verifier.salt, verifier.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    signature = hmac.new(stored, auth_message, hashlib.sha256).digest()
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


def test_tokens_are_prefixed_random_and_distinct():
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(looks_like_token(t) for t in tokens)


def test_the_hash_is_not_the_token():
    token = generate_token()
    assert token not in token_hash(token)
    assert len(token_hash(token)) == 64


def test_verifier_round_trips_in_postgres_format():
    verifier = make_verifier("secret", new_salt())
    text = verifier.encode()
    assert text.startswith("SCRAM-SHA-256$4096:")
    assert ScramVerifier.decode(text) == verifier


def test_the_right_token_among_several_matches_and_a_wrong_one_does_not():
    salt = new_salt()
    old, new = generate_token(), generate_token()
    verifiers = [make_verifier(old, salt), make_verifier(new, salt)]
    auth_message = b"n=,r=abc,r=abcdef,s=xyz,i=4096,c=biws,r=abcdef"
    assert (
        match_client_proof(verifiers, auth_message, _client_proof(new, verifiers[1], auth_message))
        == verifiers[1]
    )
    assert (
        match_client_proof(verifiers, auth_message, _client_proof(old, verifiers[0], auth_message))
        == verifiers[0]
    )
    assert (
        match_client_proof(verifiers, auth_message, _client_proof("alk_wrong", verifiers[0], auth_message))
        is None
    )


def test_server_signature_matches_rfc_5802():
    verifier = make_verifier("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    # Values from RFC 7677 section 3 (SCRAM-SHA-256 example).
    auth_message = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    assert (
        base64.b64encode(server_signature(verifier, auth_message))
        == b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )
    proof = _client_proof("pencil", verifier, auth_message)
    assert base64.b64encode(proof) == b"dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
