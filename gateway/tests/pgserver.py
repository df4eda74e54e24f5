"""A private PostgreSQL server for tests that need real password authentication.

The machine's PostgreSQL trusts every loopback connection, so a wrong password would
pass there. This server (initdb + pg_ctl from the installed PostgreSQL, on a free port,
in a temporary directory) requires SCRAM-SHA-256 over TCP, offers TLS with a
certificate from a throwaway CA, and trusts only its Unix socket, which the test uses
as superuser to create roles::

    from gateway.tests.pgserver import running_postgres

    @pytest.fixture(scope="module")
    def private_pg():
        with running_postgres() as server:
            yield server

    server.execute("CREATE ROLE shop_app LOGIN PASSWORD 'secret'")

As root, the server runs as the ``postgres`` system user (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from gateway.tests.tls import TestCertificates, make_certificates


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    socket_dir: str
    certificates: TestCertificates

    def execute(self, sql: str) -> None:
        with psycopg.connect(
            host=self.socket_dir, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the postgresql package (make system does it)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="airlock-pgserver-"))
    data = directory / "data"
    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        prefix = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups", "--"]

    def run(args: list[str]) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")

    certificates = make_certificates()
    port = _free_port()
    try:
        run(
            [_bin("initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-sync",
             "--auth-local=trust", "--auth-host=scram-sha-256"]
        )  # fmt: skip
        for name, content in (("server.crt", certificates.cert_pem), ("server.key", certificates.key_pem)):
            path = data / name
            path.write_text(content)
            path.chmod(0o600)
            if as_root:
                os.chown(path, owner.pw_uid, owner.pw_gid)
        options = (
            f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c ssl=on "
            "-c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off"
        )
        log = directory / "log"
        start = [_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]
        try:
            run(start)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log.read_text()[-3000:] if log.exists() else ''}") from None
        try:
            yield PostgresServer(
                host="127.0.0.1", port=port, socket_dir=str(directory), certificates=certificates
            )
        finally:
            run([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "60", "stop"])
    finally:
        shutil.rmtree(directory, ignore_errors=True)
