"""Open sessions follow the stored policy: a new version decides their next statement.

A session can stay open for days; an administrator's stricter version (a save, a rollback,
``manage.py apply``, another policy bound to the connection, a reviewer group left without
members) must reach it without the session reconnecting, and without a database round trip
per statement.

One ``PolicyRegistry`` per process (``REGISTRY``) holds a ``PolicySlot`` per connection that
has open sessions: the compiled policy every session on that connection decides with. A
session's ``DecisionPoint`` reads ``slot.policy`` at each statement, an attribute read.
The sessions of one connection share the compiled policy, and so its decision cache.

``PolicyWatcher`` (a task on the gateway's event loop, one database thread of its own)
asks the database every ``AIRLOCK_POLICY_REFRESH_MS`` (1000 by default) what each watched
connection's policy is now: one query for the connections' policy ids and versions, one for
the groups that can review. Where that changed, the policy is compiled again and installed
in the slot; the next statement of every open session on that connection is decided by it
(and its events record the new version). A new version is therefore in force at most one
interval (plus a compile) after it is saved, as long as the database answers; while it does
not, sessions keep the version they have and the watcher logs the failure.

A version that does not compile (a review naming a group nobody can approve for) is not
skipped: the slot gets a ``BrokenPolicy`` that denies every statement with a message naming
the policy, its version and the problem, until an administrator saves a version that
compiles. A connection removed while sessions are open denies everything likewise, and a
connection whose policy was unbound gets ``NoPolicy`` (fail closed, as at login).

At login (``slot_for``, in a worker thread) the connection row just read decides: if the
slot already holds that version it is reused, otherwise the policy is compiled (and a
version that does not compile refuses the login, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from policies.types import Action, Decision, Request

if TYPE_CHECKING:
    from gateway.decision import CompiledPolicy
    from gateway.models import Connection

log = logging.getLogger("airlock.gateway")

# What a slot was compiled from: (policy id, version, last saved, groups that can review),
# or ("gone",) for a connection that no longer exists.
State = tuple[Any, ...]


class BrokenPolicy:
    """A policy version that does not compile, in force for open sessions: deny everything."""

    def __init__(self, connection: str, policy: str, version: int | None, problem: str) -> None:
        self.name = policy
        self.version = version
        self.decision = Decision(
            action=Action.DENY,
            rule=None,
            message=(
                f'policy "{policy}" version {version} of connection "{connection}" cannot be used'
                f" ({problem}): every statement is denied until an administrator fixes it"
            ),
            policy=policy,
            policy_version=version,
        )

    def __repr__(self) -> str:
        return f"<BrokenPolicy {self.name} v{self.version}: denies everything>"

    def evaluate(self, request: Request) -> Decision:
        return self.decision


class ConnectionGone:
    """The connection was deleted while sessions on it are open: deny everything."""

    def __init__(self, connection: str) -> None:
        self.decision = Decision(
            action=Action.DENY,
            rule=None,
            message=f'connection "{connection}" no longer exists: every statement is denied',
        )

    def __repr__(self) -> str:
        return "<ConnectionGone: denies everything>"

    def evaluate(self, request: Request) -> Decision:
        return self.decision


class PolicySlot:
    """The compiled policy of one connection's open sessions (replaced as a whole, never edited)."""

    __slots__ = ("__weakref__", "connection_id", "connection_name", "policy", "state", "ticket")

    def __init__(
        self, policy: CompiledPolicy | None, connection_id: int | None = None, name: str = ""
    ) -> None:
        self.policy = policy
        self.connection_id = connection_id
        self.connection_name = name
        self.state: State | None = None
        self.ticket = 0


def _problem(exc: Exception) -> str:
    problems = getattr(exc, "problems", None)
    if problems:
        return "; ".join(f"{path}: {message}" for path, message in problems)
    return str(exc)


def _compile(connection_name: str, policy: Any, groups: frozenset[str]) -> CompiledPolicy:
    """``policy`` (a ``policies.models.Policy`` or None) compiled for ``connection_name``."""
    from gateway.decision import NoPolicy
    from policies.stored import compile_stored

    if policy is None:
        return NoPolicy(connection_name)
    return compile_stored(policy, known_groups=groups)


