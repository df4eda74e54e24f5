"""A private PostgreSQL instance for the test session (and the benchmark).

The machine's own cluster trusts every local connection, so it cannot show that the
gateway really speaks SCRAM, MD5 or cleartext to its upstream, nor TLS. This instance
is made with the same PostgreSQL binaries (initdb/pg_ctl) on a free port, with a
pg_hba.conf that demands each method for its own role and a self-signed certificate.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from gateway.tls import generate_self_signed

BIN = Path(os.environ.get("AIRLOCK_PG_BIN", "/usr/lib/postgresql/15/bin"))

ROLES = {
    # role: (password, pg_hba method, password_encryption)
    "scram_user": ("scram-Pass-1", "scram-sha-256", "scram-sha-256"),
    "md5_user": ("md5-Pass-1", "md5", "md5"),
    "clear_user": ("clear-Pass-1", "password", "scram-sha-256"),
    "trust_user": ("", "trust", "scram-sha-256"),
}


@dataclass
class PrivatePostgres:
    root: Path
    port: int
    ca_cert: str

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname=dbname, autocommit=True, sslmode="disable"
        )

    def stop(self) -> None:
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


def start_private_postgres(port: int) -> PrivatePostgres:
    root = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    _as_postgres(
        [str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]
    )
    cert, key = data / "server.crt", data / "server.key"
    generate_self_signed(cert, key, ["127.0.0.1", "localhost"])
    if os.geteuid() == 0:
        for path in (cert, key):
            shutil.chown(path, "postgres", "postgres")
    hba = ["local all all trust", "host all postgres 127.0.0.1/32 trust"]
    hba += [f"host all {role} 127.0.0.1/32 {method}" for role, (_, method, _) in ROLES.items()]
    hba += ["host all all 127.0.0.1/32 scram-sha-256"]
    (data / "pg_hba.conf").write_text("\n".join(hba) + "\n")
    conf = (
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        "shared_buffers = 64MB\n"
    )
    with (data / "postgresql.conf").open("a") as handle:
        handle.write(conf)
    _as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start"])
    server = PrivatePostgres(root=root, port=port, ca_cert=cert.read_text())
    deadline = time.monotonic() + 30
    while True:
        try:
            with server.admin() as conn:
                for role, (password, _, encryption) in ROLES.items():
                    conn.execute(f"SET password_encryption = '{encryption}'")
                    if password:
                        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
                    else:
                        conn.execute(f"CREATE ROLE {role} LOGIN")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return server
