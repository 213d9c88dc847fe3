"""Agencies' own domains (issue 15.5): the allowed-hosts check and CSRF trusted origins follow the
verified custom domains (licenses.CustomDomain), with no restart.

- `CustomHostMiddleware`, first in settings.MIDDLEWARE, gives each request a `get_host()` that accepts
  a verified mapped host and otherwise defers to Django's own (settings.ALLOWED_HOSTS): an unmapped
  host is refused exactly as before (DisallowedHost → 400). On a mapped host only the public surface
  answers (loader, public API, ChatKit page, voice, share pages, logos, static files); everything
  else (/app/, /admin/, the REST API) is 404 there, so an agency's domain never shows the staff or
  agency sign-in. There, another agency's license key or share link is unknown (404): the middleware
  names the host's agency for the request (licenses.hosts.request_host_agency) and the one license
  status rule (licenses.selectors.license_status_reason) refuses any other agency's license.
- `CsrfViewMiddleware` is Django's with the trusted origins computed per request: settings'
  CSRF_TRUSTED_ORIGINS, plus `https://<host>` for a request that came in on that verified mapped host
  (TLS ends at the proxy), never for requests to another host.

The verified hosts live in memory per process (licenses.hosts.host_map); this middleware reloads them
from the database when they are older than CUSTOM_DOMAIN_REFRESH_SECONDS, in a thread under ASGI.
"""

from __future__ import annotations

import re
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.http.request import split_domain_port, validate_host
from django.middleware import csrf

from licenses.hosts import host_map, host_map_refresh, host_map_stale, request_host_agency

# What a customer's page (or a share link's reader) reaches; the rest stays on the platform's hosts.
PUBLIC_PATH = re.compile(r"^/(api/widget/|api/chatkit/|api/realtime/|api/livekit/|widget/|static/|app/p/|brand/)")


def mapped_agency_id(request: HttpRequest) -> int | None:
    """The agency whose verified custom domain this request came in on, or None."""
    try:
        domain, _port = split_domain_port(request._get_raw_host())
    except KeyError:
        return None
    return host_map().get(domain) if domain else None


def _get_host(request: HttpRequest) -> str:
    if mapped_agency_id(request) is not None:
        return request._get_raw_host()
    return HttpRequest.get_host(request)


class _RequestHost:
    """A request's `get_host` under this middleware: `_get_host` of that request, held by a weak reference. A
    bound method (`types.MethodType`) made a reference cycle — the request held its `get_host`, which held the
    request — so every request, its META, query and body, outlived its end until the cyclic GC found it
    (issue 11 bench: with 200 chats in flight, young-generation collections of ~10,000 objects took 8-19 ms of
    the event loop each). The host it accepted is kept for the request's later calls (the public chat asked ~5
    times per turn: host checks, security and CORS hooks); a refusal (DisallowedHost) is raised again each time."""

    __slots__ = ("_request", "_host")

    def __init__(self, request: HttpRequest) -> None:
        self._request = weakref.ref(request)
        self._host: str | None = None

    def __call__(self) -> str:
        if self._host is not None:
            return self._host
        request = self._request()
        if request is None:
            raise RuntimeError("get_host() of a request that no longer exists")
        self._host = _get_host(request)
        return self._host


def _needs_refresh(request: HttpRequest) -> bool:
    """Only a host the settings do not allow can be a custom domain: requests to the platform's own
    hosts never wait for (or depend on) the database here."""
    try:
        domain, _port = split_domain_port(request._get_raw_host())
    except KeyError:
        return False
    return bool(domain) and not validate_host(domain, settings.ALLOWED_HOSTS) and host_map_stale()


class CustomHostMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        if _needs_refresh(request):
            host_map_refresh()
        token = request_host_agency.set(mapped_agency_id(request))
        try:
            return self._refusal(request) or self.get_response(request)
        finally:
            request_host_agency.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if _needs_refresh(request):
            await sync_to_async(host_map_refresh, thread_sensitive=False)()
        token = request_host_agency.set(mapped_agency_id(request))
        try:
            return self._refusal(request) or await self.get_response(request)
        finally:
            request_host_agency.reset(token)

    def _refusal(self, request: HttpRequest) -> HttpResponse | None:
        request.get_host = _RequestHost(request)  # type: ignore[method-assign]
        agency_id = mapped_agency_id(request)
        request.custom_domain_agency_id = agency_id  # type: ignore[attr-defined]
        if agency_id is not None and not PUBLIC_PATH.match(request.path_info):
            return HttpResponseNotFound("Not found.", content_type="text/plain; charset=utf-8")
        return None


class CsrfViewMiddleware(csrf.CsrfViewMiddleware):
    """Django's, where a request that came in on a verified custom domain trusts `https://<that host>` as
    its Origin (TLS ends at the proxy, so the request may arrive as http). A mapped host vouches for
    requests to itself only: its agency controls its DNS, so its origin never passes a POST to the
    platform's own host or to another agency's domain. Settings' CSRF_TRUSTED_ORIGINS are read per
    request (not cached per process), as before."""

    def _origin_verified(self, request: HttpRequest) -> bool:
        if super()._origin_verified(request):
            return True
        if mapped_agency_id(request) is None:
            return False
        return request.META["HTTP_ORIGIN"] == f"https://{request.get_host()}"

    def _trusted(self) -> list[str]:
        return list(settings.CSRF_TRUSTED_ORIGINS)

    @property
    def csrf_trusted_origins_hosts(self) -> list[str]:  # type: ignore[override]
        return [urlsplit(origin).netloc.lstrip("*") for origin in self._trusted()]

    @property
    def allowed_origins_exact(self) -> set[str]:  # type: ignore[override]
        return {origin for origin in self._trusted() if "*" not in origin}

    @property
    def allowed_origin_subdomains(self) -> dict[str, list[str]]:  # type: ignore[override]
        allowed: dict[str, list[str]] = defaultdict(list)
        for parsed in (urlsplit(origin) for origin in self._trusted() if "*" in origin):
            allowed[parsed.scheme].append(parsed.netloc.lstrip("*"))
        return allowed
