"""Celery work: expiry by the scheduled task (a real worker) and by the sweep; reviewers and
owners notified by email (a local aiosmtpd server) and by webhook (a local HTTP server),
with retries; a notification that fails never blocks or loses a request."""

from __future__ import annotations

import email
import json
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kombu.pools
import pytest
from django.db import connections
from django.utils import timezone

from approvals import actions, tasks
from approvals.models import ApprovalRequest, Status
from approvals.tests.factories import make_request, review_decision
from audit.models import AuditRecord
from conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- expiry ---------------------------------------------------------------------------------------


@pytest.fixture
def real_worker():
    """A real Celery worker (a thread) on the Redis broker, on a queue of its own."""
    from celery.contrib.testing.worker import start_worker

    from console.celery import app

    app.conf.task_always_eager = False
    # A worker stopped by an earlier test closes the app's broker connection pool on its
    # way out; producers would then fail with "Acquire on closed pool". Start from fresh pools.
    app._pool = None
    app.amqp._producer_pool = None
    kombu.pools.reset()
    queue = f"approvals-test-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    # The worker thread's database connection is closed after each task, so the test
    # database can be flushed and dropped afterwards.
    connections["default"].settings_dict["CONN_MAX_AGE"] = 0
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=10):
            yield app
    finally:
        app.conf.task_default_queue = "celery"
        connections["default"].settings_dict["CONN_MAX_AGE"] = 60


def test_the_expiry_task_expires_the_request_at_its_deadline(world, real_worker):
    req = make_request(world, decision=review_decision(timeout=2))

    def status():
        return ApprovalRequest.objects.values_list("status", flat=True).get(pk=req.pk)

    _wait_for(lambda: status() == Status.EXPIRED, what="the expiry task")
    req.refresh_from_db()
    # Run at the deadline, not before it.
    assert req.decided_at >= req.expires_at
    assert req.decided_at - req.expires_at < timedelta(seconds=10)
    assert AuditRecord.objects.filter(action="approval.expired", target_id=str(req.pk)).count() == 1


def test_the_expiry_task_is_idempotent_and_never_early(world, bob):
    req = make_request(world)
    assert tasks.expire_request(req.pk) is False  # not due yet
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks.expire_request(req.pk) is True
    assert tasks.expire_request(req.pk) is False
    assert tasks.expire_request(req.pk + 1000) is False  # a request that no longer exists
    decided = make_request(world, params=("9",))
    actions.do_approve(bob, decided)
    ApprovalRequest.objects.filter(pk=decided.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks.expire_request(decided.pk) is False
    assert ApprovalRequest.objects.get(pk=decided.pk).status == Status.APPROVED


def test_the_sweep_expires_what_a_lost_task_message_missed(world):
    req = make_request(world)
    ApprovalRequest.objects.filter(pk=req.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks.sweep()["expired"] == 1
    assert tasks.sweep()["expired"] == 0
    assert ApprovalRequest.objects.get(pk=req.pk).status == Status.EXPIRED


def test_the_sweep_runs_on_the_beat_schedule(settings):
    from console.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["approvals-sweep"]
    assert entry == {"task": "approvals.sweep", "schedule": settings.APPROVALS_SWEEP_SECONDS}
    assert "approvals.sweep" in app.tasks


# --- email ---------------------------------------------------------------------------------------


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        message["X-Rcpt"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def smtp(settings):
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    yield inbox
    controller.stop()


def test_reviewers_are_emailed_a_link_and_never_the_statement(world, bob, smtp):
    bob.email = "bob@example.test"
    bob.save()
    req = make_request(world, params=("alice@example.com",))
    message = _wait_for(lambda: smtp.messages, what="the email")[0]
    # dave (a dba reviewer) is left out: billing-bot acts for him.
    assert message["X-Rcpt"] == "bob@example.test, erin@example.test"
    assert message["Subject"] == f"[Airlock] approval needed: request {req.pk} on shop"
    body = message.get_payload(decode=True).decode()
    assert f"http://127.0.0.1:8000/approvals/{req.pk}/" in body
    assert "billing-bot for dave" in body and "rule writes" in body
    assert "DELETE" not in body and "alice@example.com" not in body


def test_the_agents_owner_is_told_of_the_decision(world, bob, smtp):
    req = make_request(world)
    _wait_for(lambda: smtp.messages, what="the reviewers' email")
    smtp.messages.clear()
    actions.do_reject(bob, req, reason="use the archive job")
    message = _wait_for(lambda: smtp.messages, what="the decision email")[0]
    assert message["X-Rcpt"] == "olivia@example.test"
    assert message["Subject"] == f"[Airlock] request {req.pk} rejected: billing-bot on shop"
    body = message.get_payload(decode=True).decode()
    assert "It was rejected by bob." in body and "Reason: use the archive job" in body


def test_an_smtp_server_that_is_down_neither_blocks_nor_loses_the_request(world, settings, caplog):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    started = time.monotonic()
    req = make_request(world)
    assert time.monotonic() - started < 10
    assert ApprovalRequest.objects.get(pk=req.pk).status == Status.PENDING
    assert "could not enqueue follow-up work" in caplog.text or "Retry" in caplog.text


def test_a_broker_that_is_down_neither_blocks_nor_loses_the_request(world, bob, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.notify_reviewers, "delay", refuse)
    monkeypatch.setattr(tasks.expire_request, "apply_async", refuse)
    monkeypatch.setattr(tasks.notify_decision, "delay", refuse)
    req = make_request(world)
    actions.do_approve(bob, req)
    req.refresh_from_db()
    assert req.status == Status.APPROVED
    assert AuditRecord.objects.filter(target_id=str(req.pk)).count() == 2


# --- webhook -------------------------------------------------------------------------------------


@pytest.fixture
def webhook(settings):
    received: list[dict] = []
    failures = {"left": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if failures["left"]:
                failures["left"] -= 1
                self.send_response(503)
            else:
                received.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.APPROVALS_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hooks/T000/B000/secret-token"
    yield received, failures
    server.shutdown()
    server.server_close()


def test_the_webhook_gets_slack_compatible_json_with_the_link(world, bob, webhook):
    received, _ = webhook
    req = make_request(world)
    payload = _wait_for(lambda: received, what="the webhook")[0]
    url = f"http://127.0.0.1:8000/approvals/{req.pk}/"
    assert payload["text"].startswith(
        "Approval needed: billing-bot for dave wants to run a statement on shop"
    )
    assert f"<{url}|review it>" in payload["text"]
    assert payload["airlock"] == {"event": "approval.requested", "id": req.pk, "url": url}
    assert "DELETE" not in json.dumps(payload)
    actions.do_approve(bob, req)
    decided = _wait_for(lambda: received[1:], what="the decision webhook")[0]
    assert decided["airlock"]["event"] == "approval.approved" and "approved by bob" in decided["text"]


def test_the_webhook_is_retried_until_it_is_accepted(world, webhook, real_worker):
    received, failures = webhook
    failures["left"] = 2
    req = make_request(world)
    assert len(_wait_for(lambda: received, timeout=30, what="the retried webhook")) == 1
    assert failures["left"] == 0
    assert ApprovalRequest.objects.get(pk=req.pk).status == Status.PENDING


def test_the_retries_back_off(world):
    for task in (
        tasks.email_reviewers,
        tasks.webhook_reviewers,
        tasks.email_decision,
        tasks.webhook_decision,
    ):
        assert task.retry_backoff and task.max_retries >= 5 and task.retry_backoff_max <= 600
