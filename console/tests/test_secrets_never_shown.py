"""Connection secrets are write-only: no page, record or log line ever holds one."""

from __future__ import annotations

import datetime
import logging

import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.urls import reverse

from audit.models import AuditRecord
from console.views.connections import probe_available
from gateway.models import Connection
from gateway.secrets import get_secrets


def _ca_certificate() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sentinel Test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _distinctive_lines(pem: str) -> list[str]:
    """The base64 body lines of a PEM block: any one of them showing up is a leak."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def secret_connections(client, alice):
    """One connection of each kind, created through the console's forms."""
    client.force_login(alice)
    ca = _ca_certificate()
    private_key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    forms = {
        "postgres": {
            "name": "pg",
            "host": "127.0.0.1",
            "port": "1",  # nothing listens there: a test shows a failure, not a success
            "database": "shop",
            "username": "shop_app",
            "sslmode": "verify-full",
            "password": "PG-SENTINEL-pw-4417",
            "ca_cert": ca,
        },
        "ssh": {
            "name": "box",
            "host": "127.0.0.1",
            "port": "1",
            "username": "deploy",
            "password": "SSH-SENTINEL-pw-9902",
            "private_key": private_key,
        },
        "kubernetes": {
            "name": "cluster",
            "api_server": "https://127.0.0.1:1",
            "namespace": "default",
            "token": "K8S-SENTINEL-token-3310",
            "ca_cert": ca,
        },
    }
    for kind, data in forms.items():
        response = client.post(reverse("connection_create", kwargs={"kind": kind}), data)
        assert response.status_code == 302, response.content.decode()[-2000:]
    secrets = ["PG-SENTINEL-pw-4417", "SSH-SENTINEL-pw-9902", "K8S-SENTINEL-token-3310"]
    secrets += _distinctive_lines(ca) + _distinctive_lines(private_key)
    # The secrets really are stored: the search below would be meaningless otherwise.
    stored = " ".join(v for c in Connection.objects.all() for v in get_secrets(c).values())
    assert all(s in stored for s in secrets)
    return client, secrets


def _pages(client) -> dict[str, str]:
    pages = {}
    for path in ["/", reverse("connection_list"), reverse("audit_log")]:
        pages[path] = client.get(path).content.decode()
    for connection in Connection.objects.all():
        for name in ("connection_detail", "connection_edit", "connection_delete"):
            path = reverse(name, kwargs={"pk": connection.pk})
            response = client.get(path)
            assert response.status_code == 200
            pages[path] = response.content.decode()
        if probe_available():
            path = reverse("connection_test", kwargs={"pk": connection.pk})
            response = client.post(path)
            assert response.status_code == 200
            assert 'id="probe-result"' in response.content.decode()
            pages[path] = response.content.decode()
    return pages


def test_no_page_shows_a_stored_secret(secret_connections, caplog):
    client, secrets = secret_connections
    with caplog.at_level(logging.DEBUG):
        pages = _pages(client)
    assert len(pages) >= 12
    leaks = [(path, s) for path, html in pages.items() for s in secrets if s in html]
    assert leaks == []
    assert [s for s in secrets if s in caplog.text] == []


def test_a_form_shown_again_after_a_mistake_does_not_echo_the_secrets_just_typed(secret_connections):
    client, _ = secret_connections
    typed = {"password": "TYPED-pw-0071", "private_key": "TYPED-key-0072", "ca_cert": "TYPED-ca-0073"}
    for connection in Connection.objects.all():
        data = {"name": "", "host": "", "token": "TYPED-token-0074", **typed}
        response = client.post(reverse("connection_edit", kwargs={"pk": connection.pk}), data)
        assert response.status_code == 200
        html = response.content.decode()
        assert "This field is required." in html
        assert [v for v in [*typed.values(), "TYPED-token-0074"] if v in html] == []


def test_audit_records_name_the_secrets_but_never_hold_them(secret_connections):
    client, secrets = secret_connections
    connection = Connection.objects.get(name="pg")
    client.post(
        reverse("connection_edit", kwargs={"pk": connection.pk}),
        {
            "name": "pg",
            "host": "127.0.0.1",
            "database": "shop",
            "username": "shop_app",
            "sslmode": "verify-full",
            "password": "PG-SENTINEL-new-5521",
        },
    )
    client.post(reverse("connection_delete", kwargs={"pk": Connection.objects.get(name="box").pk}))
    records = list(AuditRecord.objects.values("before", "after", "detail"))
    assert len(records) >= 5
    text = str(records)
    assert [s for s in [*secrets, "PG-SENTINEL-new-5521"] if s in text] == []
    assert "'secrets_set': ['ca_cert', 'password']" in text
