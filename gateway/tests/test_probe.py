"""Connection tests against real targets: a private PostgreSQL requiring passwords, a
real OpenSSH sshd, and a stand-in Kubernetes API server over real TLS."""

from __future__ import annotations

import io
import socket
import threading
import uuid

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from gateway.actions import do_create_connection
from gateway.probe import scrub, test_connection
from gateway.tests.kubeapi import running_kube_api
from gateway.tests.pgserver import running_postgres
from gateway.tests.sshd import running_sshd

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def private_pg():  # type: ignore[no-untyped-def]
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):  # type: ignore[no-untyped-def]
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def pg_role(private_pg):  # type: ignore[no-untyped-def]
    """A login role with a password on the private server: (name, password)."""
    name = f"probe_{uuid.uuid4().hex[:8]}"
    password = f"Pw-{uuid.uuid4().hex}"
    private_pg.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    yield name, password
    private_pg.execute(f"DROP ROLE {name}")


def _pg(private_pg, role, password, **options):  # type: ignore[no-untyped-def]
    secret_values = {"password": password}
    if options.pop("with_ca", False):
        secret_values["ca_cert"] = private_pg.certificates.ca_pem
    return do_create_connection(
        "test",
        name=f"pg-{uuid.uuid4().hex[:6]}",
        kind="postgres",
        host=private_pg.host,
        port=private_pg.port,
        database="postgres",
        username=role,
        options=options,
        secret_values=secret_values,
    )


def test_postgres_with_the_right_password_and_a_verified_certificate(private_pg, pg_role):
    role, password = pg_role
    conn = _pg(private_pg, role, password, sslmode="verify-full", with_ca=True)

    result = test_connection(conn)

    assert result.ok, result.message
    assert f"as {role} over TLS: PostgreSQL " in result.message
    assert result.elapsed_ms > 0


def test_postgres_without_tls_when_sslmode_disable(private_pg, pg_role):
    role, password = pg_role
    result = test_connection(_pg(private_pg, role, password, sslmode="disable"))
    assert result.ok, result.message
    assert "over TLS" not in result.message


def test_postgres_with_a_wrong_password_fails_without_showing_it(private_pg, pg_role):
    role, _ = pg_role
    wrong = "Wrong-Pa55word-31337"
    result = test_connection(_pg(private_pg, role, wrong, sslmode="require"))
    assert not result.ok
    assert f'password authentication failed for user "{role}"' in result.message
    assert wrong not in result.message


def test_postgres_refuses_a_certificate_it_cannot_verify(private_pg, pg_role):
    role, password = pg_role
    # verify-full without the CA: the system's CAs do not know the server's issuer.
    result = test_connection(_pg(private_pg, role, password, sslmode="verify-full"))
    assert not result.ok
    assert "certificate verify failed" in result.message
    assert password not in result.message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_postgres_is_a_clear_error():
    port = _closed_port()
    conn = do_create_connection(
        "test",
        name="down",
        kind="postgres",
        host="127.0.0.1",
        port=port,
        username="x",
        secret_values={"password": "p4ssw0rd-x"},
    )
    result = test_connection(conn)
    assert not result.ok
    assert f'connection to server at "127.0.0.1", port {port} failed: Connection refused' in result.message


