"""Audit records forwarded as JSON lines to real local HTTP and syslog (UDP, TCP) sinks."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import kombu.pools
import orjson
import pytest

from audit.actions import record
from audit.models import AuditRecord
from audit.tasks import forward_record

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(30)]


class _Sink(http.server.BaseHTTPRequestHandler):
    status = 200
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_sink() -> Iterator[type[_Sink]]:
    handler = type("Sink", (_Sink,), {"received": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/ingest"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def eager():  # type: ignore[no-untyped-def]
    """Run the forwarding task in-process, as a worker would, right after commit."""
    conf = forward_record.app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager, conf.task_eager_propagates = True, True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


def test_a_record_is_posted_as_one_json_line_after_commit(
    settings, eager, http_sink, django_capture_on_commit_callbacks, alice
):
    settings.AUDIT_FORWARD_URL = http_sink.url
    settings.AUDIT_FORWARD_TOKEN = "siem-token-1"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        created = record(alice, "connection.update", None, before={"port": 5432}, after={"port": 6432})
    assert http_sink.received == []  # nothing leaves before the transaction commits
    for callback in callbacks:
        callback()
    [(headers, body)] = http_sink.received
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers["Authorization"] == "Bearer siem-token-1"
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    document = orjson.loads(body)
    assert document["id"] == created.pk
    assert (document["actor"], document["action"], document["before"], document["after"]) == (
        "alice",
        "connection.update",
        {"port": 5432},
        {"port": 6432},
    )


def test_a_failing_sink_is_retried_and_never_fails_the_action(
    settings, eager, http_sink, django_capture_on_commit_callbacks
):
    settings.AUDIT_FORWARD_URL = http_sink.url
    http_sink.status = 503
    with django_capture_on_commit_callbacks(execute=True):
        created = record(None, "recording.retention_delete", None, deleted=3)
    assert AuditRecord.objects.filter(pk=created.pk).exists()
    assert len(http_sink.received) == 1
    # The task retries (a worker waits with backoff between tries; run in-process, the
    # retries follow at once): the first try and max_retries more, then it gives up.
    forward_record.app.conf.task_eager_propagates = False  # restored by the eager fixture
    outcome = forward_record.apply((created.pk,))
    assert outcome.state == "FAILURE"
    assert len(http_sink.received) == 1 + 1 + forward_record.max_retries
    http_sink.status = 204
    assert forward_record.apply((created.pk,)).get() is True


def test_records_go_to_a_syslog_sink_over_udp(settings, eager, django_capture_on_commit_callbacks):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        settings.AUDIT_FORWARD_URL = f"syslog+udp://127.0.0.1:{server.getsockname()[1]}"
        with django_capture_on_commit_callbacks(execute=True):
            created = record("retention", "recording.retention_delete", None, deleted=1)
        datagram = server.recv(65535)
    header, _, message = datagram.partition(b" - audit - ")
    assert header.startswith(b"<133>1 ") and header.endswith(b" airlock")
    assert orjson.loads(message)["id"] == created.pk


def test_records_go_to_a_syslog_sink_over_tcp_with_octet_counting(
    settings, eager, django_capture_on_commit_callbacks
):
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)
        settings.AUDIT_FORWARD_URL = f"syslog+tcp://127.0.0.1:{server.getsockname()[1]}"
        frames: list[bytes] = []

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                data = b""
                while chunk := conn.recv(65535):
                    data += chunk
                frames.append(data)

        thread = threading.Thread(target=accept)
        thread.start()
        with django_capture_on_commit_callbacks(execute=True):
            created = record("demo", "user.create", None)
        thread.join(5)
    [frame] = frames
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert orjson.loads(message.partition(b" - audit - ")[2])["id"] == created.pk


def test_a_broker_that_is_down_costs_the_action_nothing(settings, django_capture_on_commit_callbacks, caplog):
    import socket as _socket

    with _socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.AUDIT_FORWARD_URL = "http://127.0.0.1:9/never"
    conf = forward_record.app.conf
    saved = conf.broker_url, conf.task_always_eager
    conf.task_always_eager = False
    conf.broker_url = f"redis://127.0.0.1:{closed_port}/0"
    forward_record.app.pool.force_close_all()
    forward_record.app._pool = None
    forward_record.app.amqp._producer_pool = None
    kombu.pools.reset()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            created = record("demo", "user.create", None)
    finally:
        conf.broker_url, conf.task_always_eager = saved
        forward_record.app.pool.force_close_all()
        # A closed pool stays closed: drop it (and the producers on it) so that later
        # producers open fresh connections to the real broker.
        forward_record.app._pool = None
        forward_record.app.amqp._producer_pool = None
        kombu.pools.reset()
    assert AuditRecord.objects.filter(pk=created.pk).exists()
    assert f"audit record {created.pk} not queued for forwarding" in caplog.text


def test_nothing_is_forwarded_without_a_sink(settings, django_capture_on_commit_callbacks):
    settings.AUDIT_FORWARD_URL = ""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        record("demo", "user.create", None)
    assert callbacks == []


def test_logins_logouts_and_refused_logins_are_audit_records(client, carol):
    client.post("/accounts/login/", {"login": "carol", "password": "wrong-password"})
    client.post("/accounts/login/", {"login": "carol", "password": "carol-Pass-1234"})
    client.post("/accounts/logout/")
    records = list(AuditRecord.objects.order_by("id").values_list("actor", "action", "detail"))
    assert records == [
        ("system", "user.login_failed", {"username": "carol"}),
        ("carol", "user.login", {}),
        ("carol", "user.logout", {}),
    ]
    assert "wrong-password" not in str(list(AuditRecord.objects.values()))
