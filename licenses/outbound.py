"""Outgoing HTTP shared by every tenant: a pooled client keeps no cookies.

One client serves every tenant's calls (OpenAI's REST side for voice, ChatKit's pool per event loop, the n8n
session per loop), so a cookie one answer sets would go out with the next tenant's requests to that host
(OpenAI's edge sets `__cf_bm`; an n8n workflow sets any header it likes). httpx and httpx2 keep response
cookies by default; this jar's policy accepts none and sends none. aiohttp has its own (`DummyCookieJar`)."""

from __future__ import annotations

import http.cookiejar


def cookieless_jar() -> http.cookiejar.CookieJar:
    """A cookie jar that stores no cookie and adds none to a request (for `httpx.Client(cookies=...)`)."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
