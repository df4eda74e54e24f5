"""manage.py rotate_secrets: re-encrypt connection secrets under the first key.

Rotation: put the new key first in AIRLOCK_SECRET_KEYS (keep the old one after it),
restart, run this command, then remove the old key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.actions import do_rotate_secrets
from gateway.secrets import SecretDecryptionError


class Command(BaseCommand):
    help = "Re-encrypt every connection secret under the first key of AIRLOCK_SECRET_KEYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--actor", default="rotate_secrets", help="name recorded in the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = do_rotate_secrets(options["actor"])
        except SecretDecryptionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{result.rotated} connection secrets re-encrypted under the first key; "
            f"{result.current} already were."
        )
