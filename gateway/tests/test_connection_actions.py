import io
import json

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection as db_connection

from audit.models import AuditRecord
from gateway import secrets
from gateway.actions import do_create_connection, do_delete_connection, do_update_connection
from gateway.models import Connection
from gateway.tests.dbdump import database_text, dump_database

pytestmark = pytest.mark.django_db

PASSWORD = "Pg-pa55word-0b1c2d"
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def key_a(settings):
    settings.AIRLOCK_SECRET_KEYS = [KEY_A]
    return settings


def _shop(actor, **extra):  # type: ignore[no-untyped-def]
    return do_create_connection(
        actor,
        name="shop",
        kind="postgres",
        host="db.internal",
        port=5432,
        database="shop",
        username="shop_app",
        options={"sslmode": "require"},
        secret_values={"password": PASSWORD},
        **extra,
    )


def test_secrets_are_encrypted_at_rest(alice, key_a):
    shop = _shop(alice)
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT secret_ciphertext FROM gateway_connection WHERE id = %s", [shop.pk])
        (stored,) = cursor.fetchone()
    assert stored and PASSWORD not in stored
    assert PASSWORD not in database_text()
    assert secrets.get_secrets(Connection.objects.get(pk=shop.pk)) == {"password": PASSWORD}


def test_decrypting_with_a_wrong_key_fails_clearly(alice, settings):
    settings.AIRLOCK_SECRET_KEYS = [KEY_A]
    shop = _shop(alice)
    settings.AIRLOCK_SECRET_KEYS = [KEY_B]
    with pytest.raises(
        secrets.SecretDecryptionError, match="cannot be decrypted with any key in AIRLOCK_SECRET_KEYS"
    ):
        secrets.get_secrets(shop)
    # The audit snapshot still works, and says so instead of guessing.
    assert shop.audit_snapshot()["secrets_set"] == ["<undecryptable>"]


def test_a_malformed_key_names_the_setting(alice, settings):
    settings.AIRLOCK_SECRET_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="AIRLOCK_SECRET_KEYS"):
        secrets.encrypt_secrets({"password": "x"})


def test_audit_records_name_secret_fields_but_never_hold_values(alice, key_a):
    shop = _shop(alice)
    do_update_connection(alice, shop, secret_values={"password": "Second-pa55-77"})
    do_update_connection(alice, shop, port=6432)
    do_delete_connection(alice, Connection.objects.get(pk=shop.pk))

    records = list(AuditRecord.objects.order_by("id"))
    assert [r.action for r in records] == [
        "connection.create",
        "connection.update",
        "connection.update",
        "connection.delete",
    ]
    assert records[0].after["secrets_set"] == ["password"]
    assert records[1].detail == {"secrets_changed": ["password"]}
    text = json.dumps([[r.before, r.after, r.detail] for r in records])
    assert PASSWORD not in text and "Second-pa55-77" not in text


def test_an_update_with_the_same_secret_writes_nothing(alice, key_a):
    shop = _shop(alice)
    before = dump_database()
    do_update_connection(alice, shop, port=5432, secret_values={"password": PASSWORD})
    assert dump_database() == before


def test_an_empty_secret_value_clears_that_field(alice, key_a):
    shop = _shop(alice)
    shop = do_update_connection(alice, shop, secret_values={"password": ""})
    assert secrets.get_secrets(shop) == {}
    assert AuditRecord.objects.get(action="connection.update").detail == {"secrets_changed": ["password"]}


def test_bad_fields_are_refused_with_their_names(alice, key_a):
    with pytest.raises(ValidationError) as caught:
        do_create_connection(
            alice,
            name="bad name",
            kind="postgres",
            host="https://db",
            port=70000,
            options={"sslmdoe": "require"},
            secret_values={"token": "x"},
        )
    errors = caught.value.message_dict
    assert set(errors) >= {"name", "host", "port", "options"}
    assert (
        "sslmdoe: unknown option for a postgres connection (known: approval_mode, connect_timeout, sslmode)"
        in errors["options"]
    )
    assert not Connection.objects.exists()
    with pytest.raises(ValidationError, match="a postgres connection has no secret 'token'"):
        do_create_connection(alice, name="ok", kind="postgres", host="db", secret_values={"token": "x"})
    with pytest.raises(ValidationError, match="unknown group 'nope'"):
        do_create_connection(alice, name="ok", kind="postgres", host="db", groups=["nope"])


