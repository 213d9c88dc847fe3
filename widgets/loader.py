"""The embed loader script: resolve the license's published widget, render the JS, cache it.

Every page view of every customer site requests the loader, so the hot path is one small query
(no secrets decrypted, no draft loaded) plus a cache hit. The rendered script is cached per
(license key, widget, published version, bundle version): a publish creates a new version id and a
key rotation changes the key, so both miss the cache and render afresh.

Under ASGI every request runs its sync code in a fresh thread, hence on a fresh database connection; so
the resolution itself (license status + published version for a key) is cached too, for RESOLVE_TTL
seconds under the license's cache generation (licenses.selectors.license_cache_generation), which the
services that change what a key serves (publish, rollback, delete, suspend, extend, rotate, the admin's
save) replace at once and again on commit. A write that bypasses them is picked up within RESOLVE_TTL,
well inside the browsers' own max-age=60.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.cache import cache
from django.db import connection
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from licenses.models import License
from licenses.selectors import REASON_MESSAGES, license_cache_generation, license_get_public, license_status_reason
from widgets.config_schema import config_public
from widgets.models import Widget, WidgetVersion

BUNDLE_DIR = Path(settings.BASE_DIR) / "static" / "widget"
BUNDLE_FILES = ("widget.js", "voice.js", "voice-livekit.js")
LOADER_CACHE_SECONDS = 3600
CACHE_CONTROL = "public, max-age=60, stale-while-revalidate=300"
ERROR_CACHE_CONTROL = "public, max-age=30"
# The ChatKit page belongs to the chatkit app; we link to it by URL name, with this fallback until it exists.
CHATKIT_PAGE_FALLBACK = "/widget/chatkit/{key}"


@lru_cache(maxsize=1)
def bundle_version() -> str:
    """settings.WIDGET_BUNDLE_VERSION plus a hash of the bundle files: a deploy changes every ETag."""
    digest = hashlib.sha256()
    for name in BUNDLE_FILES:
        path = BUNDLE_DIR / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return f"{settings.WIDGET_BUNDLE_VERSION}-{digest.hexdigest()[:10]}"


@lru_cache(maxsize=1)
def bundle_path() -> str:
    return staticfiles_storage.url("widget/widget.js")


@lru_cache(maxsize=1)
def voice_path() -> str:
    """voice.js under its hashed name too: the loader hands it to the bundle, which lazy-loads it."""
    return staticfiles_storage.url("widget/voice.js")


def chatkit_page_path(*, key: str) -> str:
    try:
        return reverse("chatkit:page", kwargs={"license_key": key})
    except NoReverseMatch:
        return CHATKIT_PAGE_FALLBACK.format(key=key)


@dataclass(frozen=True)
class LoaderResult:
    status: int
    body: str
    etag: str = ""
    reason: str = "loader"  # installation health (licenses/installs.py): a served loader, or the refusal


def _error_js(reason: str, message: str) -> str:
    # One console.error and nothing else: the customer's page stays untouched.
    text = json.dumps(f"Switchboard: {message} ({reason})")
    return f"console.error({text});\n"


def loader_error(reason: str, status: int, message: str | None = None) -> LoaderResult:
    return LoaderResult(
        status=status, body=_error_js(reason, message or REASON_MESSAGES.get(reason, reason)), reason=reason
    )


@lru_cache(maxsize=2)
def _sql(with_widget: bool) -> str:
    # Hand-written because this runs on every page view of every customer: building the same ORM
    # query costs more than running it. One indexed lookup by key; no secrets, no draft config.
    # Only table names (from model metadata) are interpolated; values are bound parameters.
    w, v, lic = Widget._meta.db_table, WidgetVersion._meta.db_table, License._meta.db_table
    where = "l.key = %s AND w.public_id = %s" if with_widget else "l.key = %s"
    select = "w.public_id, w.published_version_id, v.number, l.status, l.starts_at, l.expires_at, l.grace_days"
    joins = f"{w} w JOIN {lic} l ON l.id = w.license_id JOIN {v} v ON v.id = w.published_version_id"
    return f"SELECT {select} FROM {joins} WHERE {where} ORDER BY w.created_at, w.id LIMIT 1"  # noqa: S608


def _aware(value: datetime | str | None) -> datetime | None:
    """Raw rows: SQLite gives naive UTC (or text), PostgreSQL aware datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def loader_resolve(*, key: str, widget_id: str = "") -> LoaderResult | tuple[dict, str]:
    """The published widget row for this key (one query), or a LoaderResult error."""
    if not key or len(key) > 64:
        return loader_error("unknown_license", 404)
    with connection.cursor() as cursor:
        cursor.execute(_sql(bool(widget_id)), [key, widget_id] if widget_id else [key])
        found = cursor.fetchone()
    if found is None:
        license = license_get_public(key=key)
        reason = license_status_reason(license=license, any_host=True)
        if reason != "ok":
            return loader_error(reason, 404 if reason == "unknown_license" else 403)
        if widget_id:
            return loader_error("widget_not_found", 404, "This widget does not exist or is not published.")
        return loader_error("no_published_widget", 404, "This license has no published widget yet.")
    public_id, version_id, number, status, starts_at, expires_at, grace_days = found
    license = License(status=status, starts_at=_aware(starts_at), expires_at=_aware(expires_at), grace_days=grace_days)
    reason = license_status_reason(license=license, any_host=True)
    if reason != "ok":
        return loader_error(reason, 403)
    row = {"public_id": public_id, "published_version_id": version_id, "published_version__number": number}
    etag_src = f"{key}|{public_id}|{version_id}|{number}"
    etag = f'"sb-{hashlib.sha256(etag_src.encode()).hexdigest()[:16]}-{bundle_version()}"'
    return row, etag


