import asyncssh
import pytest
from django.urls import reverse

from audit.models import AuditRecord
from console.tests.factories import make_connection
from console.views.connections import _scrub
from gateway.models import Connection
from gateway.secrets import get_secrets
from policies.models import Policy


@pytest.fixture
def admin_client(client, alice):
    client.force_login(alice)
    return client


def _postgres_form(**overrides):
    data = {
        "name": "shop",
        "description": "",
        "host": "db.internal",
        "port": "5433",
        "database": "shop",
        "username": "shop_app",
        "sslmode": "require",
        "password": "",
        "ca_cert": "",
        "enabled": "on",
    }
    data.update(overrides)
    return data


def test_an_admin_creates_a_postgres_connection_whose_password_is_stored_encrypted(admin_client, db):
    policy = Policy.objects.create(name="agents-default")
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "postgres"}),
        _postgres_form(password="Pg-Pass-7781", policy="agents-default"),
    )
    connection = Connection.objects.get(name="shop")
    assert response.status_code == 302
    assert response["Location"] == reverse("connection_detail", kwargs={"pk": connection.pk})
    assert (connection.kind, connection.host, connection.port) == ("postgres", "db.internal", 5433)
    assert connection.options == {"sslmode": "require"}
    assert connection.policy == policy
    assert "Pg-Pass-7781" not in connection.secret_ciphertext
    assert get_secrets(connection) == {"password": "Pg-Pass-7781"}
    record = AuditRecord.objects.get(action="connection.create")
    assert record.actor == "alice"
    assert record.after["secrets_set"] == ["password"]
    assert "Pg-Pass-7781" not in str(record.after)


def test_a_blank_secret_keeps_the_stored_one_and_a_new_one_replaces_it(admin_client, db):
    connection = make_connection(secret_values={"password": "first-Pass-1"})
    url = reverse("connection_edit", kwargs={"pk": connection.pk})
    response = admin_client.post(url, _postgres_form(host="db2.internal"))
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.host == "db2.internal"
    assert get_secrets(connection) == {"password": "first-Pass-1"}

    admin_client.post(url, _postgres_form(password="second-Pass-2"))
    connection.refresh_from_db()
    assert get_secrets(connection) == {"password": "second-Pass-2"}
    record = AuditRecord.objects.filter(target_id=str(connection.pk)).first()
    assert record.action == "connection.update"
    assert record.detail == {"secrets_changed": ["password"]}


def test_the_clear_checkbox_removes_a_secret(admin_client, db):
    connection = make_connection(secret_values={"password": "first-Pass-1"})
    response = admin_client.post(
        reverse("connection_edit", kwargs={"pk": connection.pk}), _postgres_form(clear_password="on")
    )
    assert response.status_code == 302
    connection.refresh_from_db()
    assert get_secrets(connection) == {}
    assert connection.secret_ciphertext == ""


def test_a_new_value_and_clear_together_are_refused_and_change_nothing(admin_client, db):
    connection = make_connection(secret_values={"password": "first-Pass-1"})
    response = admin_client.post(
        reverse("connection_edit", kwargs={"pk": connection.pk}),
        _postgres_form(password="other-Pass-3", clear_password="on"),
    )
    assert response.status_code == 200
    assert b"Give a new value or clear it, not both." in response.content
    assert b"other-Pass-3" not in response.content
    connection.refresh_from_db()
    assert get_secrets(connection) == {"password": "first-Pass-1"}


def test_the_edit_form_says_which_secrets_are_set_without_showing_them(admin_client, db):
    connection = make_connection(secret_values={"password": "first-Pass-1"})
    html = admin_client.get(reverse("connection_edit", kwargs={"pk": connection.pk})).content.decode()
    assert 'data-secret="password">set<' in html
    assert 'data-secret="ca_cert">not set<' in html
    assert "first-Pass-1" not in html


def test_verify_full_needs_a_ca_certificate(admin_client, db):
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "postgres"}), _postgres_form(sslmode="verify-full")
    )
    assert response.status_code == 200
    assert b"verify-ca and verify-full need a CA certificate." in response.content
    assert not Connection.objects.exists()


def test_a_duplicate_name_is_refused(admin_client, db):
    make_connection("shop")
    response = admin_client.post(reverse("connection_create", kwargs={"kind": "postgres"}), _postgres_form())
    assert response.status_code == 200
    assert b"A connection with this name already exists." in response.content
    assert Connection.objects.count() == 1


