"""The embedded default (SQLite, in-memory channel layer): find, replay and export sessions."""

from __future__ import annotations

import pytest

from recordings.tests.embedded import embedded, script_result

SCRIPT = """
import asyncio, json, django
django.setup()
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from identity.models import User
from recordings import export, keys
from recordings.tests.factories import approval_events, record_session, statement_events, terminal_events
from recordings.writer import shutdown_writer

async def main():
    a = await record_session(statement_events(2))
    b = await record_session(approval_events("bob"))
    c = await record_session(terminal_events(), protocol="ssh", connection_name="web-1")
    return [str(r.session_id) for r in (a, b, c)]

ids = asyncio.run(asyncio.wait_for(main(), 60))
shutdown_writer()
carol = User.objects.create_user("carol")
carol.groups.add(Group.objects.get_or_create(name=settings.AIRLOCK_ROLE_GROUPS["auditor"])[0])
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(carol)
def listed(**params):
    html = client.get(reverse("recordings:session_list"), params).content.decode()
    return [i for i in ids if i in html]
events = client.get(reverse("recordings:session_events", args=[ids[1]])).json()
lines = b"".join(client.get(reverse("recordings:export_jsonl", args=[ids[0]])).streaming_content).splitlines()
public = keys.load_public_key(client.get(reverse("recordings:public_key")).content)
from recordings.chain import key_id
print(json.dumps({
    "ids": ids,
    "invo": listed(q="invo"),
    "delete": listed(q="DELETE"),
    "srv": listed(q="srv"),
    "nothing": listed(q="customers"),
    "ssh": listed(protocol="ssh"),
    "kinds": [e["kind"] for e in events["events"]],
    "integrity": client.get(reverse("recordings:session_integrity", args=[ids[2]])).json()["summary"],
    "export_ok": export.verify_lines(lines, {key_id(public): public}).ok,
    "cast": client.get(reverse("recordings:export_cast", args=[ids[2]])).status_code,
}))
"""


@pytest.mark.timeout(120)
def test_the_embedded_default_finds_replays_and_exports_sessions(tmp_path):
    result = script_result(embedded(tmp_path), SCRIPT)
    invoices, deletes, shell = result["ids"]
    assert result["invo"] == [invoices, deletes]
    assert result["delete"] == [deletes]
    assert result["srv"] == [shell]
    assert result["nothing"] == []
    assert result["ssh"] == [shell]
    assert result["kinds"] == ["session_start", "statement", "decision", "approval", "result", "session_end"]
    assert result["integrity"] == "chain verified, seal valid"
    assert result["export_ok"] is True
    assert result["cast"] == 200