# The page API's stub (static/widget/widget.js replaces it and replays its queue): printed in the Embed
# tab before the loader tag, and run by the loader too, so calls made before the bundle runs are kept.
# Keep the method list in step with API_METHODS in widget.js.
API_STUB = (
    'window.Switchboard||(function(w){var q=[],M="open close toggle send reset setLocale setContext identify on off"'
    '.split(" ");function h(id){var f=function(){q.push([id,[].slice.call(arguments)])};'
    "M.forEach(function(m){f[m]=function(){f.apply(null,[m].concat([].slice.call(arguments)))}});return f}"
    'var s=w.Switchboard=h("");s.widget=h;s.q=q})(window);'
)

LOADER_TEMPLATE = (
    """/* Switchboard loader */
"""
    + API_STUB.replace("%", "%%")
    + """
(function(){var P=%(payload)s,s=document.currentScript;
if(!s){var a=document.getElementsByTagName("script");
for(var i=a.length-1;i>=0;i--){if((a[i].src||"").indexOf(P.key+"/chat-widget.js")>0){s=a[i];break;}}}
if(!s){console.error("Switchboard: cannot find the loader <script> tag.");return;}
var d=s.dataset||{},b=new URL(s.src).origin,x=d.widget&&d.widget!==P.widget,
o={base:b,key:P.key,widget:x?d.widget:P.widget,type:x?"":P.type,frame:P.frame,voice:P.voice,config:x?null:P.config,
mode:d.mode,target:d.target,position:d.position,script:s},w=window,
q=w.SwitchboardQueue=w.SwitchboardQueue||[];q.push(o);
if(!w.SwitchboardWidget&&!w.__sbLoading){w.__sbLoading=1;var e=document.createElement("script");
e.src=b+P.bundle;e.async=true;e.onerror=function(){console.error("Switchboard: the widget script failed to load.");};
(document.head||document.documentElement).appendChild(e);}})();
"""
)


def loader_render(*, key: str, row: dict) -> str:
    version = WidgetVersion.objects.only("config", "widget_type").get(pk=row["published_version_id"])
    widget_type = version.widget_type
    payload = {
        "key": key,
        "widget": row["public_id"],
        "type": widget_type,
        "version": row["published_version__number"],
        "bundle": f"{bundle_path()}?v={bundle_version()}",
        "voice": f"{voice_path()}?v={bundle_version()}",
        # The bundle adds `?widget=<the widget it mounts>`: a `data-widget` tag may pick another one.
        "frame": chatkit_page_path(key=key),
        "config": config_public(version.config),
    }
    # `</` cannot close a script element when the JS is inlined anywhere.
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    return LOADER_TEMPLATE % {"payload": data}


RESOLVE_TTL = 10


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def loader_resolve_cached(*, key: str, widget_id: str = "") -> LoaderResult | tuple[dict, str]:
    if not key or len(key) > 64:
        return loader_error("unknown_license", 404)
    generation = license_cache_generation(key=key)
    res_key = f"sb:loader:res:{_key_id(key)}:{generation}:{widget_id}"
    resolved = cache.get(res_key)
    if resolved is None:
        resolved = loader_resolve(key=key, widget_id=widget_id)
        cache.set(res_key, resolved, RESOLVE_TTL)
    return resolved


# Bodies are immutable per ETag (it hashes key, widget, version and bundle), so a small process-local
# map in front of the shared cache is always correct and saves a cache round trip per request.
_LOCAL: dict[str, str] = {}
_LOCAL_MAX = 512


def loader_get(*, key: str, widget_id: str = "") -> LoaderResult:
    resolved = loader_resolve_cached(key=key, widget_id=widget_id)
    if isinstance(resolved, LoaderResult):
        return resolved
    row, etag = resolved
    body = _LOCAL.get(etag)
    if body is None:
        cache_key = f"sb:loader:{etag}"
        body = cache.get(cache_key)
        if body is None:
            body = loader_render(key=key, row=row)
            cache.set(cache_key, body, LOADER_CACHE_SECONDS)
        if len(_LOCAL) >= _LOCAL_MAX:
            _LOCAL.clear()
        _LOCAL[etag] = body
    return LoaderResult(status=200, body=body, etag=etag)