@pytest.fixture
def silent_listener():  # type: ignore[no-untyped-def]
    """A port that accepts TCP connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for sock in accepted:
        sock.close()
    server.close()


def test_a_target_that_never_answers_times_out_with_a_clear_error(silent_listener):
    conn = do_create_connection(
        "test",
        name="mute",
        kind="postgres",
        host="127.0.0.1",
        port=silent_listener,
        username="x",
        options={"connect_timeout": 1, "sslmode": "disable"},
        secret_values={"password": "p4ssw0rd-x"},
    )
    result = test_connection(conn)
    assert not result.ok
    assert result.message.startswith(f"no answer from 127.0.0.1:{silent_listener} within 1 s (")
    assert result.elapsed_ms < 10_000


def test_a_secret_no_key_decrypts_is_reported_not_raised(settings):
    conn = do_create_connection(
        "test", name="lost", kind="postgres", host="db", secret_values={"password": "p"}
    )
    settings.AIRLOCK_SECRET_KEYS = [Fernet.generate_key().decode()]
    result = test_connection(conn)
    assert not result.ok
    assert (
        result.message
        == "connection lost: stored secret cannot be decrypted with any key in AIRLOCK_SECRET_KEYS"
    )


# --- SSH ---------------------------------------------------------------------------


def _ssh(sshd, **kwargs):  # type: ignore[no-untyped-def]
    secret_values = kwargs.pop("secret_values", {"private_key": sshd.client_key})
    return do_create_connection(
        "test",
        name=f"ssh-{uuid.uuid4().hex[:6]}",
        kind="ssh",
        host=sshd.host,
        port=sshd.port,
        username=kwargs.pop("username", sshd.user),
        secret_values=secret_values,
        **kwargs,
    )


def test_ssh_with_the_private_key_reports_the_host_key_seen(sshd):
    result = test_connection(_ssh(sshd))
    assert result.ok, result.message + sshd.log()
    assert (
        f"authenticated as {sshd.user} on 127.0.0.1:{sshd.port}; host key {sshd.host_fingerprint} (not pinned"
        in result.message
    )


@pytest.mark.parametrize("form", ["public_key", "fingerprint"])
def test_ssh_checks_a_pinned_host_key(sshd, form):
    pinned = sshd.host_public_key if form == "public_key" else sshd.host_fingerprint
    result = test_connection(_ssh(sshd, options={"host_key": pinned}))
    assert result.ok, result.message
    assert f"host key {sshd.host_fingerprint} matches options.host_key" in result.message


def test_ssh_with_a_different_host_key_stops_before_sending_credentials(sshd, tmp_path):
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True, timeout=30
    )
    other = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    log_before = len(sshd.log())

    result = test_connection(_ssh(sshd, options={"host_key": other}))

    assert not result.ok
    assert result.message == (
        f"host key {sshd.host_fingerprint} of 127.0.0.1:{sshd.port} does not match options.host_key; "
        "no credential was sent"
    )
    new_log = sshd.log()[log_before:]
    assert "Accepted" not in new_log and "Failed" not in new_log and "publickey" not in new_log


def test_ssh_with_a_key_the_server_does_not_know_is_refused(sshd, tmp_path):
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True, timeout=30
    )
    result = test_connection(_ssh(sshd, secret_values={"private_key": (tmp_path / "k").read_text()}))
    assert not result.ok
    assert f"127.0.0.1:{sshd.port} refused the credentials for {sshd.user}" in result.message
    assert "PRIVATE KEY" not in result.message


def test_ssh_with_a_wrong_password_fails_without_showing_it(sshd):
    password = "Ssh-wrong-pa55-5150"
    result = test_connection(_ssh(sshd, secret_values={"password": password}))
    assert not result.ok
    assert "refused the credentials" in result.message
    assert password not in result.message


def test_an_unreachable_ssh_host_is_a_clear_error():
    port = _closed_port()
    conn = do_create_connection(
        "test",
        name="nossh",
        kind="ssh",
        host="127.0.0.1",
        port=port,
        username="u",
        secret_values={"password": "pw-123456"},
    )
    result = test_connection(conn)
    assert not result.ok
    assert result.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in result.message.lower()


# --- Kubernetes ------------------------------------------------------------------------

TOKEN = "kube-token-5e1f2a3b4c"


@pytest.fixture
def kube_api():  # type: ignore[no-untyped-def]
    with running_kube_api(TOKEN) as server:
        yield server


def _kube(server, token=TOKEN, ca=True):  # type: ignore[no-untyped-def]
    secret_values = {"token": token}
    if ca:
        secret_values["ca_cert"] = server.certificates.ca_pem
    return do_create_connection(
        "test",
        name=f"k8s-{uuid.uuid4().hex[:6]}",
        kind="kubernetes",
        host=server.url,
        options={"namespace": "default"},
        secret_values=secret_values,
    )


def test_kubernetes_with_the_token_and_ca(kube_api):
    result = test_connection(_kube(kube_api))
    assert result.ok, result.message
    assert result.message == f"connected to {kube_api.url}: Kubernetes v1.31.2"
    assert kube_api.requests == [{"path": "/version", "authorization": f"Bearer {TOKEN}"}]


def test_kubernetes_with_a_wrong_token_fails_without_showing_it(kube_api):
    result = test_connection(_kube(kube_api, token="kube-wrong-token-999"))
    assert not result.ok
    assert result.message == f"{kube_api.url} refused the credentials (401 Unauthorized)"


def test_kubernetes_without_the_ca_refuses_the_server_certificate(kube_api):
    result = test_connection(_kube(kube_api, ca=False))
    assert not result.ok
    assert result.message.startswith(f"TLS with {kube_api.url} failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in result.message
    assert kube_api.requests == []  # the token never left


def test_a_server_that_echoes_the_token_back_does_not_get_it_into_the_message(kube_api):
    kube_api.reason_override = (500, f"Internal error for Bearer {TOKEN}")
    result = test_connection(_kube(kube_api))
    assert not result.ok
    assert TOKEN not in result.message
    assert result.message == f"{kube_api.url}/version answered 500 Internal error for Bearer [secret]"


def test_scrub_removes_every_form_of_a_secret():
    key = "-----BEGIN KEY-----\nAAAAC3NzaC1lZDI1NTE5AAAA\n-----END KEY-----\n"
    text = "bad key line AAAAC3NzaC1lZDI1NTE5AAAA; url pass=p%40ss%2Fword-1; raw p@ss/word-1"
    cleaned = scrub(text, {"private_key": key, "password": "p@ss/word-1"})
    assert cleaned == "bad key line [secret]; url pass=[secret]; raw [secret]"


# --- the command -------------------------------------------------------------------------


def test_connection_test_command_reports_success_and_failure(private_pg, pg_role):
    role, password = pg_role
    good = _pg(private_pg, role, password, sslmode="verify-full", with_ca=True)
    bad = _pg(private_pg, role, "Not-the-Pa55word-1", sslmode="require")

    out = io.StringIO()
    call_command("connection", "test", good.name, stdout=out)
    assert out.getvalue().startswith(
        f"OK {good.name}: connected to 127.0.0.1:{private_pg.port}/postgres as {role} over TLS"
    )

    with pytest.raises(CommandError) as caught:
        call_command("connection", "test", bad.name)
    assert str(caught.value).startswith(f"FAILED {bad.name}: ")
    assert "Not-the-Pa55word-1" not in str(caught.value)

    with pytest.raises(CommandError, match="no connection named 'nope'"):
        call_command("connection", "test", "nope")


def test_connection_list_names_secret_fields_but_not_their_values():
    do_create_connection(
        "test",
        name="shop",
        kind="postgres",
        host="db",
        database="shop",
        username="app",
        secret_values={"password": "List-pa55-42"},
    )
    out = io.StringIO()
    call_command("connection", "list", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ADDRESS", "GROUPS", "POLICY", "ENABLED", "SECRETS"]
    assert lines[1].split() == ["shop", "postgres", "app@db:5432/shop", "-", "-", "yes", "password"]
    assert "List-pa55-42" not in out.getvalue()
