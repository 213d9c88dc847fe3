"""Small typed readers for environment variables that refuse bad values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "", *, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(name, default).strip()


def env_bool(name: str, default: bool = False, *, environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if name not in environ:
        return default
    value = environ[name].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}.")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
    return value


def env_float(name: str, default: float, *, environ: Mapping[str, str] | None = None) -> float:
    environ = os.environ if environ is None else environ
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.")


def env_list(name: str, default: list[str] | None = None, *, environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


# Redis has databases 0-15 unless its config says otherwise.
REDIS_DATABASES = 16


def redis_url_for_test_worker(url: str, worker: str) -> str:
    """`url` for pytest-xdist worker `worker` ("gw0", "gw1", …; "" outside xdist): its database number + N.

    Parallel workers must not share a Redis database: every test starts with `cache.clear()`, a FLUSHDB,
    and rate-limit counters, voice slots and channel-layer groups would meet. gw0 keeps the URL's own
    database, so `-n 2` on db 1 uses 1 and 2. A URL without a database number means db 0.
    """
    if not url or not worker:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"REDIS_URL {parts.scheme}:// cannot be split per xdist worker; use redis://.")
    query = parse_qs(parts.query)
    base = int((query.pop("db", None) or [parts.path.strip("/") or "0"])[0])
    db = base + int(worker.removeprefix("gw"))
    if db >= REDIS_DATABASES:
        raise ImproperlyConfigured(
            f"xdist worker {worker} needs Redis db {base} + {worker.removeprefix('gw')} = {db}, past Redis's last "
            f"database ({REDIS_DATABASES - 1}): give REDIS_URL a db number that leaves one per worker."
        )
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query, doseq=True)))
