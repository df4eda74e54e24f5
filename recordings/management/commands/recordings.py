"""``manage.py recordings verify [SESSION_ID ... | --all]``, ``verify-export FILE --public-key PEM``,
``public-key`` and ``close-abandoned [--after SECONDS] [--unknown]``."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from recordings import chain, keys
from recordings.models import Session


class Command(BaseCommand):
    help = "Check session recordings (hash chains and seals) and export the sealing public key."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True, parser_class=CommandParser)
        verify = sub.add_parser(
            "verify",
            help="Check chains and seals; print the first broken event of each failing session.",
            description="Exits with status 1 when any session fails.",
        )
        verify.add_argument("sessions", nargs="*", metavar="SESSION_ID")
        verify.add_argument("--all", action="store_true", help="Check every session.")
        verify.add_argument(
            "--public-key",
            type=Path,
            metavar="PEM",
            help="Check seals against this public key only (offline verification), not the installation's keys.",
        )
        verify.add_argument("--quiet", action="store_true", help="Print failures and the summary only.")
        sub.add_parser("public-key", help="Print the public key that seals recordings (PEM).")
        abandoned = sub.add_parser(
            "close-abandoned",
            help="Close and seal live sessions whose gateway stopped without ending them.",
            description=(
                "A running gateway does this on its own every AIRLOCK_RECORDING_HEARTBEAT_SECONDS;"
                " this is for when none runs. Sessions not heard of for --after seconds"
                " (default AIRLOCK_RECORDING_ABANDONED_SECONDS) are closed as interrupted."
            ),
        )
        abandoned.add_argument("--after", type=int, metavar="SECONDS", help="Not heard of for this long.")
        abandoned.add_argument(
            "--unknown",
            action="store_true",
            help=(
                "Also close sessions started more than --after ago that no gateway ever vouched for"
                " (started by a release before the heartbeat): only once no such gateway runs."
            ),
        )
        verify_export = sub.add_parser(
            "verify-export",
            help="Check a JSONL export offline: its chain and its seal, against a public key.",
            description="Exits with status 1 when the file fails.",
        )
        verify_export.add_argument("file", type=Path, metavar="FILE")
        verify_export.add_argument(
            "--public-key", type=Path, action="append", required=True, metavar="PEM", help="May be repeated."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "public-key":
            self.stdout.write(keys.public_key_pem(), ending="")
            return
        if options["subcommand"] == "verify-export":
            self._verify_export(options)
            return
        if options["subcommand"] == "close-abandoned":
            self._close_abandoned(options["after"], options["unknown"])
            return
        self._verify(options)

    def _verify(self, options: dict[str, Any]) -> None:
        if options["all"] == bool(options["sessions"]):
            raise CommandError("name one or more SESSION_IDs, or --all")
        public_keys = self._public_keys(options["public_key"])
        if options["all"]:
            sessions: Any = Session.objects.order_by("started_at").iterator(chunk_size=200)
            missing: list[str] = []
        else:
            ids = [self._session_id(raw) for raw in options["sessions"]]
            found = {s.pk: s for s in Session.objects.filter(pk__in=ids)}
            sessions = [found[i] for i in ids if i in found]
            missing = [str(i) for i in ids if i not in found]
        checked = failed = 0
        for session in sessions:
            checked += 1
            result = session.verify(public_keys)
            if not result.ok:
                failed += 1
                where = f"event {result.first_broken_seq}: " if result.first_broken_seq is not None else ""
                self.stdout.write(self.style.ERROR(f"FAILED {session.pk}  {where}{result.reason}"))
            elif not options["quiet"]:
                self.stdout.write(f"ok     {session.pk}  {self._describe(session, result)}")
        for session_id in missing:
            failed += 1
            self.stdout.write(self.style.ERROR(f"FAILED {session_id}  no such session"))
        total = checked + len(missing)
        summary = f"{total} session{'s' if total != 1 else ''} checked, {failed} failed"
        if failed:
            raise CommandError(summary, returncode=1)
        self.stdout.write(summary)

    def _close_abandoned(self, after: int | None, unknown: bool) -> None:
        from django.conf import settings

        from recordings.writer import close_abandoned

        if after is None:
            after = int(settings.RECORDING_ABANDONED_SECONDS)
        if after < 2 * float(settings.RECORDING_HEARTBEAT_SECONDS):
            raise CommandError(
                f"--after must be at least twice the heartbeat ({settings.RECORDING_HEARTBEAT_SECONDS} s):"
                " a live gateway's idle session must not be taken for abandoned"
            )
        closed = close_abandoned(abandoned_after=after, limit=10_000, unknown=unknown)
        for session_id in closed:
            self.stdout.write(f"closed {session_id}  interrupted, sealed")
        self.stdout.write(f"{len(closed)} abandoned session{'s' if len(closed) != 1 else ''} closed")

    def _verify_export(self, options: dict[str, Any]) -> None:
        from recordings import verify_export

        try:
            public_keys = verify_export.load_public_keys(options["public_key"])
            check = verify_export.check_file(options["file"], public_keys)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from None
        if not check.ok:
            raise CommandError(verify_export.describe(check), returncode=1)
        self.stdout.write(verify_export.describe(check))

    @staticmethod
    def _describe(session: Session, result: chain.VerifyResult) -> str:
        text = f"{result.event_count} events, " + (
            "live, not sealed yet" if session.status == "live" else "sealed"
        )
        if session.dropped_events:
            text += f", {session.dropped_events} events were not recorded"
        return text

    @staticmethod
    def _session_id(raw: str) -> uuid.UUID:
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise CommandError(f"{raw!r} is not a session id") from None

    @staticmethod
    def _public_keys(path: Path | None) -> dict[str, Any]:
        if path is None:
            try:
                return keys.verification_keys()
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
        try:
            public = keys.load_public_key(path.read_bytes(), source=str(path))
        except OSError as exc:
            raise CommandError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return {chain.key_id(public): public}
