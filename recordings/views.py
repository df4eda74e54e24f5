"""Sessions: find, replay, watch live, verify, export, terminate, hold. Every view role-checked,
every session fetched through ``_get_session_for_user`` (``recordings.access``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections, connections
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from console.roles import role_required
from console.streaming import stream_response
from recordings import access, actions, export, keys, search
from recordings.forms import HoldForm, ReasonForm, SessionFilterForm
from recordings.models import ConnectionRule, Event, Session, TerminationRequest, masked_by_entity

PAGE_SIZE = 50
EVENTS_PAGE = 500  # events per fetch of the replay's API, by default
EVENTS_PAGE_MAX = 5000
EXPORT_BATCH = 2000
TERMINAL_PROTOCOLS = ("ssh", "kubernetes")
TERMINAL_KINDS = (Event.Kind.OUTPUT, Event.Kind.INPUT)

viewer_required = role_required("admin", "auditor", "reviewer")


def _source(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))[:64]


def _get_session_for_user(request: HttpRequest, pk: uuid.UUID) -> Session:
    """The session, or 404 when there is none; PermissionDenied when it is not theirs to see."""
    session = Session.objects.filter(pk=pk).first()
    if session is None:
        raise Http404("No such session.")
    if not access.can_view_session(request.user, session):
        raise PermissionDenied
    return session


# --- the sessions page --------------------------------------------------------------------


def _cursor(session: Session) -> str:
    return f"{session.started_at.astimezone(UTC).isoformat()}_{session.pk}"


def _parse_cursor(raw: str) -> tuple[datetime, uuid.UUID] | None:
    try:
        at, pk = raw.rsplit("_", 1)
        started = datetime.fromisoformat(at)
        if started.tzinfo is None:
            return None
        return started, uuid.UUID(pk)
    except ValueError:
        return None


def filtered_sessions(user: Any, data: dict[str, Any]) -> QuerySet[Session]:
    """The sessions ``user`` may see that match the cleaned ``SessionFilterForm`` data."""
    sessions = access.visible_sessions(user)
    exact = {"agent": "agent_name", "on_behalf_of": "on_behalf_of_name", "connection": "connection_name"}
    for name, column in exact.items():
        if data.get(name):
            sessions = sessions.filter(**{column: data[name].strip()})
    if data.get("protocol"):
        sessions = sessions.filter(protocol=data["protocol"])
    if data.get("status"):
        sessions = sessions.filter(status=data["status"])
    if data.get("started_after"):
        sessions = sessions.filter(started_at__gte=data["started_after"])
    if data.get("started_before"):
        sessions = sessions.filter(started_at__lt=data["started_before"])
    for name, counter in SessionFilterForm.FLAG_FIELDS.items():
        if data.get(name):
            sessions = sessions.filter(**{f"{counter}__gt": 0})
    if data.get("q"):
        sessions = search.search_sessions(sessions, data["q"])
    return sessions


def _page(sessions: QuerySet[Session], after: str, before: str) -> tuple[list[Session], str, str]:
    """Keyset paging on (started_at, id), newest first: ``after`` pages older, ``before`` newer.

    Returns the page and the cursors of the older and newer pages ("" when there is none).
    """
    columns = ("-started_at", "-id")
    older_cursor = newer_cursor = ""
    position = _parse_cursor(before) if before else None
    if position is not None:
        at, pk = position
        # The redundant started_at bound lets the index scan start at the cursor.
        rows = list(
            sessions.filter(Q(started_at__gt=at) | Q(started_at=at, pk__gt=pk), started_at__gte=at).order_by(
                "started_at", "id"
            )[: PAGE_SIZE + 1]
        )
        has_newer = len(rows) > PAGE_SIZE
        rows = list(reversed(rows[:PAGE_SIZE]))
        if rows:
            older_cursor = _cursor(rows[-1])
            newer_cursor = _cursor(rows[0]) if has_newer else ""
        return rows, older_cursor, newer_cursor
    position = _parse_cursor(after) if after else None
    if position is not None:
        at, pk = position
        sessions = sessions.filter(Q(started_at__lt=at) | Q(started_at=at, pk__lt=pk), started_at__lte=at)
    rows = list(sessions.order_by(*columns)[: PAGE_SIZE + 1])
    has_older = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    if rows:
        older_cursor = _cursor(rows[-1]) if has_older else ""
        newer_cursor = _cursor(rows[0]) if position is not None else ""
    return rows, older_cursor, newer_cursor


@viewer_required
@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    form = SessionFilterForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    sessions = filtered_sessions(request.user, data)
    rows, older, newer = _page(sessions, request.GET.get("after", ""), request.GET.get("before", ""))
    query = request.GET.copy()
    for key in ("after", "before"):
        query.pop(key, None)
    return render(
        request,
        "recordings/session_list.html",
        {
            "form": form,
            "sessions": rows,
            "query": query.urlencode(),
            "older": older,
            "newer": newer,
            "filtered": bool(data and any(data.values())),
            "sees_all": access.sees_all_sessions(request.user),
        },
    )


# --- one session --------------------------------------------------------------------------


def is_terminal(session: Session) -> bool:
    """A terminal recording (SSH, Kubernetes exec, or any session with terminal output)."""
    if session.protocol in TERMINAL_PROTOCOLS:
        return True
    # Bounded: a terminal session shows output among its first events.
    return session.events.filter(seq__lte=1000, kind__in=TERMINAL_KINDS).exists()


def approval_requests_for(session: Session) -> list[Any]:
    """The approval requests made in ``session``, with who decided and why (the approvals
    app's rows; the recording holds the outcome as ``approval`` events)."""
    from django.apps import apps

    try:
        model = apps.get_model("approvals", "ApprovalRequest")
    except LookupError:
        return []
    return list(
        model.objects.filter(session_id=session.pk).order_by("created_at").prefetch_related("decisions")
    )


@viewer_required
@require_GET
def session_detail(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    actions.record_view(request.user, session, how="page", source_address=_source(request))
    rule = ConnectionRule.objects.filter(connection_name=session.connection_name).first()
    context = {
        "session": session,
        "terminal": is_terminal(session),
        "live": session.status == Session.Status.LIVE,
        "can_terminate": access.can_terminate_session(request.user, session),
        "can_hold": access.can_set_legal_hold(request.user),
        "connection_rule": rule,
        "termination_request": TerminationRequest.objects.filter(session=session).first(),
        "approval_requests": approval_requests_for(session),
        "masked_entities": masked_by_entity([session.pk]).get(session.pk, {}) if session.masked_count else {},
        "player": {
            "sessionId": str(session.pk),
            "eventsUrl": reverse("recordings:session_events", args=[session.pk]),
            "integrityUrl": reverse("recordings:session_integrity", args=[session.pk]),
            "castUrl": reverse("recordings:export_cast", args=[session.pk]),
            "socketPath": f"/ws/recordings/{session.pk}/",
            "live": session.status == Session.Status.LIVE,
            "eventCount": session.event_count,
            "pageSize": EVENTS_PAGE,
        },
    }
    return render(request, "recordings/session_detail.html", context)


def _events_json(session: Session, after: int, limit: int) -> bytes:
    """A page of events as JSON. Payloads are copied as the database holds them (the
    canonical text the writer stored), never decoded and encoded again: most of a page's
    bytes cost nothing here."""
    rows = list(
        session.events.filter(seq__gt=after)
        .order_by("seq")
        .annotate(payload_text=Cast("payload", TextField()))
        .values_list("seq", "at", "offset_ms", "kind", "payload_text")[:limit]
    )
    parts = [
        b'{"seq":%d,"at":%s,"offset_ms":%s,"kind":%s,"payload":%s}'
        % (seq, orjson.dumps(at), orjson.dumps(offset_ms), orjson.dumps(kind), payload.encode())
        for seq, at, offset_ms, kind, payload in rows
    ]
    last = rows[-1][0] if rows else after
    meta = orjson.dumps(
        {
            "after": after,
            "last_seq": last,
            "more": len(rows) == limit,
            "status": session.status,
            "event_count": session.event_count,
        }
    )
    return b'{"events":[' + b",".join(parts) + b"]," + meta[1:]


@viewer_required
@require_GET
def session_events(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    try:
        after = max(0, int(request.GET.get("after", "0")))
        limit = min(EVENTS_PAGE_MAX, max(1, int(request.GET.get("limit", str(EVENTS_PAGE)))))
    except ValueError:
        return HttpResponseBadRequest("after and limit are whole numbers", content_type="text/plain")
    actions.record_view(request.user, session, how="events", source_address=_source(request), once=True)
    return HttpResponse(_events_json(session, after, limit), content_type="application/json")


def _integrity(request: HttpRequest, pk: uuid.UUID) -> JsonResponse:
    session = _get_session_for_user(request, pk)
    result = session.verify()
    live_session = session.status == Session.Status.LIVE
    if result.ok:
        summary = (
            "chain verified, live (sealed when it ends)" if live_session else "chain verified, seal valid"
        )
    elif result.first_broken_seq is not None:
        summary = f"broken at event {result.first_broken_seq}: {result.reason}"
    else:
        summary = f"not verified: {result.reason}"
    return JsonResponse(
        {
            "ok": result.ok,
            "summary": summary,
            "first_broken_seq": result.first_broken_seq,
            "reason": result.reason,
            "event_count": result.event_count,
            "live": live_session,
        }
    )


_checked_integrity = viewer_required(require_GET(_integrity))


def _integrity_off_thread(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    close_old_connections()
    try:
        return _checked_integrity(request, pk)
    finally:
        connections.close_all()


async def session_integrity(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """Verify the chain and seal: seconds for a session of 100,000 events.

    Under ASGI the check runs on a thread of its own instead of the one thread that serves
    every synchronous view, so it never holds up the replay's pages of events. Elsewhere
    (tests, WSGI) it runs where a synchronous view would.
    """
    if isinstance(request, ASGIRequest):
        return await sync_to_async(_integrity_off_thread, thread_sensitive=False)(request, pk)
    return await sync_to_async(_checked_integrity)(request, pk)


# --- exports ------------------------------------------------------------------------------


def _event_batches(session: Session, until: int, kinds: tuple[str, ...] | None = None) -> Iterator[list[Any]]:
    after = 0
    while after < until:
        events = session.events.filter(seq__gt=after, seq__lte=until)
        if kinds:
            events = events.filter(kind__in=kinds)
        rows = list(
            events.order_by("seq").values_list("seq", "at", "offset_ms", "kind", "payload", "hash")[
                :EXPORT_BATCH
            ]
        )
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def jsonl_chunks(session: Session) -> Iterator[bytes]:
    """The JSONL export of ``session`` (see ``recordings.export``), in chunks."""
    until = session.event_count
    yield export.header_line(
        {
            "id": str(session.pk),
            "protocol": session.protocol,
            "agent": session.agent_name,
            "on_behalf_of": session.on_behalf_of_name,
            "connection": session.connection_name,
            "client_address": session.client_address,
            "application_name": session.application_name,
            "client_tls": session.client_tls,
            "status": session.status,
            "started_at": session.started_at.isoformat(),
            "ended_at": session.ended_at.isoformat() if session.ended_at else None,
            "end_reason": session.end_reason,
            "event_count": until,
            "dropped_events": session.dropped_events,
        }
    )
    for rows in _event_batches(session, until):
        yield b"".join(export.event_line(*row) for row in rows)
    sealed = session.status != Session.Status.LIVE and bool(session.seal)
    yield export.seal_line(
        session.seal if sealed else None,
        session.signing_key_id,
        session.last_hash,
        until,
        session.sealed_at.isoformat() if sealed and session.sealed_at else None,
    )


def cast_chunks(session: Session) -> Iterator[bytes]:
    """The asciicast v2 export of a terminal session's output and input, in chunks."""
    start = session.events.filter(seq=1).values_list("payload", flat=True).first()
    start = start if isinstance(start, dict) else {}

    def size(key: str, default: int) -> int:
        value = start.get(key)
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1000 else default
        )

    yield export.cast_header(
        width=size("term_width", export.CAST_WIDTH),
        height=size("term_height", export.CAST_HEIGHT),
        timestamp=int(session.started_at.timestamp()),
        title=f"{session.agent_name}@{session.connection_name} ({session.protocol})",
    )
    for rows in _event_batches(session, session.event_count, TERMINAL_KINDS):
        lines = (export.cast_line(offset_ms, kind, payload) for _, _, offset_ms, kind, payload, _ in rows)
        yield b"".join(line for line in lines if line)


def _download(response: StreamingHttpResponse, filename: str, content_type: str) -> StreamingHttpResponse:
    response["Content-Type"] = content_type
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@viewer_required
@require_GET
def export_jsonl(request: HttpRequest, pk: uuid.UUID) -> StreamingHttpResponse:
    session = _get_session_for_user(request, pk)
    actions.record_export(request.user, session, fmt="jsonl", source_address=_source(request))
    return _download(
        stream_response(request, lambda: jsonl_chunks(session)),
        f"airlock-session-{session.pk}.jsonl",
        "application/x-ndjson",
    )


@viewer_required
@require_GET
def export_cast(request: HttpRequest, pk: uuid.UUID) -> StreamingHttpResponse:
    session = _get_session_for_user(request, pk)
    if not is_terminal(session):
        raise Http404("Not a terminal session: export it as JSONL.")
    actions.record_export(request.user, session, fmt="asciicast", source_address=_source(request))
    response = stream_response(request, lambda: cast_chunks(session))
    # The player fetches it too: inline, but never cached.
    response["Content-Type"] = "application/x-asciicast"
    response["Cache-Control"] = "no-store"
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="airlock-session-{session.pk}.cast"'
    return response


@require_GET
def public_key(request: HttpRequest) -> HttpResponse:
    """The public key that seals recordings: public by design, so exports verify offline."""
    response = HttpResponse(keys.public_key_pem(), content_type="application/x-pem-file")
    response["Content-Disposition"] = 'inline; filename="airlock-recordings.pem"'
    return response


# --- changes ------------------------------------------------------------------------------


@role_required("admin", "reviewer")
@require_POST
def session_terminate(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    if not access.can_terminate_session(request.user, session) and session.status == Session.Status.LIVE:
        raise PermissionDenied
    form = ReasonForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        actions.do_terminate_session(request.user, session, reason, source_address=_source(request))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "The gateway was told to terminate the session.")
    return redirect("recordings:session_detail", pk=session.pk)


@role_required("admin", "auditor")
@require_POST
def session_hold(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    form = HoldForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose to hold or release the session.")
        return redirect("recordings:session_detail", pk=session.pk)
    try:
        actions.do_set_legal_hold(
            request.user, session, form.cleaned_data["hold"], form.cleaned_data["reason"]
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Legal hold set." if form.cleaned_data["hold"] else "Legal hold released.")
    return redirect("recordings:session_detail", pk=session.pk)


@role_required("admin", "auditor")
def retention(request: HttpRequest) -> HttpResponse:
    """Retention and legal holds per connection. Auditors hold and release; admins also set days."""
    if request.method == "POST":
        name = request.POST.get("connection", "")
        try:
            if request.POST.get("action") == "retention":
                if not request.user.has_role("admin"):  # type: ignore[union-attr]
                    raise PermissionDenied
                raw = request.POST.get("retention_days", "").strip()
                try:
                    days = int(raw) if raw else None
                except ValueError:
                    raise ValidationError("Retention is a whole number of days.") from None
                actions.do_set_connection_retention(request.user, name, days)
                messages.success(request, f"Retention for {name.strip()} saved.")
            elif request.POST.get("action") in ("hold", "release"):
                hold = request.POST["action"] == "hold"
                actions.do_set_connection_hold(request.user, name, hold, request.POST.get("reason", ""))
                messages.success(request, f"Recordings of {name.strip()} {'held' if hold else 'released'}.")
            else:
                return HttpResponseBadRequest("unknown action", content_type="text/plain")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("recordings:retention")
    from gateway.models import Connection

    rules = {rule.connection_name: rule for rule in ConnectionRule.objects.all()}
    names = sorted(set(Connection.objects.values_list("name", flat=True)) | set(rules))
    return render(
        request,
        "recordings/retention.html",
        {
            "default_days": settings.RECORDING_RETENTION_DAYS,
            "rows": [{"name": name, "rule": rules.get(name)} for name in names],
            "held_sessions": Session.objects.filter(legal_hold=True).order_by("-started_at")[:200],
            "is_admin": request.user.has_role("admin"),  # type: ignore[union-attr]
        },
    )
