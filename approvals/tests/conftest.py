from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def eager_celery():  # type: ignore[no-untyped-def]
    """Celery tasks run in the test's own thread (a test that needs a real worker says so)."""
    from console.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def fast_passwords(request, settings):  # type: ignore[no-untyped-def]
    # The personas' passwords cost most of a test's set-up otherwise. Browser tests log in
    # to a separate console process, which must be able to check them: they keep the default.
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _close_approvals_db_threads():  # type: ignore[no-untyped-def]
    yield
    from approvals.gateway import close_db_threads

    # Their connections must be closed before pytest-django flushes or drops the database.
    close_db_threads()


@pytest.fixture
def world(db, bob):  # type: ignore[no-untyped-def]
    from approvals.tests.factories import make_world

    return make_world()
