"""The audit log's filters and its CSV and JSON lines exports."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import orjson
import pytest
from django.test import Client
from django.urls import reverse

from audit.actions import record
from audit.models import AuditRecord

pytestmark = pytest.mark.django_db


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _body(response) -> bytes:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def test_the_audit_log_exports_as_csv_and_jsonl_with_its_filters(carol, alice):
    record(alice, "connection.create", None, after={"name": "shop"})
    record("retention", "recording.retention_delete", None, deleted=2)
    record(alice, "connection.delete", None, before={"name": '=HYPERLINK("http://x")'})
    client = _client(carol)

    jsonl = _body(client.get(reverse("audit_export", args=["jsonl"]), {"actor": "alice"}))
    documents = [orjson.loads(line) for line in jsonl.splitlines()]
    assert [(d["actor"], d["action"]) for d in documents] == [
        ("alice", "connection.delete"),
        ("alice", "connection.create"),
    ]
    assert documents[1]["after"] == {"name": "shop"}

    response = client.get(reverse("audit_export", args=["csv"]), {"actor_kind": "system"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="airlock-audit-')
    rows = list(csv.DictReader(io.StringIO(_body(response).decode())))
    assert [(r["actor"], r["action"], r["detail"]) for r in rows] == [
        ("retention", "recording.retention_delete", '{"deleted":2}')
    ]
    everything = list(
        csv.DictReader(io.StringIO(_body(client.get(reverse("audit_export", args=["csv"]))).decode()))
    )
    # Before/after/detail are JSON objects, so a formula inside one stays inside the JSON text.
    assert [r["before"] for r in everything if r["action"] == "connection.delete"] == [
        '{"name":"=HYPERLINK(\\"http://x\\")"}'
    ]
    exports = AuditRecord.objects.filter(action="audit.export").order_by("id")
    assert [(e.actor, e.detail["format"]) for e in exports] == [
        ("carol", "jsonl"),
        ("carol", "csv"),
        ("carol", "csv"),
    ]
    assert exports[0].detail["filters"] == {"actor": "alice"}


def test_a_formula_in_a_cell_is_neutralised():
    from console.views.audit import _csv_cell

    assert [_csv_cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "plain", None)] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "plain",
        "",
    ]


def test_the_audit_log_filters_by_actor_kind_and_time(carol):
    early = record("demo", "user.create", None)
    AuditRecord.objects.filter(pk=early.pk).update(at=datetime(2026, 1, 1, tzinfo=UTC))
    record("demo", "group.create", None)
    client = _client(carol)
    page = client.get(reverse("audit_log"), {"until": "2026-06-01T00:00"}).content.decode()
    assert "user.create" in page and "group.create" not in page
    page = client.get(
        reverse("audit_log"), {"since": "2026-06-01T00:00", "actor_kind": "system"}
    ).content.decode()
    assert "group.create" in page and "user.create" not in page


def test_an_unknown_export_format_is_404_and_reviewers_may_not_export(carol, bob):
    assert _client(carol).get(reverse("audit_export", args=["xml"])).status_code == 404
    assert _client(bob).get(reverse("audit_export", args=["csv"])).status_code == 403
    assert not AuditRecord.objects.filter(action="audit.export").exists()


KIND_EXAMPLES = {
    "config": [
        "connection.create",
        "agent.update",
        "token.issue",
        "token.revoke",
        "group.members",
        "user.groups.sync",
        "policy.update",
        "masking_policy.create",
        "secrets.rotate",
        "config.apply",
    ],
    "approvals": ["approval.rejected", "approval.executed"],
    "terminations": ["session.terminate", "session.interrupted"],
    "agent_logins": ["agent.login", "agent.login_failed"],
    "logins": ["user.login", "user.login_failed", "user.logout"],
    "recording_access": ["recording.view", "recording.export"],
    "retention": [
        "recording.retention_delete",
        "recording.hold",
        "recording.release",
        "recordings.connection_hold",
        "recordings.connection_retention",
    ],
    "audit": ["audit.export"],
}


def test_the_log_filters_by_kind_of_record_and_source_address(carol):
    from console.forms import AUDIT_KINDS

    assert set(KIND_EXAMPLES) == set(AUDIT_KINDS)
    for n, action in enumerate(a for actions in KIND_EXAMPLES.values() for a in actions):
        record("test", action, None, source_address=f"10.0.{n}.1")
    client = _client(carol)
    for kind, actions in KIND_EXAMPLES.items():
        response = client.get(reverse("audit_export", args=["jsonl"]), {"kind": kind, "actor": "test"})
        found = [orjson.loads(line)["action"] for line in _body(response).splitlines()]
        assert sorted(found) == sorted(actions), kind
    page = client.get(reverse("audit_log"), {"kind": "agent_logins"}).content.decode()
    assert "agent.login_failed" in page and "config.apply" not in page
    response = client.get(reverse("audit_export", args=["jsonl"]), {"source": "10.0.1."})
    assert [orjson.loads(line)["source_address"] for line in _body(response).splitlines()] == ["10.0.1.1"]
    assert "from 10.0.0.1" in client.get(reverse("audit_log"), {"source": "10.0.0."}).content.decode()
