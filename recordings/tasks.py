"""Periodic recording work: retention (scheduled by ``settings.CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from celery import shared_task

from recordings.actions import do_apply_retention


@shared_task(name="recordings.tasks.apply_retention")
def apply_retention() -> dict[str, int]:
    """Delete expired recordings; returns how many sessions each rule deleted."""
    return {rule.name: rule.deleted for rule in do_apply_retention()}
