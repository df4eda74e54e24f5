"""Airlock settings, read from the environment.

With nothing set, Airlock runs on an embedded default (SQLite, an in-process channel
layer, Celery on a filesystem broker) for trying it out on one machine. Setting
``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` switches to the production shape.
See docs/configuration.md for every variable.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from console.envconfig import (
    env_bool,
    env_int,
    env_list,
    env_secret,
    env_str,
    env_url,
    persistent_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("AIRLOCK_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("AIRLOCK_DEBUG", False)
SECRET_KEY = env_secret("AIRLOCK_SECRET_KEY") or persistent_secret(
    DATA_DIR / "django-secret-key", lambda: secrets.token_urlsafe(50)
)
ALLOWED_HOSTS = env_list("AIRLOCK_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("AIRLOCK_CSRF_TRUSTED_ORIGINS", [])
# The public URL of the console, used in links sent to agents and reviewers.
AIRLOCK_PUBLIC_URL = env_str("AIRLOCK_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "audit",
    "identity",
    "policies",
    "recordings",
    "approvals",
    "gateway",
    "console",
]

# Django's own middleware, called on the event loop where a hook does no I/O
# (console/middleware.py says why and when not).
MIDDLEWARE = [
    "console.middleware.SecurityMiddleware",
    "console.middleware.WhiteNoiseMiddleware",  # WhiteNoise, async-capable (console/middleware.py)
    "console.middleware.SessionMiddleware",
    "console.middleware.CommonMiddleware",
    "console.middleware.CsrfViewMiddleware",
    "console.middleware.AuthenticationMiddleware",
    "console.middleware.MessageMiddleware",
    "console.middleware.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]
# Django's presence checks for its middleware look for its dotted paths; console/checks.py
# checks the subclasses above in their place (airlock.W002-W004).
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.navigation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if DATABASE_URL:
    try:
        _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("AIRLOCK_DB_CONN_MAX_AGE", 60))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    _db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "airlock.sqlite3"),
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
# The console's web process (console/asgi.py sets AIRLOCK_DB_POOL=1 before loading this):
# Django runs each request's synchronous code in a thread of its own (asgiref's
# ThreadSensitiveContext), and a database connection belongs to its thread, so without a
# pool every request opened a new PostgreSQL connection, whatever CONN_MAX_AGE says
# (docs/performance.md: 10-15 ms of each approve request). A psycopg pool hands each
# request's thread an open connection. Other processes (gateway, Celery) keep their
# threads, and their connections with them (CONN_MAX_AGE).
if (
    DATABASE_URL
    and _db.get("ENGINE") == "django.db.backends.postgresql"
    and env_bool("AIRLOCK_DB_POOL", False)
):
    _db["CONN_MAX_AGE"] = 0  # Django's pool replaces persistent connections
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("AIRLOCK_DB_POOL_MIN", 2, minimum=0),
        "max_size": env_int("AIRLOCK_DB_POOL_MAX", 20, minimum=1),
        "timeout": env_int("AIRLOCK_DB_POOL_TIMEOUT_SECONDS", 10, minimum=1),
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_EMBEDDED = not DATABASE_URL

# --- Redis: channel layer, Celery broker ----------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, which cuts the channel
            # layer's blocking receive (BZPOPMIN, 5 s server-side) and closes every idle
            # websocket: the read timeout must outlast it.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
                "prefix": env_str("AIRLOCK_CHANNEL_PREFIX", "airlock"),
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # A filesystem broker: worker and producers share a folder, no server needed.
    _celery_dir = DATA_DIR / "celery"
    for _sub in ("queue", "processed"):
        (_celery_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "processed_folder": str(_celery_dir / "processed"),
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("AIRLOCK_CELERY_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict] = {}

# --- Identity ---------------------------------------------------------------------
AUTH_USER_MODEL = "identity.User"
# Django's and allauth's backends, reading a person's roles with the person
# (identity/backends.py).
AUTHENTICATION_BACKENDS = [
    "identity.backends.ModelBackend",
    "identity.backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
# People are created by admins or by OIDC login, never by open sign-up.
ACCOUNT_ADAPTER = "identity.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "identity.adapters.SocialAccountAdapter"
SOCIALACCOUNT_ONLY = False
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_STORE_TOKENS = False

# Role groups: membership in these Airlock groups grants the role. They are mapped from
# the identity provider like every other group.
AIRLOCK_ROLE_GROUPS = {
    "admin": env_str("AIRLOCK_ADMIN_GROUP", "admins"),
    "reviewer": env_str("AIRLOCK_REVIEWER_GROUP", "reviewers"),
    "auditor": env_str("AIRLOCK_AUDITOR_GROUP", "auditors"),
}

# OpenID Connect login for people.
OIDC_ISSUER = env_str("AIRLOCK_OIDC_ISSUER")
OIDC_CLIENT_ID = env_str("AIRLOCK_OIDC_CLIENT_ID")
OIDC_CLIENT_SECRET = env_secret("AIRLOCK_OIDC_CLIENT_SECRET")
OIDC_PROVIDER_NAME = env_str("AIRLOCK_OIDC_NAME", "Single sign-on")
OIDC_GROUPS_CLAIM = env_str("AIRLOCK_OIDC_GROUPS_CLAIM", "groups")


# "idp-group=airlock-group,..." ; IdP groups not listed map to nothing unless
# AIRLOCK_OIDC_GROUPS_PASSTHROUGH is on, in which case they map to an existing Airlock
# group of the same name (never a role group). See docs/identity.md.
def _group_map(name: str) -> dict[str, frozenset[str]]:
    from identity.groupmap import parse_group_map

    try:
        return parse_group_map(env_list(name))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


OIDC_GROUP_MAP = _group_map("AIRLOCK_OIDC_GROUP_MAP")
OIDC_GROUPS_PASSTHROUGH = env_bool("AIRLOCK_OIDC_GROUPS_PASSTHROUGH", False)
SOCIALACCOUNT_PROVIDERS: dict[str, dict] = {}
if OIDC_ISSUER:
    if not OIDC_CLIENT_ID:
        raise ImproperlyConfigured("AIRLOCK_OIDC_CLIENT_ID: required when AIRLOCK_OIDC_ISSUER is set")
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": [
            {
                "provider_id": "oidc",
                "name": OIDC_PROVIDER_NAME,
                "client_id": OIDC_CLIENT_ID,
                "secret": OIDC_CLIENT_SECRET,
                "settings": {"server_url": OIDC_ISSUER, "token_auth_method": "client_secret_post"},
            }
        ],
    }

# OIDC-issued JWTs accepted from agents (client-credentials service accounts).
AIRLOCK_JWT_ISSUERS = (
    [
        {
            "issuer": env_str("AIRLOCK_AGENT_JWT_ISSUER"),
            "jwks_url": env_str("AIRLOCK_AGENT_JWT_JWKS_URL"),
            "audience": env_str("AIRLOCK_AGENT_JWT_AUDIENCE", "airlock"),
            "groups_claim": env_str("AIRLOCK_AGENT_JWT_GROUPS_CLAIM", "groups"),
            "subject_claim": env_str("AIRLOCK_AGENT_JWT_SUBJECT_CLAIM", "sub"),
            "group_map": _group_map("AIRLOCK_AGENT_JWT_GROUP_MAP"),
            "groups_passthrough": env_bool("AIRLOCK_AGENT_JWT_GROUPS_PASSTHROUGH", False),
            "match_agent_name": env_bool("AIRLOCK_AGENT_JWT_MATCH_AGENT_NAME", False),
            "algorithms": env_list("AIRLOCK_AGENT_JWT_ALGORITHMS", []),
            "leeway_seconds": env_int("AIRLOCK_AGENT_JWT_LEEWAY_SECONDS", 30, minimum=0),
            "jwks_cache_seconds": env_int("AIRLOCK_AGENT_JWT_JWKS_CACHE_SECONDS", 300, minimum=1),
            "jwks_min_refresh_seconds": env_int("AIRLOCK_AGENT_JWT_JWKS_MIN_REFRESH_SECONDS", 30, minimum=0),
        }
    ]
    if env_str("AIRLOCK_AGENT_JWT_ISSUER")
    else []
)

# --- Secrets at rest ----------------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).
AIRLOCK_SECRET_KEYS = [
    key.strip() for key in env_secret("AIRLOCK_SECRET_KEYS").split(",") if key.strip()
] or [persistent_secret(DATA_DIR / "secret-encryption-key", lambda: Fernet.generate_key().decode())]
for _index, _key in enumerate(AIRLOCK_SECRET_KEYS):
    try:
        Fernet(_key.encode())
    except (ValueError, TypeError):
        # The key itself is never echoed: it is a secret even when malformed.
        raise ImproperlyConfigured(
            f"AIRLOCK_SECRET_KEYS: key #{_index + 1} is not a Fernet key (32 url-safe base64-encoded "
            "bytes; make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        ) from None

# --- Gateway --------------------------------------------------------------------------
GATEWAY_POSTGRES_LISTEN = env_str("AIRLOCK_POSTGRES_LISTEN", "127.0.0.1:15432")
GATEWAY_TLS_CERT = env_str("AIRLOCK_TLS_CERT")
GATEWAY_TLS_KEY = env_str("AIRLOCK_TLS_KEY")
GATEWAY_MAX_MESSAGE_BYTES = env_int("AIRLOCK_MAX_MESSAGE_BYTES", 64 * 1024 * 1024, minimum=1024)
GATEWAY_IDLE_TIMEOUT = env_int("AIRLOCK_IDLE_TIMEOUT_SECONDS", 3600, minimum=1)
GATEWAY_SESSION_TIMEOUT = env_int("AIRLOCK_SESSION_TIMEOUT_SECONDS", 12 * 3600, minimum=1)
GATEWAY_MAX_SESSIONS = env_int("AIRLOCK_MAX_SESSIONS", 1000, minimum=1)
# Gateway processes sharing the listening ports (SO_REUSEPORT): one event loop uses one CPU.
GATEWAY_WORKERS = env_int("AIRLOCK_GATEWAY_WORKERS", 1, minimum=1)
GATEWAY_LOGIN_FAILURES_PER_MINUTE = env_int("AIRLOCK_LOGIN_FAILURES_PER_MINUTE", 10, minimum=1)
# The gateway process's young-generation garbage-collector threshold (Python's default:
# 700). Every statement allocates thousands of short-lived objects; at 700 the collector ran
# about once a statement and took a third of the gateway's CPU (docs/performance.md).
GATEWAY_GC_THRESHOLD = env_int("AIRLOCK_GATEWAY_GC_THRESHOLD", 20_000, minimum=100)
# After work, the gateway's event loop polls its sockets for this many microseconds before
# it sleeps: waking a sleeping CPU costs tens of microseconds on virtual machines
# (gateway/busypoll.py, docs/performance.md). 0: sleep at once.
GATEWAY_BUSY_POLL_US = env_int("AIRLOCK_GATEWAY_BUSY_POLL_US", 100, minimum=0)
# Polling stops while the loop waits for a CPU this share of the time or more (the machine
# is busy: a CPU that never looks idle takes no work from the others). 100: never stops.
GATEWAY_BUSY_POLL_CONTENDED_PERCENT = env_int("AIRLOCK_GATEWAY_BUSY_POLL_CONTENDED_PERCENT", 15, minimum=1)
# How often the gateway asks the database whether the policies of open sessions changed.
GATEWAY_POLICY_REFRESH_MS = env_int("AIRLOCK_POLICY_REFRESH_MS", 1000, minimum=50)
# Masking: the key of the keyed hash (`hash` method), and what a connection without a
# masking policy gets ("builtin": every built-in entity found by content is redacted; "off").
AIRLOCK_MASKING_HASH_KEY = env_secret("AIRLOCK_MASKING_HASH_KEY") or persistent_secret(
    DATA_DIR / "masking-hash-key", lambda: secrets.token_urlsafe(32)
)
if len(AIRLOCK_MASKING_HASH_KEY.encode()) < 16:
    raise ImproperlyConfigured("AIRLOCK_MASKING_HASH_KEY must be at least 16 bytes long")
AIRLOCK_MASKING_DEFAULT = env_str("AIRLOCK_MASKING_DEFAULT", "builtin")
if AIRLOCK_MASKING_DEFAULT not in ("builtin", "off"):
    raise ImproperlyConfigured('AIRLOCK_MASKING_DEFAULT must be "builtin" or "off"')

# --- Recordings -------------------------------------------------------------------
RECORDING_SIGNING_KEY_FILE = env_str(
    "AIRLOCK_RECORDING_KEY_FILE", str(DATA_DIR / "recording-signing-key.pem")
)
RECORDING_STRICT = env_bool("AIRLOCK_RECORDING_STRICT", True)
RECORDING_RESULT_ROWS = env_int("AIRLOCK_RECORDING_RESULT_ROWS", 20, minimum=0)
RECORDING_FLUSH_SECONDS = env_int("AIRLOCK_RECORDING_FLUSH_MS", 200, minimum=1) / 1000
# manage.py gateway writes recordings from a child process, off the event loop's GIL
# (recordings/writer_process.py); false: on threads of the gateway's own process.
RECORDING_WRITER_PROCESS = env_bool("AIRLOCK_RECORDING_WRITER_PROCESS", True)
RECORDING_PERSIST_TIMEOUT = env_int("AIRLOCK_RECORDING_PERSIST_TIMEOUT_SECONDS", 10, minimum=1)
# A live session's gateway says it still serves it with every written batch and, while the
# session is idle, this often (one UPDATE). A live session not heard of for
# RECORDING_ABANDONED_SECONDS lost its gateway (killed, its host gone): any gateway then
# closes it as "interrupted" and seals what was recorded (recordings.writer.close_abandoned).
RECORDING_HEARTBEAT_SECONDS = env_int("AIRLOCK_RECORDING_HEARTBEAT_SECONDS", 30, minimum=1)
RECORDING_ABANDONED_SECONDS = env_int("AIRLOCK_RECORDING_ABANDONED_SECONDS", 300, minimum=1)
if RECORDING_ABANDONED_SECONDS < 2 * RECORDING_HEARTBEAT_SECONDS + RECORDING_PERSIST_TIMEOUT:
    raise ImproperlyConfigured(
        "AIRLOCK_RECORDING_ABANDONED_SECONDS must be at least twice AIRLOCK_RECORDING_HEARTBEAT_SECONDS"
        " plus AIRLOCK_RECORDING_PERSIST_TIMEOUT_SECONDS: a live gateway's session must not be taken"
        " for abandoned"
    )
# Public keys (PEM files) of earlier signing keys, so recordings they sealed still verify.
RECORDING_VERIFY_KEY_FILES = env_list("AIRLOCK_RECORDING_VERIFY_KEY_FILES", [])
# Days a recording is kept after its session ends (0: for ever); a connection may have its
# own (recordings.ConnectionRule). Legal holds on a session or a connection stop deletion.
RECORDING_RETENTION_DAYS = env_int("AIRLOCK_RECORDING_RETENTION_DAYS", 0, minimum=0)
RECORDING_RETENTION_INTERVAL = env_int("AIRLOCK_RECORDING_RETENTION_INTERVAL_SECONDS", 3600, minimum=60)
CELERY_BEAT_SCHEDULE["recordings-retention"] = {
    "task": "recordings.tasks.apply_retention",
    "schedule": RECORDING_RETENTION_INTERVAL,
}
# A live session's page also polls the database this often, in case a channel-layer
# message is lost (or the gateway runs in another process without Redis).
RECORDING_LIVE_POLL_SECONDS = env_int("AIRLOCK_RECORDING_LIVE_POLL_MS", 2000, minimum=100) / 1000
# Each gateway process reads the termination requests of all its live sessions this often
# (one query), so a session is terminated in bounded time even when the console's
# channel-layer message cannot reach the gateway (no Redis) or is lost.
RECORDING_TERMINATE_POLL_SECONDS = env_int("AIRLOCK_RECORDING_TERMINATE_POLL_MS", 1000, minimum=100) / 1000

# --- Audit forwarding ----------------------------------------------------------------------
# Every audit record, as one JSON line, to a SIEM: http(s)://... (POST), syslog+udp://host:port
# or syslog+tcp://host:port. Sent by a Celery task after commit; never delays an action.
AUDIT_FORWARD_URL = env_url("AIRLOCK_AUDIT_FORWARD_URL", ("http", "https", "syslog+udp", "syslog+tcp"))
AUDIT_FORWARD_TOKEN = env_secret("AIRLOCK_AUDIT_FORWARD_TOKEN")  # sent as a Bearer token over HTTP
AUDIT_FORWARD_TIMEOUT = env_int("AIRLOCK_AUDIT_FORWARD_TIMEOUT_SECONDS", 5, minimum=1)

# --- Email ---------------------------------------------------------------------------
EMAIL_BACKEND = env_str("AIRLOCK_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("AIRLOCK_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("AIRLOCK_EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = env_str("AIRLOCK_EMAIL_FROM", "airlock@localhost")

# --- Web ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
# Django's database sessions, read with a statement compiled once (identity/sessions.py).
SESSION_ENGINE = "identity.sessions"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("AIRLOCK_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("AIRLOCK_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- Static files -------------------------------------------------------------------
# WhiteNoise serves the console's CSS and scripts straight from the source folders (through
# Django's finders), so `make run` and daphne need no collectstatic step. A deployment that
# runs collectstatic can set AIRLOCK_STATIC_FINDERS=false.
WHITENOISE_USE_FINDERS = env_bool("AIRLOCK_STATIC_FINDERS", True)
# WhiteNoise also looks in STATIC_ROOT and warns when it is missing: keep it present.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- All-in-one (manage.py airlock, what `make run` starts) ------------------------------
# Where daphne serves the console.
HTTP_LISTEN = env_str("AIRLOCK_HTTP_LISTEN", "127.0.0.1:8000")
# The web process's young-generation garbage-collector threshold (console/process.py).
CONSOLE_GC_THRESHOLD = env_int("AIRLOCK_CONSOLE_GC_THRESHOLD", 20_000, minimum=100)
if not REDIS_URL:
    # kombu's filesystem transport keeps its exchange tables in ./control unless told where.
    CELERY_BROKER_TRANSPORT_OPTIONS["control_folder"] = str(_celery_dir / "control")

# --- Approvals (docs/approvals.md) ------------------------------------------------------------
# A held statement waits the rule's timeout, or this default, and never longer than the cap.
APPROVALS_DEFAULT_TIMEOUT = env_int("AIRLOCK_APPROVAL_TIMEOUT_SECONDS", 600, minimum=1)
APPROVALS_MAX_TIMEOUT = env_int("AIRLOCK_APPROVAL_MAX_TIMEOUT_SECONDS", 3600, minimum=1)
# How often a waiting gateway reads the database besides listening on the channel layer.
APPROVALS_POLL_SECONDS = (
    env_int("AIRLOCK_APPROVAL_POLL_MS", 1000 if not REDIS_URL else 2000, minimum=50) / 1000
)
# A hold whose gateway has not been heard of for this long is cancelled by the sweep.
APPROVALS_WAITER_STALE = env_int("AIRLOCK_APPROVAL_WAITER_STALE_SECONDS", 60, minimum=5)
# An approved statement must start running within this time (an agent that cannot wait
# sends it again within it).
APPROVALS_CLAIM_SECONDS = env_int("AIRLOCK_APPROVAL_CLAIM_SECONDS", 3600, minimum=10)
# A run whose outcome the gateway never reports is marked failed after this long.
APPROVALS_REPORT_SECONDS = env_int("AIRLOCK_APPROVAL_REPORT_SECONDS", 24 * 3600, minimum=60)
APPROVALS_MAX_GRANT_MINUTES = env_int("AIRLOCK_APPROVAL_MAX_GRANT_MINUTES", 60, minimum=0)
APPROVALS_ESTIMATE_TIMEOUT = env_int("AIRLOCK_APPROVAL_ESTIMATE_TIMEOUT_MS", 3000, minimum=100) / 1000
APPROVALS_SWEEP_SECONDS = env_int("AIRLOCK_APPROVAL_SWEEP_SECONDS", 30, minimum=1)
# Slack-compatible incoming webhook: a secret (the URL carries the token).
APPROVALS_WEBHOOK_URL = env_secret("AIRLOCK_APPROVAL_WEBHOOK_URL")
APPROVALS_WEBHOOK_TIMEOUT = env_int("AIRLOCK_APPROVAL_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
CELERY_BEAT_SCHEDULE["approvals-sweep"] = {"task": "approvals.sweep", "schedule": APPROVALS_SWEEP_SECONDS}
TEMPLATES[0]["OPTIONS"]["context_processors"].append("approvals.context_processors.pending_approvals")
