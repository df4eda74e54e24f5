"""The ``masking:`` section of manage.py apply / export."""

from __future__ import annotations

import pytest
import yaml

from audit.models import AuditRecord
from gateway.declarative.export import export_yaml
from gateway.declarative.loader import ConfigError
from gateway.declarative.plan import apply_config
from gateway.tests.dbdump import dump_database
from policies.models import MaskingBinding, MaskingPolicy

pytestmark = pytest.mark.django_db

BASE = """
groups: [{name: agents}, {name: fraud-team}]
connections:
  - {name: shop, kind: postgres, host: 127.0.0.1, database: shop, username: app, groups: [agents]}
"""

MASKING = """
masking:
  - name: pii
    description: personal data
    connections: [shop]
    default_method: hash
    columns:
      - {match: public.users.email, method: hash, entity: email}
      - {match: "*.ssn", method: redact}
  - name: fraud
    groups:
      - {group: fraud-team, connections: [shop]}
    exempt:
      - {group: fraud-team, entities: [card]}
"""


def test_apply_creates_masking_policies_with_their_bindings_and_export_round_trips():
    result = apply_config(BASE + MASKING, environ={})
    assert {str(c) for c in result.changes} >= {"+ masking pii", "+ masking fraud"}
    pii = MaskingPolicy.objects.get(name="pii")
    assert pii.spec["default_method"] == "hash" and pii.description == "personal data"
    assert [(b.connection.name, b.group) for b in MaskingBinding.objects.filter(masking_policy=pii)] == [
        ("shop", None)
    ]
    fraud = MaskingBinding.objects.get(masking_policy__name="fraud")
    assert (fraud.connection.name, fraud.group.name) == ("shop", "fraud-team")
    assert AuditRecord.objects.filter(action="masking_policy.create").count() == 2

    exported = yaml.safe_load(export_yaml())
    assert [m["name"] for m in exported["masking"]] == ["fraud", "pii"]
    # Applying the export changes nothing.
    assert apply_config(BASE + MASKING, environ={}).changes == []


def test_a_bad_masking_spec_is_reported_by_path_and_nothing_changes():
    apply_config(BASE, environ={})
    before = dump_database()
    bad = """
masking:
  - name: pii
    connections: [shop, nowhere]
    entities: {email: scramble, teleport: redact}
    custom:
      - {name: emp, pattern: "(a+)+$"}
"""
    with pytest.raises(ConfigError) as caught:
        apply_config(BASE + bad, environ={})
    paths = {p.path for p in caught.value.problems}
    assert "masking[0].connections" in paths  # the unknown connection
    assert any(p.startswith("masking[0].entities") for p in paths)
    assert any(p.startswith("masking[0].custom[0]") for p in paths)
    assert dump_database() == before


def test_two_policies_claiming_the_same_scope_are_refused():
    twice = """
masking:
  - {name: a, connections: [shop]}
  - {name: b, connections: [shop]}
"""
    with pytest.raises(ConfigError) as caught:
        apply_config(BASE + twice, environ={})
    assert any("already has a masking policy for every agent" in p.message for p in caught.value.problems)
