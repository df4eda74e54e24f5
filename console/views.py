from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from console.roles import any_role_required


@any_role_required
def dashboard(request: HttpRequest) -> HttpResponse:
    from recordings.models import Session

    context = {
        "live_sessions": Session.objects.live().count(),
        "pending_approvals": 0,
        "recent_denials": 0,
    }
    return render(request, "console/dashboard.html", context)


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")
