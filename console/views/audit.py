"""The audit log: every record, newest first, filtered; exported as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit import actions as audit_actions
from audit.forwarding import record_document
from audit.models import AuditRecord
from console.forms import AUDIT_KINDS, AuditFilterForm
from console.roles import role_required
from console.streaming import stream_response

PAGE_SIZE = 50
EXPORT_BATCH = 2000
CSV_COLUMNS = (
    "id",
    "at",
    "actor_kind",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "source_address",
    "before",
    "after",
    "detail",
)


def filtered_records(data: dict[str, Any]) -> QuerySet[AuditRecord]:
    records = AuditRecord.objects.all()
    if data.get("actor"):
        records = records.filter(actor__icontains=data["actor"])
    if data.get("action"):
        records = records.filter(action__icontains=data["action"])
    if data.get("target"):
        records = records.filter(
            Q(target_repr__icontains=data["target"])
            | Q(target_type__icontains=data["target"])
            | Q(target_id=data["target"])
        )
    if data.get("actor_kind"):
        records = records.filter(actor_kind=data["actor_kind"])
    if data.get("kind") in AUDIT_KINDS:
        match = Q()
        for name in AUDIT_KINDS[data["kind"]][1]:
            match |= Q(action__startswith=name) if name.endswith(".") else Q(action=name)
        records = records.filter(match)
    if data.get("source"):
        records = records.filter(source_address__startswith=data["source"].strip())
    if data.get("since"):
        records = records.filter(at__gte=data["since"])
    if data.get("until"):
        records = records.filter(at__lt=data["until"])
    return records


def _filters(request: HttpRequest) -> tuple[AuditFilterForm, dict[str, Any]]:
    form = AuditFilterForm(request.GET or None)
    return form, (form.cleaned_data if form.is_valid() else {})


@role_required("admin", "auditor")
def audit_log(request: HttpRequest) -> HttpResponse:
    form, data = _filters(request)
    records = filtered_records(data)
    page = Paginator(records, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "console/audit/list.html",
        {"form": form, "page": page, "query": query.urlencode()},
    )


def _batches(records: QuerySet[AuditRecord]) -> Iterator[list[AuditRecord]]:
    # Keyset over the primary key, newest first: no long-lived cursor, constant memory.
    last = None
    while True:
        batch = records.order_by("-id")
        if last is not None:
            batch = batch.filter(id__lt=last)
        rows = list(batch[:EXPORT_BATCH])
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _jsonl(records: QuerySet[AuditRecord]) -> Iterator[bytes]:
    for rows in _batches(records):
        yield b"".join(orjson.dumps(record_document(r)) + b"\n" for r in rows)


def _csv(records: QuerySet[AuditRecord]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for rows in _batches(records):
        for record in rows:
            document = record_document(record)
            writer.writerow(
                [
                    _csv_cell(
                        orjson.dumps(document[c]).decode()
                        if c in ("before", "after", "detail")
                        else document[c]
                    )
                    for c in CSV_COLUMNS
                ]
            )
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula (CSV injection) is quoted as text.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@role_required("admin", "auditor")
@require_GET
def audit_export(request: HttpRequest, fmt: str) -> StreamingHttpResponse:
    if fmt not in ("csv", "jsonl"):
        raise Http404("Export as csv or jsonl.")
    form, data = _filters(request)
    records = filtered_records(data)
    audit_actions.record(
        request.user,
        "audit.export",
        None,
        source_address=str(request.META.get("REMOTE_ADDR", ""))[:64],
        format=fmt,
        filters={k: str(v) for k, v in data.items() if v},
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "csv":
        response = stream_response(request, lambda: _csv(records), content_type="text/csv; charset=utf-8")
    else:
        response = stream_response(request, lambda: _jsonl(records), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="airlock-audit-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response
