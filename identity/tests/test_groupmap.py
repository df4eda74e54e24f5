import pytest

from identity.groupmap import (
    GroupMapping,
    claim_values,
    normalise_group_map,
    parse_group_map,
    plan_group_sync,
)

ROLES = frozenset({"admins", "reviewers", "auditors"})


def test_a_map_is_parsed_and_one_idp_group_may_map_to_several():
    assert parse_group_map(["eng-sre=dba", " eng-sre = oncall ", "ops=admins"]) == {
        "eng-sre": frozenset({"dba", "oncall"}),
        "ops": frozenset({"admins"}),
    }


@pytest.mark.parametrize("entry", ["eng-sre", "=dba", "eng-sre=", " = "])
def test_a_malformed_entry_is_refused_by_name(entry):
    with pytest.raises(ValueError, match="idp-group=airlock-group"):
        parse_group_map(["ok=fine", entry])


def test_settings_written_by_hand_accept_a_name_or_a_list():
    assert normalise_group_map({"a": "x", "b": ["y", "z"]}) == {
        "a": frozenset({"x"}),
        "b": frozenset({"y", "z"}),
    }
    with pytest.raises(ValueError):
        normalise_group_map({"a": [""]})


@pytest.mark.parametrize(
    ("claims", "claim", "expected"),
    [
        ({"groups": ["a", "b"]}, "groups", ["a", "b"]),
        ({"groups": "a"}, "groups", ["a"]),
        ({}, "groups", []),
        ({"groups": None}, "groups", []),
        ({"groups": [1, 2]}, "groups", None),
        ({"groups": {"a": 1}}, "groups", None),
        ({"realm_access": {"roles": ["r"]}}, "realm_access.roles", ["r"]),
        ({"realm_access": ["r"]}, "realm_access.roles", []),
        ({"https://example.com/groups": ["u"]}, "https://example.com/groups", ["u"]),
    ],
)
def test_claim_values(claims, claim, expected):
    assert claim_values(claims, claim) == expected


def test_only_mapping_targets_are_managed_without_passthrough():
    mapping = GroupMapping({"eng-dba": frozenset({"dba"})}, role_groups=ROLES)
    change = plan_group_sync({"dba", "qa"}, mapping.map_groups([], existing={"qa"}), mapping)
    assert change.add == frozenset()
    assert change.remove == {"dba"}  # qa was given by hand and is not the IdP's to take


def test_passthrough_manages_every_group_and_only_grants_existing_non_role_groups():
    mapping = GroupMapping({"ops": frozenset({"admins"})}, passthrough=True, role_groups=ROLES)
    desired = mapping.map_groups(["qa", "admins", "ghost", "ops"], existing={"qa", "admins"})
    assert desired == {"qa", "admins"}  # admins through the explicit "ops" entry only
    assert mapping.map_groups(["admins"], existing={"admins"}) == frozenset()
    change = plan_group_sync({"by-hand", "qa"}, desired, mapping)
    assert change.add == {"admins"}
    assert change.remove == {"by-hand"}


def test_no_change_is_falsy():
    mapping = GroupMapping({"a": frozenset({"x"})})
    assert not plan_group_sync({"x", "y"}, {"x"}, mapping)
