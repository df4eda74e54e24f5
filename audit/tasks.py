"""Forwarding audit records to the configured sink (see ``audit.forwarding``)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from audit import forwarding
from audit.models import AuditRecord


@shared_task(
    name="audit.tasks.forward_record",
    autoretry_for=(forwarding.ForwardError,),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
)
def forward_record(record_id: int) -> bool:
    """Send one audit record to ``AUDIT_FORWARD_URL``; False when there is nothing to send."""
    url = settings.AUDIT_FORWARD_URL
    record = AuditRecord.objects.filter(pk=record_id).first()
    if not url or record is None:
        return False
    forwarding.send(
        url,
        forwarding.record_document(record),
        token=settings.AUDIT_FORWARD_TOKEN,
        timeout=settings.AUDIT_FORWARD_TIMEOUT,
    )
    return True