class PolicyRegistry:
    """Per process: connection id -> ``PolicySlot`` of the sessions open on it.

    Slots are held weakly: a slot lives as long as a session's decision point uses it.
    Writers (logins, the watcher) take a ticket before they read the database and install
    only over an older ticket, so a slow login never puts back a version the watcher has
    already replaced.
    """

    def __init__(self) -> None:
        self._slots: weakref.WeakValueDictionary[int, PolicySlot] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._tickets = itertools.count(1)

    def _ticket(self) -> int:
        with self._lock:
            return next(self._tickets)

    def _install(self, slot: PolicySlot, policy: CompiledPolicy, state: State, ticket: int) -> bool:
        with self._lock:
            if ticket <= slot.ticket:
                return False
            slot.policy, slot.state, slot.ticket = policy, state, ticket
            return True

    def slots(self) -> list[PolicySlot]:
        with self._lock:
            return list(self._slots.values())

    def slot_for(self, connection: Connection) -> PolicySlot:
        """The slot of ``connection`` holding its current policy (ORM: at login, in a thread).

        Raises ``PolicyError`` when the current version does not compile (the login is refused).
        """
        from policies.stored import reviewer_groups

        ticket = self._ticket()
        policy = connection.policy
        groups = frozenset(reviewer_groups()) if policy is not None else frozenset()
        state: State = (
            (policy.pk, policy.version, policy.updated_at, groups) if policy is not None else (None,)
        )
        with self._lock:
            slot = self._slots.get(connection.pk)
        if slot is not None and slot.state == state and not isinstance(slot.policy, BrokenPolicy):
            return slot
        compiled = _compile(connection.name, policy, groups)
        with self._lock:
            slot = self._slots.get(connection.pk)
            if slot is None:
                slot = PolicySlot(None, connection.pk, connection.name)
                self._slots[connection.pk] = slot
        self._install(slot, compiled, state, ticket)
        return slot

    def refresh(self) -> int:
        """Compare every slot with the database and recompile what changed (ORM, a thread).

        Returns how many slots got a new policy.
        """
        from gateway.models import Connection
        from policies.models import Policy
        from policies.stored import reviewer_groups

        slots = self.slots()
        if not slots:
            return 0
        ticket = self._ticket()
        rows = {
            pk: (policy_id, version, saved)
            for pk, policy_id, version, saved in Connection.objects.filter(
                pk__in=[slot.connection_id for slot in slots]
            ).values_list("pk", "policy_id", "policy__version", "policy__updated_at")
        }
        groups = frozenset(reviewer_groups())
        changed = 0
        for slot in slots:
            row = rows.get(slot.connection_id)  # type: ignore[arg-type]
            if row is None:
                state: State = ("gone",)
                if slot.state == state:
                    continue
                compiled: CompiledPolicy = ConnectionGone(slot.connection_name)
            else:
                policy_id, version, saved = row
                state = (policy_id, version, saved, groups) if policy_id is not None else (None,)
                if slot.state == state:
                    continue
                policy = Policy.objects.filter(pk=policy_id).first() if policy_id is not None else None
                if policy is not None:
                    state = (policy.pk, policy.version, policy.updated_at, groups)
                    if slot.state == state:
                        continue
                try:
                    compiled = _compile(slot.connection_name, policy, groups)
                except Exception as exc:
                    name = policy.name if policy is not None else "?"
                    version = policy.version if policy is not None else None
                    compiled = BrokenPolicy(slot.connection_name, name, version, _problem(exc))
                    log.error(
                        "policy %s v%s of connection %s does not compile; its open sessions deny"
                        " every statement: %s",
                        name,
                        version,
                        slot.connection_name,
                        _problem(exc),
                    )
            if self._install(slot, compiled, state, ticket):
                changed += 1
                log.info(
                    "connection %s: open sessions now decide with %r",
                    slot.connection_name,
                    compiled,
                )
        return changed


REGISTRY = PolicyRegistry()


class PolicyWatcher:
    """Refreshes ``registry`` every ``interval`` seconds from its own database thread.

    >>> watcher = PolicyWatcher(REGISTRY, 1.0)   # doctest: +SKIP
    >>> watcher.start()                          # doctest: +SKIP  (in the event loop)
    >>> await watcher.close()                    # doctest: +SKIP
    """

    def __init__(self, registry: PolicyRegistry, interval: float) -> None:
        self.registry = registry
        self.interval = interval
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-watch")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="policy watcher")

    def _refresh(self) -> int:
        from django.db import close_old_connections

        # The thread keeps its database connection between polls; one that broke (the
        # database restarted) is dropped here and opened afresh by the queries.
        close_old_connections()
        return self.registry.refresh()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            if not self.registry.slots():
                continue
            try:
                await loop.run_in_executor(self._executor, self._refresh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.warning("policies of open sessions cannot be refreshed: %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("policies of open sessions are refreshed again")
                failing = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        executor, self._executor = self._executor, None
        if executor is not None:

            def close_connection() -> None:
                from django.db import connections

                connections.close_all()

            await asyncio.get_running_loop().run_in_executor(executor, close_connection)
            executor.shutdown(wait=False)
