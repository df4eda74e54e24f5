"""TLS for the gateway's listeners and for its upstream connections.

The listeners use ``settings.GATEWAY_TLS_CERT``/``GATEWAY_TLS_KEY``; with neither set (the
embedded default) a self-signed certificate is generated once into ``settings.DATA_DIR``
so that clients can still encrypt (``sslmode=require``), though they cannot verify it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SELF_SIGNED_CERT = "gateway-tls-cert.pem"
SELF_SIGNED_KEY = "gateway-tls-key.pem"


def generate_self_signed(cert_path: Path, key_path: Path, hostnames: list[str] | None = None) -> None:
    """Write a self-signed certificate and its key (mode 0600)."""
    names = hostnames or ["localhost", "127.0.0.1", "::1"]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Airlock gateway")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_certificate_paths() -> tuple[Path, Path]:
    cert, key = settings.GATEWAY_TLS_CERT, settings.GATEWAY_TLS_KEY
    if cert or key:
        if not (cert and key):
            raise ImproperlyConfigured("AIRLOCK_TLS_CERT and AIRLOCK_TLS_KEY must be set together")
        return Path(cert), Path(key)
    cert_path = Path(settings.DATA_DIR) / SELF_SIGNED_CERT
    key_path = Path(settings.DATA_DIR) / SELF_SIGNED_KEY
    if not (cert_path.exists() and key_path.exists()):
        generate_self_signed(cert_path, key_path)
    return cert_path, key_path


def server_context() -> ssl.SSLContext:
    cert, key = server_certificate_paths()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # PostgreSQL's protocol name: direct TLS (sslnegotiation=direct) requires it.
    context.set_alpn_protocols(["postgresql"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ImproperlyConfigured(f"cannot load the gateway TLS certificate {cert}: {exc}") from None
    return context


SSLMODES = ("disable", "prefer", "require", "verify-ca", "verify-full")


def client_context(sslmode: str, ca_cert: str = "") -> ssl.SSLContext | None:
    """The context for an upstream connection with libpq's ``sslmode`` semantics.

    As in libpq, ``require`` with a CA certificate configured verifies the chain like
    ``verify-ca``. Returns None for ``disable``.
    """
    if sslmode not in SSLMODES:
        raise ValueError(f"unknown sslmode {sslmode!r} (one of {', '.join(SSLMODES)})")
    if sslmode == "disable":
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    verify = sslmode in ("verify-ca", "verify-full") or (sslmode == "require" and bool(ca_cert))
    if verify:
        if not ca_cert:
            raise ValueError(f"sslmode {sslmode} needs the connection's ca_cert secret")
        context.load_verify_locations(cadata=ca_cert)
        context.check_hostname = sslmode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
