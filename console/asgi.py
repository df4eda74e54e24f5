"""ASGI entry point: HTTP pages and API through Django, websockets through Channels."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
# Each request runs in a thread of its own: its database connection comes from a pool
# (console/settings.py says why). Read when the settings load, here; taken out again so
# that processes this one starts (none in production) keep their own default.
_POOL_DEFAULT = "AIRLOCK_DB_POOL" not in os.environ
if _POOL_DEFAULT:
    os.environ["AIRLOCK_DB_POOL"] = "1"
django.setup(set_prefix=False)  # as get_asgi_application() does

from console.handlers import ASGIHandler, skip_request_start_housekeeping  # noqa: E402

# Django's handler, each request's thread taken from a pool, with nothing to tidy on that
# thread when a request starts (console/handlers.py).
django_asgi_app = ASGIHandler()
skip_request_start_housekeeping()
if _POOL_DEFAULT:
    del os.environ["AIRLOCK_DB_POOL"]

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from console.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

from console import process  # noqa: E402

# Under daphne: a short GIL switch interval, the loaded heap frozen, a higher threshold for
# the garbage collector (console/process.py says why).
process.prepare()