def test_an_unknown_kind_is_not_found(admin_client, db):
    assert admin_client.get("/connections/new/mysql/").status_code == 404


def test_an_ssh_connection_takes_a_private_key_and_pins_the_host_key(admin_client, db):
    key = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    private = key.export_private_key().decode()
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "ssh"}),
        {
            "name": "web-1",
            "host": "10.0.0.5",
            "username": "deploy",
            "private_key": private,
            "host_key": host_key,
        },
    )
    assert response.status_code == 302
    connection = Connection.objects.get(name="web-1")
    assert get_secrets(connection)["private_key"].strip() == private.strip()
    assert connection.options == {"host_key": host_key}
    assert connection.effective_port() == 22


def test_a_broken_private_key_is_refused_without_echoing_it(admin_client, db):
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "ssh"}),
        {"name": "web-1", "host": "10.0.0.5", "username": "deploy", "private_key": "not-a-key-Zq81"},
    )
    assert response.status_code == 200
    assert b"Not a valid unencrypted private key" in response.content
    assert b"not-a-key-Zq81" not in response.content


def test_an_ssh_connection_needs_a_password_or_a_key(admin_client, db):
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "ssh"}),
        {"name": "web-1", "host": "10.0.0.5", "username": "deploy"},
    )
    assert b"Give a password or a private key." in response.content
    assert not Connection.objects.exists()


def test_a_kubernetes_connection_is_given_by_its_api_server_url(admin_client, db):
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "kubernetes"}),
        {
            "name": "prod",
            "api_server": "https://k8s.internal:6443",
            "namespace": "shop",
            "token": "kube-Tok-55",
        },
    )
    assert response.status_code == 302
    connection = Connection.objects.get(name="prod")
    assert (connection.host, connection.port, connection.options) == (
        "k8s.internal",
        6443,
        {"namespace": "shop"},
    )
    assert get_secrets(connection) == {"token": "kube-Tok-55"}
    html = admin_client.get(reverse("connection_edit", kwargs={"pk": connection.pk})).content.decode()
    assert 'value="https://k8s.internal:6443"' in html


@pytest.mark.parametrize(
    "url", ["http://k8s.internal", "https://k8s.internal/api/v1", "https://u:p@k8s.internal"]
)
def test_a_kubernetes_api_server_must_be_a_plain_https_address(admin_client, db, url):
    response = admin_client.post(
        reverse("connection_create", kwargs={"kind": "kubernetes"}),
        {"name": "prod", "api_server": url, "namespace": "shop", "token": "kube-Tok-55"},
    )
    assert response.status_code == 200
    assert not Connection.objects.exists()


def test_deleting_asks_first_then_deletes_with_an_audit_record(admin_client, db):
    connection = make_connection()
    url = reverse("connection_delete", kwargs={"pk": connection.pk})
    page = admin_client.get(url)
    assert b"Delete shop?" in page.content
    assert Connection.objects.filter(pk=connection.pk).exists()
    response = admin_client.post(url)
    assert response["Location"] == reverse("connection_list")
    assert not Connection.objects.filter(pk=connection.pk).exists()
    assert AuditRecord.objects.filter(action="connection.delete", before__name="shop").exists()


def test_the_scrubber_removes_whole_secrets_and_each_of_their_lines():
    secrets = {
        "password": "hunter2-xyz",
        "private_key": "-----BEGIN-----\nAAAAbody1\nAAAAbody2\n-----END-----",
    }
    message = "login failed for hunter2-xyz near AAAAbody2"
    assert _scrub(message, secrets) == "login failed for [secret] near [secret]"


def test_the_connection_page_says_how_long_its_recordings_are_kept_and_if_held(admin_client, alice, settings):
    from recordings import actions as recording_actions

    settings.RECORDING_RETENTION_DAYS = 30
    connection = make_connection(name="shop")
    url = reverse("connection_detail", kwargs={"pk": connection.pk})
    assert "the default: kept 30 days" in admin_client.get(url).content.decode()
    recording_actions.do_set_connection_retention(alice, "shop", 0)
    recording_actions.do_set_connection_hold(alice, "shop", True, "case 2026-14")
    page = admin_client.get(url).content.decode()
    assert "kept for ever" in page and "legal hold</span> case 2026-14" in page
    assert reverse("recordings:retention") in page
