import pytest
from django.core.exceptions import ValidationError

from audit.models import AuditRecord
from gateway.actions import do_create_connection
from policies.actions import PolicyInUse, do_delete_policy, do_rollback_policy, do_save_policy
from policies.models import Policy, PolicyVersion

pytestmark = pytest.mark.django_db

READS = {
    "default": "deny",
    "rules": [{"name": "reads", "match": {"operations": ["read"]}, "action": "allow"}],
}
WRITES = {
    "default": "deny",
    "rules": [
        {"name": "reads", "match": {"operations": ["read"]}, "action": "allow"},
        {"name": "writes", "match": {"operations": ["write"]}, "action": "review", "reviewers": ["dba"]},
    ],
}


def test_saving_a_new_policy_creates_version_one_with_its_author(alice):
    policy = do_save_policy(alice, "agents-default", READS, description="d", comment="first")

    assert (policy.version, policy.spec, policy.description) == (1, READS, "d")
    version = PolicyVersion.objects.get(policy=policy)
    assert (version.number, version.spec, version.author, version.comment) == (1, READS, alice, "first")
    record = AuditRecord.objects.get(action="policy.create")
    assert record.actor == "alice" and record.after["spec"] == READS and record.after["version"] == 1


def test_saving_the_same_spec_again_writes_nothing(alice):
    do_save_policy(alice, "p", READS)
    audit = AuditRecord.objects.count()
    # Same content, keys in another order: the same policy.
    reordered = {"rules": [dict(reversed(list(READS["rules"][0].items())))], "default": "deny"}

    policy = do_save_policy(alice, "p", reordered)

    assert policy.version == 1
    assert PolicyVersion.objects.count() == 1
    assert AuditRecord.objects.count() == audit


def test_a_different_spec_bumps_the_version_and_audits_before_and_after(alice):
    do_save_policy("apply", "p", READS)
    policy = do_save_policy(alice, "p", WRITES, comment="writes need review")

    assert policy.version == 2
    assert list(policy.versions.values_list("number", "comment")) == [(2, "writes need review"), (1, "")]
    record = AuditRecord.objects.get(action="policy.update")
    assert record.before["spec"] == READS and record.before["version"] == 1
    assert record.after["spec"] == WRITES and record.after["version"] == 2
    assert PolicyVersion.objects.get(number=1).author is None  # "apply" is not a person


def test_a_description_change_alone_is_audited_without_a_new_version(alice):
    do_save_policy(alice, "p", READS, description="old")
    policy = do_save_policy(alice, "p", READS, description="new")
    assert policy.version == 1 and policy.description == "new"
    assert AuditRecord.objects.filter(action="policy.update").count() == 1


def test_rollback_makes_an_old_spec_current_as_a_new_version(alice):
    do_save_policy(alice, "p", READS)
    policy = do_save_policy(alice, "p", WRITES)

    policy = do_rollback_policy(alice, policy, 1)

    assert policy.version == 3 and policy.spec == READS
    assert PolicyVersion.objects.get(policy=policy, number=3).comment == "rollback to version 1"
    # Rolling back to what is already current changes nothing.
    assert do_rollback_policy(alice, policy, 3).version == 3
    assert PolicyVersion.objects.count() == 3


def test_rollback_to_a_version_that_does_not_exist_is_refused(alice):
    policy = do_save_policy(alice, "p", READS)
    with pytest.raises(ValidationError, match="policy 'p' has no version 7"):
        do_rollback_policy(alice, policy, 7)


def test_an_invalid_spec_is_refused_with_every_problem_by_path(alice):
    bad = {"default": "maybe", "rules": [{"name": "x", "action": "explode"}, {"action": "review"}]}
    with pytest.raises(ValidationError) as caught:
        do_save_policy(alice, "p", bad)
    messages = caught.value.messages
    assert "spec.default: must be one of allow, deny, review" in messages
    assert any(m.startswith("spec.rules[0].action:") for m in messages)
    assert any(m.startswith("spec.rules[1].name:") for m in messages)
    assert any(m.startswith("spec.rules[1].reviewers:") for m in messages)
    assert not Policy.objects.exists() and not AuditRecord.objects.exists()


def test_a_policy_in_use_cannot_be_deleted(alice):
    policy = do_save_policy(alice, "p", READS)
    do_create_connection(alice, name="shop", kind="postgres", host="db", policy=policy)
    with pytest.raises(PolicyInUse, match="policy 'p' is used by connection\\(s\\) shop"):
        do_delete_policy(alice, policy)
    assert Policy.objects.filter(name="p").exists()