def test_rotation_re_encrypts_under_the_new_key_so_the_old_key_can_go(alice, settings):
    settings.AIRLOCK_SECRET_KEYS = [KEY_A]
    shop = _shop(alice)
    do_create_connection(
        alice, name="box", kind="ssh", host="10.0.0.5", secret_values={"private_key": "-----KEY-----"}
    )
    do_create_connection(alice, name="nosecret", kind="ssh", host="10.0.0.6")
    old_ciphertext = Connection.objects.get(pk=shop.pk).secret_ciphertext

    settings.AIRLOCK_SECRET_KEYS = [KEY_B, KEY_A]
    out = io.StringIO()
    call_command("rotate_secrets", stdout=out)
    assert out.getvalue().strip() == "2 connection secrets re-encrypted under the first key; 0 already were."
    record = AuditRecord.objects.get(action="secrets.rotate")
    assert record.detail == {"rotated": 2, "already_current": 0}
    assert Connection.objects.get(pk=shop.pk).secret_ciphertext != old_ciphertext

    settings.AIRLOCK_SECRET_KEYS = [KEY_B]
    assert secrets.get_secrets(Connection.objects.get(name="shop")) == {"password": PASSWORD}
    assert secrets.get_secrets(Connection.objects.get(name="box")) == {"private_key": "-----KEY-----"}

    # A second run finds nothing left to do.
    out = io.StringIO()
    call_command("rotate_secrets", stdout=out)
    assert out.getvalue().strip() == "0 connection secrets re-encrypted under the first key; 2 already were."


def test_rotation_stops_without_changing_anything_when_a_secret_cannot_be_decrypted(alice, settings):
    settings.AIRLOCK_SECRET_KEYS = [KEY_A]
    _shop(alice)
    settings.AIRLOCK_SECRET_KEYS = [Fernet.generate_key().decode()]
    do_create_connection(alice, name="other", kind="ssh", host="h", secret_values={"password": "p"})
    settings.AIRLOCK_SECRET_KEYS = [KEY_B, KEY_A]
    before = dump_database()
    with pytest.raises(
        CommandError, match="no configured key decrypts the stored secret of connection\\(s\\) other"
    ):
        call_command("rotate_secrets")
    assert dump_database() == before


def test_a_connection_whose_secret_is_lost_can_still_be_edited_and_its_secret_replaced(alice, settings):
    settings.AIRLOCK_SECRET_KEYS = [KEY_A]
    shop = _shop(alice)
    settings.AIRLOCK_SECRET_KEYS = [KEY_B]  # KEY_A is gone

    shop = do_update_connection(alice, shop, kind="postgres", port=6432)
    assert shop.port == 6432
    with pytest.raises(secrets.SecretDecryptionError):
        do_update_connection(alice, shop, secret_values={"password": "new-Pa55-1"})

    shop = do_update_connection(alice, shop, secret_values={"password": "new-Pa55-1"}, replace_secrets=True)
    assert secrets.get_secrets(shop) == {"password": "new-Pa55-1"}
    record = AuditRecord.objects.filter(action="connection.update").order_by("id").last()
    assert record.before["secrets_set"] == ["<undecryptable>"] and record.after["secrets_set"] == ["password"]


def test_changing_the_kind_refuses_secrets_the_new_kind_does_not_use(alice, key_a):
    shop = _shop(alice)
    with pytest.raises(ValidationError, match="a ssh connection has no secret"):
        do_update_connection(alice, shop, kind="ssh", options={}, secret_values={"ca_cert": "x"})
    box = do_create_connection(alice, name="box", kind="ssh", host="h", secret_values={"private_key": "k"})
    with pytest.raises(ValidationError, match="a postgres connection has no secret 'private_key'"):
        do_update_connection(alice, box, kind="postgres")
    box = do_update_connection(
        alice, box, kind="postgres", secret_values={"password": "p"}, replace_secrets=True
    )
    assert secrets.get_secrets(box) == {"password": "p"}
