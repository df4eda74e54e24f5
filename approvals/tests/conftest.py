from __future__ import annotations

import pytest

# The PostgreSQL gateway's fixtures, for the tests that go through it.
from gateway.tests.postgres.conftest import (  # noqa: F401
    billing_bot,
    gateway_factory,
    make_connection,
    private_pg,
)


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


@pytest.fixture
def held_gw(gateway_factory, private_pg, bob, settings):  # noqa: F811 (fixtures imported above)
    """The gateway on connection "shop" whose policy sends writes to the dba reviewers."""
    from approvals.tests.factories import reviewer
    from gateway.models import Connection
    from policies.actions import do_save_policy

    settings.APPROVALS_POLL_SECONDS = 0.5
    reviewer("erin")
    from approvals.tests.gateway_world import SPEC

    policy = do_save_policy("test", "agents", SPEC)
    Connection.objects.filter(name="shop").update(policy=policy)
    with private_pg.admin("shop") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        conn.execute("TRUNCATE orders")
        conn.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 20) g")
        conn.execute("GRANT ALL ON orders TO scram_user")
        conn.execute("ANALYZE orders")
    from gateway.postgres.server import default_decision_point

    env = gateway_factory(decision_point_factory=default_decision_point)
    yield env
    from approvals.gateway import close_db_threads

    close_db_threads()
