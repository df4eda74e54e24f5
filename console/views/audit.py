"""The audit log: every change, newest first, filtered by actor, action and target."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.models import AuditRecord
from console.forms import AuditFilterForm
from console.roles import role_required

PAGE_SIZE = 50


@role_required("admin", "auditor")
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    records = AuditRecord.objects.all()
    if form.is_valid():
        data = form.cleaned_data
        if data["actor"]:
            records = records.filter(actor__icontains=data["actor"])
        if data["action"]:
            records = records.filter(action__icontains=data["action"])
        if data["target"]:
            records = records.filter(
                Q(target_repr__icontains=data["target"]) | Q(target_type__icontains=data["target"])
            )
    page = Paginator(records, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "console/audit/list.html",
        {"form": form, "page": page, "query": query.urlencode()},
    )
