"""``explain_text``: what was masked, where, by which detector, and how."""

from __future__ import annotations

from masking import compile_policy
from masking.explain import explain_text

KEY = b"k" * 16


def test_each_value_is_explained_at_its_offsets_without_the_secret():
    policy = compile_policy({"entities": {"email": "hash", "card": "partial", "ip": "redact"}}, hash_key=KEY)
    text = "from bob@example.com at 10.0.0.1, card 4111 1111 1111 1111."
    explanation = explain_text(policy, text)
    assert explanation.masked == policy.mask_text(text)[0]
    assert explanation.counts == {"email": 1, "ip": 1, "card": 1}
    spans = [(f.entity, text[f.start : f.end], f.method) for f in explanation.findings]
    assert spans == [
        ("email", "bob@example.com", "hash"),
        ("ip", "10.0.0.1", "redact"),
        ("card", "4111 1111 1111 1111", "partial"),
    ]
    assert [f.placeholder for f in explanation.findings][2] == "[CARD:****1111]"
    for finding in explanation.findings:
        assert "bob@" not in repr(finding) and "4111 1111" not in repr(finding)


def test_the_detector_is_named_and_custom_entities_are_told_apart():
    policy = compile_policy(
        {
            "entities": ["github_token", "password"],
            "custom": [{"name": "codename", "deny_list": ["Falcon"]}],
        }
    )
    text = "token ghp_" + "a1B2" * 9 + " for Falcon, postgres://u:hunter2hunter2@db/x"
    explanation = explain_text(policy, text)
    detectors = {f.entity: f.detector for f in explanation.findings}
    assert detectors["codename"] == "custom entity"
    assert detectors["github_token"] and detectors["password"]
    assert all(f.start is not None for f in explanation.findings)
    assert [text[f.start : f.end] for f in explanation.findings if f.entity == "codename"] == ["Falcon"]


def test_placeholders_already_in_the_text_are_not_findings():
    policy = compile_policy({})
    text = "[EMAIL] then bob@example.com"
    explanation = explain_text(policy, text)
    assert explanation.masked == "[EMAIL] then [EMAIL]"
    assert [(f.start, f.end) for f in explanation.findings] == [(13, 28)]


def test_the_same_value_twice_is_two_findings_and_exemptions_apply():
    policy = compile_policy({"exempt": [{"group": "fraud", "entities": ["card"], "reason": "fraud checks"}]})
    text = "4111 1111 1111 1111 and 4111 1111 1111 1111"
    assert [(f.start, f.end) for f in explain_text(policy, text).findings] == [(0, 19), (24, 43)]
    exempted = explain_text(policy.for_groups(["fraud"]), text)
    assert exempted.masked == text and exempted.findings == []


def test_clean_text_has_no_findings():
    explanation = explain_text(compile_policy({}), "nothing to see here")
    assert explanation.masked == "nothing to see here" and explanation.findings == [] and explanation.aligned
