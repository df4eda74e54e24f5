"""Masking engine throughput: rows per second for a 10-column, 100,000-row result.

Plain script (``make bench`` runs it): ``python bench/masking_bench.py [--rows N]``.
The result has four masked entity types (email, phone, payment card, IP address) in every
row, plus free-text notes where one row in twenty holds a secret. Values are bytes, as
they come off the wire. Scenarios:

- 4 column rules: email, phone, card and IP columns masked by identity (redact);
  everything else content-scanned for every built-in entity (the secrets in notes);
- 3 column rules: email, phone and card columns masked by identity (all redact, or
  hash, partial, partial); the IP addresses are found by content;
- content only: no column rules, every value found by the content detectors;
- clean: the same shape with no sensitive values (the prefilter's fast path).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from masking import compile_policy

COLUMNS = [
    ("public.users", "id"),
    ("public.users", "name"),
    ("public.users", "email"),
    ("public.users", "phone"),
    ("public.users", "card"),
    ("public.users", "created_at"),
    ("public.users", "balance"),
    ("public.users", "status"),
    ("public.users", "notes"),
    ("public.users", "last_ip"),
]
NOTES = [
    "customer asked for a refund",
    "left at the door",
    "",
    "call before delivery please",
    "gift wrap, no invoice in the box",
]
SECRET_NOTES = [
    "deploy key ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "forwarded from ops@example.org",
    "ERROR auth failed token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
]


def luhn_number(rng: random.Random, prefix: str, length: int = 16) -> str:
    digits = [int(c) for c in prefix] + [rng.randint(0, 9) for _ in range(length - len(prefix) - 1)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def make_rows(count: int, sensitive: bool, seed: int = 7) -> list[list[bytes | None]]:
    rng = random.Random(seed)
    first = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    last = ["smith", "jones", "brown", "taylor", "wilson", "davies"]
    rows: list[list[bytes | None]] = []
    for i in range(count):
        f, s = rng.choice(first), rng.choice(last)
        card = luhn_number(rng, rng.choice(["4", "51", "37"]))
        if sensitive:
            email = f"{f}.{s}{i}@example.com"
            phone = f"+1 555 {rng.randint(200, 999)} {rng.randint(1000, 9999)}"
            card_text = f"{card[:4]} {card[4:8]} {card[8:12]} {card[12:]}"
            ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            notes = rng.choice(SECRET_NOTES) if i % 20 == 0 else rng.choice(NOTES)
        else:
            email = f"{f}.{s}{i}"
            phone = f"ext {rng.randint(100, 999)}"
            card_text = f"ref {rng.randint(1000, 9999)}"
            ip = "unknown"
            notes = rng.choice(NOTES)
        created = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 12:{rng.randint(10, 59)}:00+00"
        values = [str(i), f"{f.title()} {s.title()}", email, phone, card_text, created]
        values += [
            f"{rng.randint(1, 99999)}.{rng.randint(10, 99)}",
            rng.choice(["paid", "pending", "refunded"]),
        ]
        values += [notes, ip]
        rows.append([v.encode() for v in values])
    return rows


def measure(label: str, policy, rows, repeat: int) -> float:  # type: ignore[no-untyped-def]
    masker = policy.result_masker(COLUMNS)
    best_wall = best_cpu = float("inf")
    counts: dict[str, int] = {}
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        _, counts = masker.mask_rows(rows)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    rate = len(rows) / best_wall
    print(
        f"{label:<40} {rate:>10,.0f} rows/s  (wall {best_wall * 1000:.0f} ms; "
        f"cpu {best_cpu * 1000:.0f} ms = {len(rows) / best_cpu:,.0f} rows/cpu-s)"
    )
    print(f"{'':<40} masked: {dict(sorted(counts.items()))}")
    return rate


def calibration() -> float:
    """CPU seconds this interpreter takes for sum(range(10**7)), to compare machines' figures."""
    started = time.process_time()
    sum(range(10**7))
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    key = b"bench-hash-key-0123456789abcdef"
    with_rules = compile_policy(
        {
            "columns": [
                {"match": "users.email", "method": "hash", "entity": "email"},
                {"match": "users.phone", "method": "partial", "entity": "phone"},
                {"match": "users.card", "method": "partial", "entity": "card"},
            ]
        },
        hash_key=key,
    )
    content_only = compile_policy({})
    sensitive = make_rows(args.rows, sensitive=True)
    clean = make_rows(args.rows, sensitive=False)
    redacting = compile_policy(
        {
            "columns": [
                {"match": "users.email", "method": "redact", "entity": "email"},
                {"match": "users.phone", "method": "redact", "entity": "phone"},
                {"match": "users.card", "method": "redact", "entity": "card"},
            ]
        }
    )
    four_rules = compile_policy(
        {
            "columns": [
                {"match": f"users.{column}", "method": "redact", "entity": entity}
                for column, entity in (
                    ("email", "email"),
                    ("phone", "phone"),
                    ("card", "card"),
                    ("last_ip", "ip"),
                )
            ]
        }
    )
    print(f"masking engine, {args.rows:,} rows x {len(COLUMNS)} columns, best of {args.repeat}")
    print(f"calibration: sum(range(10**7)) takes {calibration():.3f} s of CPU here")
    measure("4 column rules (redact) + content", four_rules, sensitive, args.repeat)
    measure("3 column rules (redact) + content", redacting, sensitive, args.repeat)
    measure("3 column rules (hash, partial) + content", with_rules, sensitive, args.repeat)
    measure("content only", content_only, sensitive, args.repeat)
    measure("clean result, content scan", content_only, clean, args.repeat)


if __name__ == "__main__":
    main()
