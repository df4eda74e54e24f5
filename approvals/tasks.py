"""Celery work for approvals: expiry at the deadline, the periodic sweep, notifications.

Tasks take ids and call actions. Expiry is idempotent (a conditional transition) and
doubled by the sweep (beat, every ``APPROVALS_SWEEP_SECONDS``), so a lost message still
expires the request. Notifications retry with exponential backoff; they run after the
request is committed and a failure never touches the request.

Notifications never carry the statement or its parameters: only who, where, which rule
and the link to the request's page, where the reader's rights are checked.
"""

from __future__ import annotations

import logging
import smtplib
from typing import Any

import requests
from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail

from approvals import actions
from approvals.models import ApprovalRequest, Status

log = logging.getLogger("airlock.approvals")

RETRY = {
    "autoretry_for": (OSError, smtplib.SMTPException, requests.RequestException),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="approvals.expire_request", ignore_result=True)
def expire_request(request_id: int) -> bool:
    """Scheduled at the request's deadline: expire it if nobody decided (idempotent)."""
    try:
        return actions.do_expire(request_id)
    except actions.ApprovalError:
        return False


@shared_task(name="approvals.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    from approvals.gateway import sweep as run_sweep

    counts = run_sweep()
    if any(counts.values()):
        log.info("approvals sweep: %s", counts)
    return counts


# --- notifications -----------------------------------------------------------------------------


def _summary(req: ApprovalRequest) -> str:
    on_behalf = f" for {req.on_behalf_of_name}" if req.on_behalf_of_name else ""
    return (
        f"{req.agent_name}{on_behalf} wants to run a statement on {req.connection_name} "
        f"(rule {req.rule or '-'}): approval request {req.pk}"
    )


def _reviewer_emails(req: ApprovalRequest) -> list[str]:
    people = actions.eligible_reviewers(req.reviewer_groups.all(), req.requesting_side_ids())
    return sorted({email for email in people.exclude(email="").values_list("email", flat=True)})


def _post_webhook(payload: dict[str, Any]) -> None:
    url = settings.APPROVALS_WEBHOOK_URL
    if not url:
        return
    response = requests.post(url, json=payload, timeout=settings.APPROVALS_WEBHOOK_TIMEOUT)
    if response.status_code >= 500 or response.status_code == 429:
        # Worth another try later; the URL is a secret (Slack's carries a token): never logged.
        raise requests.HTTPError(f"the webhook answered {response.status_code}")
    if response.status_code >= 400:
        log.warning("approvals: the webhook refused the notification (%s)", response.status_code)


@shared_task(name="approvals.email_reviewers", ignore_result=True, **RETRY)
def email_reviewers(request_id: int) -> int:
    req = ApprovalRequest.objects.filter(pk=request_id).first()
    if req is None or req.status != Status.PENDING:
        return 0
    recipients = _reviewer_emails(req)
    if not recipients:
        return 0
    body = (
        f"{_summary(req)}\n\n"
        f"Reviewer groups: {', '.join(req.reviewer_group_names)}; approvals needed: {req.approvals_needed}.\n"
        f"It expires at {req.expires_at:%Y-%m-%d %H:%M:%S} UTC.\n\n"
        f"Review it: {req.public_url()}\n"
    )
    return send_mail(
        f"[Airlock] approval needed: request {req.pk} on {req.connection_name}",
        body,
        settings.DEFAULT_FROM_EMAIL,
        recipients,
    )


@shared_task(name="approvals.webhook_reviewers", ignore_result=True, **RETRY)
def webhook_reviewers(request_id: int) -> None:
    req = ApprovalRequest.objects.filter(pk=request_id).first()
    if req is None:
        return
    _post_webhook(
        {
            "text": f"Approval needed: {_summary(req)} <{req.public_url()}|review it>",
            "airlock": {"event": "approval.requested", "id": req.pk, "url": req.public_url()},
        }
    )


@shared_task(name="approvals.notify_reviewers", ignore_result=True)
def notify_reviewers(request_id: int) -> None:
    """Fan out: one task per channel, so that one that fails retries on its own."""
    email_reviewers.delay(request_id)
    if settings.APPROVALS_WEBHOOK_URL:
        webhook_reviewers.delay(request_id)


def _decision_words(req: ApprovalRequest) -> tuple[str, str]:
    who = f" by {req.decided_by_name}" if req.decided_by_name else ""
    why = f"\nReason: {req.reason}\n" if req.reason else "\n"
    return who, why


@shared_task(name="approvals.email_decision", ignore_result=True, **RETRY)
def email_decision(request_id: int) -> int:
    """Tell the requesting agent's owner (or, without one, the person it acts for) how the
    request ended."""
    req = ApprovalRequest.objects.select_related("agent_owner", "on_behalf_of").filter(pk=request_id).first()
    if req is None:
        return 0
    person = req.agent_owner or req.on_behalf_of
    if person is None or not person.email:
        return 0
    who, why = _decision_words(req)
    return send_mail(
        f"[Airlock] request {req.pk} {req.status}: {req.agent_name} on {req.connection_name}",
        f"{_summary(req)}\n\nIt was {req.status}{who}.{why}\nDetails: {req.public_url()}\n",
        settings.DEFAULT_FROM_EMAIL,
        [person.email],
    )


@shared_task(name="approvals.webhook_decision", ignore_result=True, **RETRY)
def webhook_decision(request_id: int) -> None:
    req = ApprovalRequest.objects.filter(pk=request_id).first()
    if req is None:
        return
    who, _ = _decision_words(req)
    _post_webhook(
        {
            "text": f"Approval request {req.pk} ({req.agent_name} on {req.connection_name}) "
            f"was {req.status}{who} <{req.public_url()}|details>",
            "airlock": {"event": f"approval.{req.status}", "id": req.pk, "url": req.public_url()},
        }
    )


@shared_task(name="approvals.notify_decision", ignore_result=True)
def notify_decision(request_id: int) -> None:
    email_decision.delay(request_id)
    if settings.APPROVALS_WEBHOOK_URL:
        webhook_decision.delay(request_id)
