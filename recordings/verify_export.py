"""Check an exported recording offline: ``python -m recordings.verify_export FILE --public-key PEM``.

Needs only this package's pure modules (``chain``, ``export``) and ``cryptography`` and
``orjson``: no database, no settings. ``manage.py recordings verify-export`` runs the same
check. Exit status 0 when the file is intact and sealed by the key, 1 otherwise, 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recordings import chain, export


def load_public_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """Read PEM Ed25519 public keys; raises ValueError naming a file that is not one."""
    keys = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{str(path)!r} is not a PEM Ed25519 public key")
        keys[chain.key_id(key)] = key
    return keys


def check_file(path: Path, public_keys: dict[str, Ed25519PublicKey]) -> export.ExportCheck:
    with path.open("rb") as handle:
        return export.verify_lines(handle, public_keys)


def describe(check: export.ExportCheck) -> str:
    if check.ok:
        return f"ok {check.session_id}: {check.event_count} events, chain intact, seal valid"
    where = f"event {check.first_broken_seq}: " if check.first_broken_seq is not None else ""
    return f"FAILED {check.session_id or '(unknown session)'}: {where}{check.reason}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recordings.verify_export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("file", type=Path, help="a JSONL export of one session")
    parser.add_argument(
        "--public-key", type=Path, action="append", required=True, metavar="PEM", help="may be repeated"
    )
    args = parser.parse_args(argv)
    try:
        keys = load_public_keys(args.public_key)
        check = check_file(args.file, keys)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(check))
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
