"""The console's session store reads what Django's database store reads, in one statement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore as DjangoStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from identity.sessions import SessionStore


@pytest.mark.django_db
def test_a_session_saved_by_either_store_loads_the_same_in_one_statement(django_assert_num_queries):
    for writer in (DjangoStore, SessionStore):
        saved = writer()
        saved["_auth_user_id"] = "42"
        saved["note"] = {"nested": ["é", 1.5]}
        saved.create()
        with django_assert_num_queries(1):
            loaded = dict(SessionStore(saved.session_key).load())
        assert (
            loaded
            == dict(DjangoStore(saved.session_key).load())
            == {
                "_auth_user_id": "42",
                "note": {"nested": ["é", 1.5]},
            }
        )


@pytest.mark.django_db
def test_an_expired_or_unknown_session_loads_empty_and_forgets_its_key():
    old = SessionStore()
    old["_auth_user_id"] = "7"
    old.create()
    Session.objects.filter(session_key=old.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    for key in (old.session_key, "no-such-session-key-0000", "' OR 1=1 --x"):
        store = SessionStore(key)
        assert store.load() == {}
        assert store.session_key is None
        assert DjangoStore(key).load() == {}


@pytest.mark.django_db
def test_the_client_logs_in_and_out_with_this_store(client, bob):
    from django.conf import settings

    assert settings.SESSION_ENGINE == "identity.sessions"
    client.force_login(bob)
    assert client.get("/api/approvals/?status=pending").status_code == 200
    client.logout()
    assert client.get("/api/approvals/?status=pending").status_code == 401


@pytest.mark.django_db
def test_the_async_read_gives_what_the_sync_read_gives():
    from asgiref.sync import async_to_sync

    saved = SessionStore()
    saved["x"] = "y"
    saved.create()
    # async_to_sync here, sync_to_async in the store: the read runs on this thread's connection.
    assert async_to_sync(SessionStore(saved.session_key).aload)() == {"x": "y"}
    assert async_to_sync(SessionStore("missing-session-key-1").aload)() == {}
