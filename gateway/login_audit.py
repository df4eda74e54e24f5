"""Failed agent logins as audit records, at a bounded rate (pure, in memory, per process).

An attacker who can reach the gateway can try logins as fast as the network allows; each
try must not become a row of the audit log. The rule, per gateway process:

- Time is cut into windows of ``WINDOW_SECONDS`` (60).
- The first failure of a (client address, agent name) pair in a window is written at
  once (by the gateway's next flush, within a second) as one ``agent.login_failed``
  record with ``count`` 1.
- Further failures of that pair in the same window are counted, and written when the
  window closes as one more ``agent.login_failed`` record with ``count`` (how many),
  ``first_at`` / ``last_at`` and the reasons seen (``aggregated: true``).
- At most ``PAIRS_PER_WINDOW`` (50) pairs a window get records of their own. Failures of
  any further pair are summed into one ``agent.login_failed`` record per window with
  ``overflow: true``, the total count, the number of pairs and the first
  ``SAMPLE`` (20) addresses and agent names.

So one process writes at most 2 x 50 + 1 failure records a minute, whatever it is sent.
Records queued while the database is unreachable are capped at ``MAX_PENDING``; beyond
that the oldest are dropped, counted, and named in the next record (``dropped``).

>>> log = LoginFailureLog(clock=lambda: 0.0)
>>> log.failed("10.0.0.9", "billing-bot", "28P01", "password authentication failed")
>>> [(r["agent"], r["count"]) for r in log.take()]
[('billing-bot', 1)]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOW_SECONDS = 60.0
PAIRS_PER_WINDOW = 50
SAMPLE = 20
MAX_PENDING = 1000
REASON_CHARS = 200


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class _Pair:
    first_at: str
    last_at: str
    repeats: int = 0  # failures after the first, not yet written
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Overflow:
    count: int = 0
    pairs: set[tuple[str, str]] = field(default_factory=set)
    addresses: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    first_at: str = ""
    last_at: str = ""


class LoginFailureLog:
    """Collects failed logins; ``take()`` returns the audit records due now (see above)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], str] = _now) -> None:
        self.clock = clock
        self.wall = wall
        self.window_start = clock()
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.overflow = _Overflow()
        self.pending: list[dict[str, Any]] = []
        self.dropped = 0

    def failed(self, address: str, agent: str, code: str, reason: str) -> None:
        self._roll(self.clock())
        agent = agent[:150]
        reason = f"{code} {reason[:REASON_CHARS]}"
        at = self.wall()
        key = (address, agent)
        pair = self.pairs.get(key)
        if pair is not None:
            pair.repeats += 1
            pair.last_at = at
            pair.reasons[reason] = pair.reasons.get(reason, 0) + 1
            return
        if len(self.pairs) >= PAIRS_PER_WINDOW:
            over = self.overflow
            over.count += 1
            over.first_at = over.first_at or at
            over.last_at = at
            if len(over.pairs) < 100_000:
                over.pairs.add(key)
            if address not in over.addresses and len(over.addresses) < SAMPLE:
                over.addresses.append(address)
            if agent not in over.agents and len(over.agents) < SAMPLE:
                over.agents.append(agent)
            return
        self.pairs[key] = _Pair(first_at=at, last_at=at)
        self._queue({"address": address, "agent": agent, "count": 1, "reasons": {reason: 1}, "first_at": at})

    def take(self, *, closing: bool = False) -> list[dict[str, Any]]:
        """The records to write now; ``closing`` also ends the current window."""
        self._roll(self.clock(), force=closing)
        records, self.pending = self.pending, []
        if records and self.dropped:
            records[0]["dropped"] = self.dropped
            self.dropped = 0
        return records

    def _queue(self, record: dict[str, Any]) -> None:
        record.setdefault("window_seconds", WINDOW_SECONDS)
        self.pending.append(record)
        if len(self.pending) > MAX_PENDING:
            del self.pending[0]
            self.dropped += 1

    def _roll(self, now: float, force: bool = False) -> None:
        if not force and now - self.window_start < WINDOW_SECONDS:
            return
        for (address, agent), pair in self.pairs.items():
            if pair.repeats:
                self._queue(
                    {
                        "address": address,
                        "agent": agent,
                        "count": pair.repeats,
                        "reasons": pair.reasons,
                        "first_at": pair.first_at,
                        "last_at": pair.last_at,
                        "aggregated": True,
                    }
                )
        over = self.overflow
        if over.count:
            self._queue(
                {
                    "address": "",
                    "agent": "",
                    "count": over.count,
                    "pairs": len(over.pairs),
                    "addresses": over.addresses,
                    "agents": over.agents,
                    "first_at": over.first_at,
                    "last_at": over.last_at,
                    "overflow": True,
                }
            )
        self.pairs = {}
        self.overflow = _Overflow()
        self.window_start = now
