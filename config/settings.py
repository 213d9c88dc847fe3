"""One env-driven settings module (see README "Configuration").

No env at all: SQLite, in-memory channel layer, eager Celery, local-memory cache.
DATABASE_URL / REDIS_URL switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str, redis_url_for_test_worker

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
TESTING = "pytest" in sys.modules or (len(sys.argv) > 1 and sys.argv[1] == "test")
# Build-time commands that neither serve nor read secrets may run without them (a Docker build,
# a migrations check in CI); everything else refuses to start without SECRET_KEY / encryption keys.
BUILD_COMMAND = (
    len(sys.argv) > 1 and sys.argv[0].endswith("manage.py") and sys.argv[1] in {"makemigrations", "collectstatic"}
)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING or BUILD_COMMAND):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string (or DEBUG=1 for local development)."
        )
    SECRET_KEY = "dev-insecure-switchboard-secret-key-do-not-use-in-production"  # noqa: S105

# Fernet keys for secrets at rest: the first encrypts, all decrypt (rotation).
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
if not FIELD_ENCRYPTION_KEYS:
    if not (DEBUG or TESTING or BUILD_COMMAND):
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS is not set. Generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )
    # Development only: a key derived from SECRET_KEY so `make run` works with no env.
    FIELD_ENCRYPTION_KEYS = [base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()]

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG or TESTING else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Agencies' own domains (licenses.CustomDomain, config/hosts.py): the host they CNAME to, checked in DNS
# by the admin's "Check DNS" action, and how often each process reloads the verified hosts.
CUSTOM_DOMAIN_TARGET = env_str("CUSTOM_DOMAIN_TARGET", "")
CUSTOM_DOMAIN_REFRESH_SECONDS = env_int("CUSTOM_DOMAIN_REFRESH_SECONDS", 30, minimum=1)
# Beat re-checks DNS-verified domains this often; one failing every re-check for the grace period stops being served.
CUSTOM_DOMAIN_RECHECK_SECONDS = env_int("CUSTOM_DOMAIN_RECHECK_SECONDS", 3600, minimum=60)
CUSTOM_DOMAIN_RECHECK_GRACE_HOURS = env_int("CUSTOM_DOMAIN_RECHECK_GRACE_HOURS", 72, minimum=1)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "channels",
    "axes",
    "licenses",
    "widgets",
    "chatkit",
    "realtime",
]

MIDDLEWARE = [
    # First: agencies' verified custom domains pass the host check (config/hosts.py).
    "config.hosts.CustomHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.static_files.WhiteNoiseMiddleware",  # WhiteNoise, async-capable (see the module)
    "config.middleware.HostileInputMiddleware",
    "widgets.middleware.LoaderMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Django's, with trusted origins that follow the verified custom domains (config/hosts.py).
    "config.hosts.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as its docs require: turns a lockout during authenticate() into config.auth.lockout_response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    # Under ASGI every request's sync code runs in a fresh thread, so persistent per-thread
    # connections pile up (one per thread); psycopg's pool shares a bounded set instead.
    DB_POOL = env_bool("DB_POOL", not TESTING)
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=0 if DB_POOL else env_int("DB_CONN_MAX_AGE", 0, minimum=0)
        )
    }
    # A connection PostgreSQL dropped (restart, failover, terminated backend) is found out before a
    # request gets it, instead of answering 500 (issue 11.9): CONN_HEALTH_CHECKS for persistent
    # connections, and (Django passes it on) psycopg_pool's check_connection on every pool checkout.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DB_POOL and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 2, minimum=0),
            "max_size": env_int("DB_POOL_MAX_SIZE", 20, minimum=1),
            "timeout": env_int("DB_POOL_TIMEOUT", 10, minimum=1),
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "db.sqlite3",
            # IMMEDIATE: a write transaction takes the lock up front instead of failing with
            # "database is locked" when it upgrades from a read under concurrent requests.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

REDIS_URL = env_str("REDIS_URL")
if TESTING and REDIS_URL and os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest-xdist workers: each gets a Redis database of its own (gwN: REDIS_URL's db + N),
    # exported so the processes a test starts with this environment (the voice agent) use the same one.
    REDIS_URL = os.environ["REDIS_URL"] = redis_url_for_test_worker(REDIS_URL, os.environ["PYTEST_XDIST_WORKER"])
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    # One connection pool per process for the cache and everything else (licenses/redis.py).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"pool_class": "licenses.redis.SharedConnectionPool"},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    CELERY_TASK_ALWAYS_EAGER = True

# The shared Redis pool (licenses/redis.py): connections per process, seconds to wait for a free one,
# and the connect/read timeout (short: an outage must fail fast, not hold requests).
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 50, minimum=1)
REDIS_POOL_TIMEOUT = env_float("REDIS_POOL_TIMEOUT", 2.0)
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 1.0)

CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 120, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - max(5, CELERY_TASK_TIME_LIMIT // 4)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
# A broker outage is waited out, at start-up too, never a reason for the worker to exit.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Bot health (widgets/health.py): how often beat scans, the window it looks at, and when a widget is down
# (a failure rate over at least N visitor turns, or the last K turns all failed).
HEALTH_CHECK_SECONDS = env_int("HEALTH_CHECK_SECONDS", 60, minimum=10)
HEALTH_WINDOW_MINUTES = env_int("HEALTH_WINDOW_MINUTES", 15, minimum=1)
HEALTH_MIN_ATTEMPTS = env_int("HEALTH_MIN_ATTEMPTS", 5, minimum=1)
HEALTH_FAILURE_RATE = env_int("HEALTH_FAILURE_RATE_PERCENT", 50, minimum=1) / 100
HEALTH_CONSECUTIVE_FAILURES = env_int("HEALTH_CONSECUTIVE_FAILURES", 3, minimum=1)

# Analytics (widgets/analytics.py): how often beat rolls up today's and yesterday's daily stats.
ANALYTICS_ROLLUP_SECONDS = env_int("ANALYTICS_ROLLUP_SECONDS", 900, minimum=60)

# Installation health (licenses/installs.py): how often each web process writes its counts of origins
# (0: never on its own; tests flush explicitly), and how many distinct origins a license keeps.
INSTALL_FLUSH_SECONDS = env_int("INSTALL_FLUSH_SECONDS", 0 if TESTING else 30, minimum=0)
INSTALL_MAX_ORIGINS = env_int("INSTALL_MAX_ORIGINS", 200, minimum=1)

# Retention (widgets/privacy.py): the hour (UTC) Celery beat applies each agency's retention window.
RETENTION_HOUR = env_int("RETENTION_HOUR", 3, minimum=0)
if RETENTION_HOUR > 23:
    raise ImproperlyConfigured("RETENTION_HOUR must be an hour of the day, 0 to 23.")

# Reapers, run by Celery beat (config/celery.py): how often, and when a call or a lead counts as abandoned.
REAPER_INTERVAL_SECONDS = env_int("REAPER_INTERVAL_SECONDS", 30, minimum=1)
REALTIME_STALE_SECONDS = env_int("REALTIME_STALE_SECONDS", 60, minimum=20)
LEAD_PENDING_STALE_SECONDS = env_int("LEAD_PENDING_STALE_SECONDS", 60, minimum=10)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or TESTING
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG or TESTING

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Sign-in throttling (config/auth.py): django-axes locks (username, client IP) out after
# AXES_FAILURE_LIMIT failed passwords for AXES_COOLOFF_TIME; API tokens use the same numbers per IP.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.auth.lockout_response"
AXES_VERBOSE = False

LOGIN_URL = "/app/login/"
LOGIN_REDIRECT_URL = "/app/"
LOGOUT_REDIRECT_URL = "/app/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first so anonymous API calls answer 401 with WWW-Authenticate, not 403.
        "config.auth.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    # One JSON parser for every endpoint (rules in licenses/api.py): size, depth, NUL and surrogate rules.
    "DEFAULT_PARSER_CLASSES": ["config.api.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchboard API",
    "DESCRIPTION": "Agencies configure AI chat and voice widgets; customers embed them under a license.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from our own static files: the docs work without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents the error shape and the statuses it can answer (config/openapi.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.openapi.add_error_responses",
    ],
}

# Outside services. Every OpenAI HTTP call goes to OPENAI_BASE_URL.
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
OPENAI_REALTIME_URL = env_str("OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime")
LIVEKIT_URL = env_str("LIVEKIT_URL")
LIVEKIT_API_KEY = env_str("LIVEKIT_API_KEY")
LIVEKIT_API_SECRET = env_str("LIVEKIT_API_SECRET")
# The name `python manage.py voice_agent` registers under; participant tokens dispatch it by this name.
LIVEKIT_AGENT_NAME = env_str("LIVEKIT_AGENT_NAME", "switchboard-voice")
# The voice agent worker's health-check HTTP port (0: any free port) and its warm job processes.
LIVEKIT_AGENT_PORT = env_int("LIVEKIT_AGENT_PORT", 8081, minimum=0)
LIVEKIT_AGENT_IDLE_PROCESSES = env_int("LIVEKIT_AGENT_IDLE_PROCESSES", 2, minimum=0)

# Realtime models and prices (USD per 1M tokens) are settings, not code. The keys of REALTIME_PRICES
# are the ONE list of voice models the configurator offers and the config accepts. gpt-realtime and
# gpt-realtime-mini shut down on 2027-01-20 (openai 3.54.0 marks them deprecated); these are current.
REALTIME_DEFAULT_MODEL = env_str("REALTIME_DEFAULT_MODEL", "gpt-realtime-1.5")
REALTIME_PRICES = {
    "gpt-realtime-1.5": {
        "text_in": 4.0,
        "text_in_cached": 0.4,
        "text_out": 16.0,
        "audio_in": 32.0,
        "audio_in_cached": 0.4,
        "audio_out": 64.0,
    },
    "gpt-realtime-2.1": {
        "text_in": 4.0,
        "text_in_cached": 0.4,
        "text_out": 24.0,
        "audio_in": 32.0,
        "audio_in_cached": 0.4,
        "audio_out": 64.0,
    },
    "gpt-realtime-2.1-mini": {
        "text_in": 0.6,
        "text_in_cached": 0.06,
        "text_out": 2.4,
        "audio_in": 10.0,
        "audio_in_cached": 0.3,
        "audio_out": 20.0,
    },
}
# ~25 % below where the relay fell behind with the widget's 100 ms frames (250 calls; bench/README-relay.md).
REALTIME_MAX_SESSIONS_PER_PROCESS = env_int("REALTIME_MAX_SESSIONS_PER_PROCESS", 150, minimum=1)
# Platform ceiling over a widget's voice.max_session_seconds.
REALTIME_MAX_SESSION_SECONDS = env_int("REALTIME_MAX_SESSION_SECONDS", 3600, minimum=30)
# Test calls in the configurator preview (realtime/preview.py): never billed, so capped instead.
REALTIME_PREVIEW_MAX_SECONDS = env_int("REALTIME_PREVIEW_MAX_SECONDS", 300, minimum=30)
REALTIME_PREVIEW_MAX_PER_MEMBER = env_int("REALTIME_PREVIEW_MAX_PER_MEMBER", 2, minimum=1)
REALTIME_PREVIEW_MAX_PER_AGENCY = env_int("REALTIME_PREVIEW_MAX_PER_AGENCY", 5, minimum=1)
REALTIME_PREVIEW_TICKETS_PER_MINUTE = env_int("REALTIME_PREVIEW_TICKETS_PER_MINUTE", 10, minimum=1)
# ChatKit server mode (Agents SDK over the Responses API). The keys of CHATKIT_MODELS are the ONE list
# of ChatKit models the configurator offers and the config accepts; values are list prices in USD
# per 1M tokens (input, cached input, output) for the estimated cost of each conversation.
# gpt-4.1-mini shuts down on 2027-01-14 (its named replacement is gpt-6-luna).
CHATKIT_MODELS = {
    "gpt-6-luna": {"input": 0.10, "input_cached": 0.01, "output": 0.50},
    "gpt-6-sol": {"input": 2.00, "input_cached": 0.20, "output": 10.00},
    "gpt-6-astra": {"input": 10.00, "input_cached": 1.00, "output": 50.00},
    "gpt-5.6-luna": {"input": 0.20, "input_cached": 0.02, "output": 1.20},
    "gpt-5.6-terra": {"input": 2.00, "input_cached": 0.20, "output": 12.00},
}
CHATKIT_DEFAULT_MODEL = env_str("CHATKIT_DEFAULT_MODEL", "gpt-6-luna")
if CHATKIT_DEFAULT_MODEL not in CHATKIT_MODELS:
    raise ImproperlyConfigured(f"CHATKIT_DEFAULT_MODEL must be one of {', '.join(CHATKIT_MODELS)}.")
if REALTIME_DEFAULT_MODEL not in REALTIME_PRICES:
    raise ImproperlyConfigured(f"REALTIME_DEFAULT_MODEL must be one of {', '.join(REALTIME_PRICES)}.")
# Reasoning effort sent with every ChatKit run ("" sends none): a chat widget wants answers fast.
CHATKIT_REASONING_EFFORT = env_str("CHATKIT_REASONING_EFFORT", "low")
# Thread items fed back to the model per turn (newest first, then reversed), and tool rounds per turn.
CHATKIT_HISTORY_ITEMS = env_int("CHATKIT_HISTORY_ITEMS", 20, minimum=2)
CHATKIT_MAX_TURNS = env_int("CHATKIT_MAX_TURNS", 6, minimum=1)
# Public endpoint limits: model calls per visitor and per license per minute, all requests per visitor.
CHATKIT_VISITOR_RATE_PER_MINUTE = env_int("CHATKIT_VISITOR_RATE_PER_MINUTE", 20, minimum=1)
CHATKIT_LICENSE_RATE_PER_MINUTE = env_int("CHATKIT_LICENSE_RATE_PER_MINUTE", 600, minimum=1)
CHATKIT_READ_RATE_PER_MINUTE = env_int("CHATKIT_READ_RATE_PER_MINUTE", 120, minimum=1)
CHATKIT_MAX_BODY_BYTES = env_int("CHATKIT_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
# The ChatKit page says in words that the chat could not load when the CDN script has not come by then.
CHATKIT_LOAD_TIMEOUT_MS = env_int("CHATKIT_LOAD_TIMEOUT_MS", 8000, minimum=1000)
CHATKIT_CONNECT_TIMEOUT = env_float("CHATKIT_CONNECT_TIMEOUT", 5.0)
# Seconds to connect to OpenAI, and the longest silence inside a streamed answer.
CHATKIT_TIMEOUT = env_float("CHATKIT_TIMEOUT", 30.0)
# How long the signed page token of /widget/chatkit/<key> lets that page talk to our ChatKit server.
CHATKIT_PAGE_TOKEN_SECONDS = env_int("CHATKIT_PAGE_TOKEN_SECONDS", 6 * 3600, minimum=60)
CHATKIT_JS_URL = env_str("CHATKIT_JS_URL", "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js")
# Public domain key of OUR domain on OpenAI's ChatKit domain allowlist (server mode `api.domainKey`).
CHATKIT_DOMAIN_KEY = env_str("CHATKIT_DOMAIN_KEY", "")

# Request bodies: every JSON endpoint refuses a larger body with 413 (licenses/api.py); forms keep
# Django's own limit.
JSON_MAX_BODY_BYTES = env_int("JSON_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
# Any request body, read before a middleware or view runs (the largest upload is a 2 MB product CSV):
# over it the ASGI handler answers 413 without spooling the rest to disk (config/middleware.py).
REQUEST_MAX_BODY_BYTES = env_int("REQUEST_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=64 * 1024)
# The technical 500 page and error e-mails hide tenant config and secrets (config/middleware.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.middleware.SafeExceptionReporterFilter"

# Public widget endpoints.
WIDGET_CHAT_RATE_PER_MINUTE = env_int("WIDGET_CHAT_RATE_PER_MINUTE", 20, minimum=1)
N8N_CONNECT_TIMEOUT = env_float("N8N_CONNECT_TIMEOUT", 5.0)
N8N_TOTAL_TIMEOUT = env_float("N8N_TOTAL_TIMEOUT", 60.0)
# Threads per process for short DB steps with psycopg's pool (widgets/aio.py db_step); keep it at
# most DB_POOL_MAX_SIZE so a step never waits for a pooled connection.
DB_STEP_THREADS = env_int("DB_STEP_THREADS", 12, minimum=1)
# Connections per server loop for the hot statements run on the loop itself (widgets/aio.py pg_async), beside
# the pool above.
DB_LOOP_POOL_SIZE = env_int("DB_LOOP_POOL_SIZE", 4, minimum=1)

# The one pooled n8n session per server loop (widgets/n8n.py): connections open at once (in flight or
# idle), and how long an idle one is kept.
N8N_MAX_CONNECTIONS = env_int("N8N_MAX_CONNECTIONS", 1000, minimum=1)
N8N_KEEPALIVE_EXPIRY = env_float("N8N_KEEPALIVE_EXPIRY", 4.0)
# Upstream chat calls one license may have in flight per process (a license's limits may override it
# with "max_concurrent_chats"); past it the chat answers 429 license_busy with Retry-After.
# A new chat session skips the monthly-allowance read while the last one (at most this old) left more than the
# headroom (or a tenth of the allowance) unspent: widgets.chat._ChatCache.quota_ample.
WIDGET_CHAT_QUOTA_READ_SECONDS = env_float("WIDGET_CHAT_QUOTA_READ_SECONDS", 1.0)
WIDGET_CHAT_QUOTA_HEADROOM = env_int("WIDGET_CHAT_QUOTA_HEADROOM", 200, minimum=0)
WIDGET_CHAT_MAX_CONCURRENT_PER_LICENSE = env_int("WIDGET_CHAT_MAX_CONCURRENT_PER_LICENSE", 100, minimum=1)
# Webhooks on loopback/private/link-local addresses are refused (SSRF) unless this is on; it is on
# for development and tests, where n8n runs on 127.0.0.1. Turn it on for a self-hosted n8n on a
# private network you trust.
N8N_ALLOW_PRIVATE_NETWORKS = env_bool("N8N_ALLOW_PRIVATE_NETWORKS", DEBUG or TESTING)
WIDGET_BUNDLE_VERSION = env_str("WIDGET_BUNDLE_VERSION", "1")

# Production hardening: on unless DEBUG.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe each process over plain HTTP
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not TESTING)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not TESTING)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not TESTING)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if TESTING else 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
X_FRAME_OPTIONS = "DENY"
# HSTS preload is an operator's choice. W003 looks for Django's CSRF middleware by its dotted path;
# config.hosts.CsrfViewMiddleware is that class with dynamic trusted origins.
SILENCED_SYSTEM_CHECKS = ["security.W021", "security.W003"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Password reset and member invitations (/app/). Console by default so `make run` needs no SMTP.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Switchboard <no-reply@switchboard.local>")
