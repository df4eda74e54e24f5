from __future__ import annotations

from datetime import timedelta

from django.db.models import Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from console.roles import any_role_required


def pending_approvals_count() -> int:
    """Pending approval requests, counted from the approvals app once it has its model."""
    from django.apps import apps

    try:
        model = apps.get_model("approvals", "ApprovalRequest")
    except LookupError:
        # No approval requests can exist before the approvals app defines them.
        return 0
    return model.objects.filter(status="pending").count()


@any_role_required
def dashboard(request: HttpRequest) -> HttpResponse:
    from recordings.models import Session

    since = timezone.now() - timedelta(hours=24)
    last_day = Session.objects.filter(
        Q(started_at__gte=since) | Q(ended_at__gte=since) | Q(status=Session.Status.LIVE)
    )
    from recordings.models import masked_by_entity, total_by_entity

    recent_sessions = list(Session.objects.order_by("-started_at")[:15])
    per_session = masked_by_entity(s.pk for s in recent_sessions if s.masked_count)
    for s in recent_sessions:
        s.masked_entities = per_session.get(s.pk, {})  # type: ignore[attr-defined]
    recent_masked = total_by_entity(
        masked_by_entity(last_day.filter(masked_count__gt=0).values_list("pk", flat=True), since=since)
    )
    context = {
        "recent_masked": recent_masked,
        "recent_masked_total": sum(recent_masked.values()),
        "live_sessions": Session.objects.live().count(),
        "pending_approvals": pending_approvals_count(),
        "recent_denials": last_day.aggregate(total=Sum("denied_count"))["total"] or 0,
        "recent_sessions": recent_sessions,
    }
    return render(request, "console/dashboard.html", context)


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
