"""Who may see which recordings. Every page, export, API and websocket asks here.

- Admins and auditors see every session.
- Reviewers see the sessions in which they decided a held statement: those whose recording
  holds an ``approval`` event with ``by`` equal to their username, and, once the approvals
  app defines ``approvals.ApprovalRequest`` with a ``session`` foreign key and a
  ``decided_by`` user, the sessions of the requests they decided.
- Nobody else sees any. Admins and reviewers who can see a live session may terminate it;
  admins and auditors set and clear legal holds.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform

from recordings.models import Event, Session

FULL_ACCESS_ROLES = ("admin", "auditor")


def _roles(user: Any) -> set[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return set()
    return set(user.role_names())


def sees_all_sessions(user: Any) -> bool:
    return bool(_roles(user) & set(FULL_ACCESS_ROLES))


def may_list_sessions(user: Any) -> bool:
    """Admins and auditors list every session; reviewers list the ones they decided in."""
    return bool(_roles(user) & {"admin", "auditor", "reviewer"})


def _decided_by_approval_requests(user: Any) -> QuerySet[Any] | None:
    try:
        model = apps.get_model("approvals", "ApprovalRequest")
    except LookupError:
        return None
    try:
        model._meta.get_field("session")
        model._meta.get_field("decided_by")
    except FieldDoesNotExist:
        return None
    return model.objects.filter(decided_by=user, session__isnull=False).values("session_id")


def sessions_decided_by(user: Any) -> Q:
    """A condition on Session: the sessions in which ``user`` decided a held statement."""
    recorded = (
        Event.objects.filter(kind=Event.Kind.APPROVAL)
        .alias(decided_by=KeyTextTransform("by", "payload"))
        .filter(decided_by=user.get_username())
        .values("session_id")
    )
    condition = Q(pk__in=recorded)
    requests = _decided_by_approval_requests(user)
    if requests is not None:
        condition |= Q(pk__in=requests)
    return condition


def visible_sessions(user: Any) -> QuerySet[Session]:
    """The sessions ``user`` may see (none for anonymous visitors and people without a role)."""
    roles = _roles(user)
    if roles & set(FULL_ACCESS_ROLES):
        return Session.objects.all()
    if "reviewer" in roles:
        return Session.objects.filter(sessions_decided_by(user))
    return Session.objects.none()


def can_view_session(user: Any, session: Session) -> bool:
    if sees_all_sessions(user):
        return True
    if "reviewer" not in _roles(user):
        return False
    return Session.objects.filter(pk=session.pk).filter(sessions_decided_by(user)).exists()


def can_terminate_session(user: Any, session: Session) -> bool:
    """Admins, and reviewers who can see it, may terminate a live session (auditors only watch)."""
    if session.status != Session.Status.LIVE:
        return False
    roles = _roles(user)
    if "admin" in roles:
        return True
    return "reviewer" in roles and can_view_session(user, session)


def can_set_legal_hold(user: Any) -> bool:
    return bool(_roles(user) & {"admin", "auditor"})