def test_deleting_a_policy_removes_its_versions_and_keeps_an_audit_record(alice):
    policy = do_save_policy(alice, "p", READS)
    do_save_policy(alice, "p", WRITES)
    do_delete_policy(alice, policy)
    assert not Policy.objects.exists() and not PolicyVersion.objects.exists()
    record = AuditRecord.objects.get(action="policy.delete")
    assert record.before["spec"] == WRITES and record.before["version"] == 2


# --- the editor's guards: the version a change was made against, and reviewer groups -----


def test_a_save_against_an_older_version_is_refused_and_writes_nothing(alice):
    from policies.actions import PolicyChanged

    do_save_policy(alice, "p", READS)
    do_save_policy(alice, "p", WRITES)
    audit = AuditRecord.objects.count()

    with pytest.raises(PolicyChanged, match="now at version 2, you edited version 1"):
        do_save_policy(alice, "p", {"default": "allow"}, expected_version=1)

    policy = Policy.objects.get(name="p")
    assert (policy.version, policy.spec) == (2, WRITES)
    assert AuditRecord.objects.count() == audit
    assert do_save_policy(alice, "p", READS, expected_version=2).version == 3


def test_expected_version_zero_means_the_policy_must_not_exist_yet(alice):
    from policies.actions import PolicyChanged

    assert do_save_policy(alice, "p", READS, expected_version=0).version == 1
    with pytest.raises(PolicyChanged, match="a policy named 'p' already exists"):
        do_save_policy(alice, "p", WRITES, expected_version=0)
    with pytest.raises(PolicyChanged, match="no longer exists"):
        do_save_policy(alice, "gone", WRITES, expected_version=4)
    assert not Policy.objects.filter(name="gone").exists()


def test_with_known_groups_a_review_nobody_can_approve_is_refused(alice):
    with pytest.raises(ValidationError) as caught:
        do_save_policy(alice, "p", WRITES, known_groups={"agents"})

    assert caught.value.messages == [
        "spec.rules[1].reviewers[0]: reviewer group 'dba' does not exist or has no members"
    ]
    assert not Policy.objects.exists()
    assert do_save_policy(alice, "p", WRITES, known_groups={"dba"}).version == 1


def test_a_rollback_checks_the_version_and_the_reviewer_groups(alice):
    from policies.actions import PolicyChanged

    policy = do_save_policy(alice, "p", WRITES)
    do_save_policy(alice, "p", READS)

    with pytest.raises(PolicyChanged):
        do_rollback_policy(alice, policy, 1, expected_version=1)
    with pytest.raises(ValidationError, match="reviewer group 'dba'"):
        do_rollback_policy(alice, policy, 1, expected_version=2, known_groups=set())
    restored = do_rollback_policy(alice, policy, 1, expected_version=2, known_groups={"dba"})
    assert (restored.version, restored.spec) == (3, WRITES)


@pytest.mark.django_db(transaction=True)
def test_two_people_creating_the_same_policy_at_once_get_one_policy_and_a_clear_refusal():
    """The second insert waits on the first one's row; when it commits, the second is refused."""
    import threading
    import time

    from django.db import connection, connections, transaction

    from policies.actions import PolicyChanged

    first_inserted = threading.Event()
    release_first = threading.Event()
    outcome = {}

    def first():
        try:
            with transaction.atomic():
                do_save_policy(None, "p", READS, expected_version=0)
                first_inserted.set()
                assert release_first.wait(30)
        finally:
            connections.close_all()

    def second():
        try:
            do_save_policy(None, "p", WRITES, expected_version=0)
            outcome["second"] = "saved"
        except PolicyChanged as exc:
            outcome["second"] = str(exc)
        finally:
            connections.close_all()

    a = threading.Thread(target=first)
    a.start()
    assert first_inserted.wait(30)
    b = threading.Thread(target=second)
    b.start()
    # Wait until the second insert is blocked on the first one's uncommitted row.
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO \"policies_policy\"%%'"
            )
            if cursor.fetchone()[0] == 1:
                break
            assert time.monotonic() < deadline, "the second insert never waited for the first"
            time.sleep(0.02)
    release_first.set()
    a.join(30)
    b.join(30)

    assert outcome["second"] == "a policy named 'p' already exists"
    policy = Policy.objects.get(name="p")
    assert (policy.version, policy.spec) == (1, READS)
    assert PolicyVersion.objects.count() == 1
