"""A real OpenSSH ``sshd`` for tests: on a free loopback port, in a temporary directory.

Generated host key, an authorized key for the user running the tests, ``StrictModes
no`` (the temp directory's modes are not sshd's business here), no PAM. Use it from a
test module like this::

    from gateway.tests.sshd import running_sshd

    @pytest.fixture(scope="module")
    def sshd(tmp_path_factory):
        with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server

    def test_something(sshd):
        ...  # sshd.port, sshd.user, sshd.client_key (OpenSSH private key text), ...

When the tests run as root, sshd needs its privilege separation directory
(``/run/sshd``), which a container may not have: it is created (mode 0755), as the
Debian package would at boot.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    client_key: str  # OpenSSH private key text, authorized for ``user``
    client_public_key: str
    host_public_key: str  # "ssh-ed25519 AAAA..."
    host_fingerprint: str  # "SHA256:..."
    directory: Path

    def log(self) -> str:
        return (self.directory / "sshd.log").read_text(errors="replace")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _fingerprint(public_key_path: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        return sock.recv(64)


@contextmanager
def running_sshd(directory: Path, *, extra_config: str = "") -> Iterator[SshServer]:
    if not os.access(SSHD, os.X_OK):
        raise RuntimeError(f"{SSHD} is missing: install the openssh-server package (make system does it)")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    _keygen(host_key, "airlock-test-host")
    _keygen(client_key, "airlock-test-client")
    shutil.copy(f"{client_key}.pub", directory / "authorized_keys")
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"""
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {directory / "authorized_keys"}
StrictModes no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
{extra_config}
"""
    )
    log = open(directory / "sshd.log", "wb")  # closed in finally
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if _banner(port).startswith(b"SSH-2.0-"):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "sshd did not start: " + (directory / "sshd.log").read_text(errors="replace")
                )
            time.sleep(0.05)
        yield SshServer(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            client_key=client_key.read_text(),
            client_public_key=Path(f"{client_key}.pub").read_text().strip(),
            host_public_key=" ".join(Path(f"{host_key}.pub").read_text().split()[:2]),
            host_fingerprint=_fingerprint(Path(f"{host_key}.pub")),
            directory=directory,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
