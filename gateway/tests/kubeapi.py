"""A stand-in for a Kubernetes API server: HTTPS on a free loopback port.

A real kube-apiserver needs etcd and a cluster and cannot run here. This one answers
what a client's first request needs: ``GET /version`` with the server's version when
the bearer token is the expected one, ``401 Unauthorized`` otherwise (as a real API
server does for a token it does not accept). ``reason_override`` makes it answer with a
chosen status line, to test how clients report odd answers.
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gateway.tests.tls import TestCertificates, make_certificates


@dataclass
class KubeApiServer:
    url: str
    token: str
    certificates: TestCertificates
    git_version: str = "v1.31.2"
    reason_override: tuple[int, str] | None = None
    requests: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def running_kube_api(token: str) -> Iterator[KubeApiServer]:
    certificates = make_certificates()
    state: dict[str, KubeApiServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server = state["server"]
            server.requests.append(
                {"path": self.path, "authorization": self.headers.get("Authorization", "")}
            )
            if server.reason_override:
                code, reason = server.reason_override
                self.send_response(code, reason)
                self.end_headers()
                return
            if self.headers.get("Authorization") != f"Bearer {server.token}":
                body = json.dumps(
                    {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}
                )
                self.send_response(401)
            elif self.path == "/version":
                body = json.dumps({"major": "1", "minor": "31", "gitVersion": server.git_version})
                self.send_response(200)
            else:
                body = json.dumps({"kind": "Status", "code": 404})
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(certificates.cert_pem)
        key.write_text(certificates.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state["server"] = KubeApiServer(
        url=f"https://127.0.0.1:{httpd.server_address[1]}", token=token, certificates=certificates
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
