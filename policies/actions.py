"""Every change to policies goes through these functions (versions and audit included).

A policy's ``spec`` is versioned: each save with a different spec bumps
``Policy.version`` and keeps the spec as a ``PolicyVersion``; saving the same spec again
changes nothing, so repeated saves (``manage.py apply``) are idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from audit.actions import record
from policies.engine import PolicyError, compile_policy
from policies.models import Policy, PolicyVersion
from policies.spec import validate_policy_spec


class PolicyInUse(Exception):
    """The policy cannot be deleted while connections use it."""


class PolicyChanged(Exception):
    """The policy is not at the version the change was made against (someone saved first).

    Editors send the version they read; saving over a version they never saw would
    silently undo another person's change (or, with rule positions, change the wrong rule).
    """


def canonical_spec(spec: Any) -> str:
    """The spec as canonical JSON: two specs are the same policy when these are equal."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def policy_snapshot(policy: Policy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "description": policy.description,
        "version": policy.version,
        "spec": policy.spec,
    }


def _author(actor: Any) -> Any:
    from identity.models import User

    return actor if isinstance(actor, User) else None


def _check(name: str, spec: Any, known_groups: Iterable[str] | None) -> dict[str, Any]:
    problems = validate_policy_spec(spec, "spec")
    if not problems and known_groups is not None:
        try:
            compile_policy(name, 0, spec, known_groups=known_groups, path="spec")
        except PolicyError as exc:
            problems = exc.problems
    if problems:
        raise ValidationError({"spec": [f"{path}: {message}" for path, message in problems]})
    # What is stored is what JSON keeps (no tuples, sets or dates slipping through).
    try:
        plain = json.loads(canonical_spec(spec))
    except (TypeError, ValueError) as exc:
        raise ValidationError({"spec": [f"spec must be plain JSON data: {exc}"]}) from None
    Policy(name=name, spec=plain).full_clean(exclude=["spec"], validate_unique=False)
    return plain  # type: ignore[no-any-return]


def _check_version(name: str, policy: Policy | None, expected_version: int | None) -> None:
    if expected_version is None:
        return
    current = policy.version if policy is not None else 0
    if current == expected_version:
        return
    if policy is None:
        raise PolicyChanged(f"policy {name!r} no longer exists")
    if expected_version == 0:
        raise PolicyChanged(f"a policy named {name!r} already exists")
    raise PolicyChanged(
        f"policy {name!r} was saved by someone else since you opened it "
        f"(it is now at version {current}, you edited version {expected_version})"
    )


@transaction.atomic
def do_save_policy(
    actor: Any,
    name: str,
    spec: dict[str, Any],
    *,
    description: str = "",
    comment: str = "",
    expected_version: int | None = None,
    known_groups: Iterable[str] | None = None,
) -> Policy:
    """Create the policy ``name`` or save a new version of it when ``spec`` differs.

    Same spec and description: nothing is written (no version, no audit record).

    ``expected_version``: the version the change was made against (0: the policy must not
    exist yet); another raises ``PolicyChanged``. ``known_groups``: the groups that can
    review (see ``policies.stored.reviewer_groups``); when given, the spec must compile
    with them, so that a review nobody can approve is refused.
    """
    spec = _check(name, spec, known_groups)
    policy = Policy.objects.select_for_update().filter(name=name).first()
    _check_version(name, policy, expected_version)
    if policy is None:
        try:
            # A savepoint: another transaction may create the same name between our
            # look-up (which locks nothing when the row does not exist) and this insert.
            with transaction.atomic():
                policy = Policy.objects.create(name=name, description=description, spec=spec, version=1)
        except IntegrityError:
            raise PolicyChanged(f"a policy named {name!r} already exists") from None
        PolicyVersion.objects.create(
            policy=policy, number=1, spec=spec, author=_author(actor), comment=comment[:255]
        )
        record(actor, "policy.create", policy, after=policy_snapshot(policy), comment=comment)
        return policy

    before = policy_snapshot(policy)
    spec_changed = canonical_spec(spec) != canonical_spec(policy.spec)
    if not spec_changed and description == policy.description:
        return policy
    policy.description = description
    if spec_changed:
        policy.spec = spec
        policy.version += 1
        PolicyVersion.objects.create(
            policy=policy, number=policy.version, spec=spec, author=_author(actor), comment=comment[:255]
        )
    policy.save()
    record(actor, "policy.update", policy, before=before, after=policy_snapshot(policy), comment=comment)
    return policy


@transaction.atomic
def do_rollback_policy(
    actor: Any,
    policy: Policy,
    number: int,
    *,
    expected_version: int | None = None,
    known_groups: Iterable[str] | None = None,
) -> Policy:
    """Make version ``number``'s spec current again, as a new version.

    Rolling back to the spec that is already current writes nothing. ``expected_version``
    and ``known_groups`` as for ``do_save_policy``.
    """
    policy = Policy.objects.select_for_update().get(pk=policy.pk)
    old = PolicyVersion.objects.filter(policy=policy, number=number).first()
    if old is None:
        raise ValidationError({"number": [f"policy {policy.name!r} has no version {number}"]})
    return do_save_policy(
        actor,
        policy.name,
        old.spec,
        description=policy.description,
        comment=f"rollback to version {number}",
        expected_version=expected_version,
        known_groups=known_groups,
    )


@transaction.atomic
def do_delete_policy(actor: Any, policy: Policy) -> None:
    policy = Policy.objects.select_for_update().get(pk=policy.pk)
    users = sorted(policy.connections.values_list("name", flat=True))
    if users:
        raise PolicyInUse(f"policy {policy.name!r} is used by connection(s) {', '.join(users)}")
    record(actor, "policy.delete", policy, before=policy_snapshot(policy))
    policy.delete()
