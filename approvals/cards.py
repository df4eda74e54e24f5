"""How a request is shown to one person: its card (HTML) and its JSON form.

The same card template serves the inbox page, the request's own page and the websocket
(which renders it per person, since the buttons depend on who looks).
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils import timezone

from approvals.models import ApprovalRequest, Status

SECTION_PENDING = "pending"
SECTION_HISTORY = "history"


def section_of(req: ApprovalRequest) -> str:
    return SECTION_PENDING if req.status == Status.PENDING else SECTION_HISTORY


def _estimate(req: ApprovalRequest) -> dict[str, Any] | None:
    if req.estimate_status == "none":
        return None
    return {"status": req.estimate_status, "rows": req.estimated_rows, "note": req.estimate_note}


def card_context(req: ApprovalRequest, user: Any, decide: tuple[bool, str] | None = None) -> dict[str, Any]:
    """``decide``: ``req.may_decide(user)`` when the caller has just computed it."""
    can_decide, why_not = decide if decide is not None else req.may_decide(user)
    decisions = list(req.decisions.all())
    return {
        "req": req,
        "decisions": decisions,
        "approvals": sum(1 for d in decisions if d.verdict == "approve"),
        "can_decide": can_decide,
        "why_not": why_not if req.status == Status.PENDING else "",
        "params": list(enumerate(req.params, start=1)),
        "estimate": _estimate(req),
        "section": section_of(req),
        "max_grant": _max_grant(),
    }


def _max_grant() -> int:
    from django.conf import settings

    return int(settings.APPROVALS_MAX_GRANT_MINUTES)


def render_card(req: ApprovalRequest, user: Any, decide: tuple[bool, str] | None = None) -> str:
    return render_to_string("approvals/_card.html", {"card": card_context(req, user, decide)})


def as_json(req: ApprovalRequest, user: Any) -> dict[str, Any]:
    """The API's view of a request (masked statement, no binding secrets)."""
    can_decide, why_not = req.may_decide(user)
    return {
        "id": req.pk,
        "url": req.public_url(),
        "status": req.status,
        "agent": req.agent_name,
        "on_behalf_of": req.on_behalf_of_name or None,
        "connection": req.connection_name,
        "protocol": req.protocol,
        "statement": req.statement,
        "statement_pretty": req.statement_pretty or req.statement,
        "params": req.params,
        "operations": req.operations(),
        "tables": req.tables(),
        "facts": list(req.classification.get("facts") or []),
        "rule": req.rule,
        "policy": req.policy_name,
        "policy_version": req.policy_version,
        "reviewer_groups": req.reviewer_group_names,
        "approvals_needed": req.approvals_needed,
        "decisions": [
            {"reviewer": d.reviewer_name, "verdict": d.verdict, "comment": d.comment, "at": d.at.isoformat()}
            for d in req.decisions.all()
        ],
        "created_at": req.created_at.isoformat(),
        "expires_at": req.expires_at.isoformat(),
        "seconds_left": req.seconds_left(timezone.now()),
        "decided_at": req.decided_at.isoformat() if req.decided_at else None,
        "decided_by": req.decided_by_name or None,
        "reason": req.reason,
        "result": req.result,
        "grant_until": req.grant_until.isoformat() if req.grant_until else None,
        "estimate": _estimate(req),
        "agent_waits": req.agent_waits,
        "can_decide": can_decide,
        "why_not": why_not if req.status == Status.PENDING and not can_decide else "",
    }
