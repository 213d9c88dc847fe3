"""Allowed-domain patterns and Origin matching for licenses.

A pattern is an exact host (`shop.example.com`), a host with a port (`localhost:3000`: that port
only) or a wildcard (`*.example.com`: any subdomain, not the apex). Hosts compare case-insensitively.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class DomainError(ValueError):
    pass


def domain_normalize(raw: str) -> str:
    """Turn what a person typed (`https://Shop.Example.com/`, `*.example.com`) into a pattern."""
    value = (raw or "").strip().lower()
    if not value:
        raise DomainError("Enter a host such as shop.example.com or *.example.com.")
    if "://" in value:
        parts = urlsplit(value)
        value = parts.netloc
    value = value.split("/", 1)[0]
    host, _, port = value.partition(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise DomainError(f"{raw!r}: the port must be a number between 1 and 65535.")
    if _IPV4_RE.match(host):
        if any(int(p) > 255 for p in host.split(".")):
            raise DomainError(f"{raw!r} is not a valid IP address.")
    elif host != "localhost" and not _HOST_RE.match(host):
        raise DomainError(f"{raw!r} is not a host name; use shop.example.com or *.example.com.")
    if host.startswith("*.") and host.count(".") < 2:
        raise DomainError(f"{raw!r} is too broad; a wildcard needs a registrable domain (*.example.com).")
    return f"{host}:{port}" if port else host


def domains_split(text: str) -> list[str]:
    """The entries of a one-per-line text box (commas and spaces separate too: no host contains them)."""
    return [part for part in re.split(r"[\s,]+", text or "") if part]


@functools.lru_cache(maxsize=4096)
def origin_host_port(origin: str | None) -> tuple[str, str] | None:
    """(host, port) of an Origin header, or None when it is missing, `null` or malformed. Remembered (a
    bounded LRU: the answer depends on the text alone): every public request parses its Origin two or three
    times (license check, CORS), ~8 µs each with urlsplit (issue 11 bench)."""
    if not origin or origin.strip().lower() == "null":
        return None
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname.lower().rstrip("."), str(port or default)


def origin_normalize(url: str | None) -> str | None:
    """`scheme://host:port` of an Origin or URL (host lower case, default port filled in), or None."""
    parsed = origin_host_port(url)
    if parsed is None:
        return None
    return f"{urlsplit(url.strip()).scheme}://{parsed[0]}:{parsed[1]}"


def domain_matches(pattern: str, host: str, port: str) -> bool:
    p_host, _, p_port = pattern.lower().partition(":")
    if p_port and p_port != port:
        return False
    if p_host.startswith("*."):
        suffix = p_host[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == p_host


def origin_allowed(patterns: list[str], origin: str | None) -> bool:
    parsed = origin_host_port(origin)
    if parsed is None:
        return False
    host, port = parsed
    return any(domain_matches(p, host, port) for p in patterns or [])


def same_origin(a: str | None, b: str | None) -> bool:
    """Two URLs (or Origin headers) with the same scheme, host and port."""
    normalized = origin_normalize(a)
    return normalized is not None and normalized == origin_normalize(b)


def frame_ancestors(patterns: list[str]) -> str:
    """CSP `frame-ancestors` sources for a license's allowed-domain patterns (see licenses.domains):
    a pattern without a port allows any port, like the Origin check does."""
    sources: list[str] = []
    for pattern in patterns or []:
        host, _, port = pattern.partition(":")
        if not host or any(c in host for c in " ;,'\""):
            continue
        for scheme in ("https", "http"):
            sources.append(f"{scheme}://{host}:{port or '*'}")
    return " ".join(sources) or "'none'"
