"""Recount ``Session.review_count`` with ``approval`` events (a held statement's outcome),
which the counter missed until now; the counters are not part of the hash chain."""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce


def recount(apps: Any, schema_editor: Any) -> None:
    Session = apps.get_model("recordings", "Session")
    Event = apps.get_model("recordings", "Event")
    reviewed = (
        Event.objects.filter(session=OuterRef("pk"))
        .filter(Q(kind="approval") | Q(kind="decision", payload__action="review"))
        .order_by()
        .values("session")
        .annotate(n=Count("pk"))
        .values("n")
    )
    with_approvals = Event.objects.filter(kind="approval").values("session")
    Session.objects.filter(pk__in=with_approvals).update(review_count=Coalesce(Subquery(reviewed), 0))


class Migration(migrations.Migration):
    dependencies = [("recordings", "0005_termination_requests")]

    operations = [migrations.RunPython(recount, migrations.RunPython.noop)]
