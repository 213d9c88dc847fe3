"""The last-resort error answers (handler500): JSON for JSON endpoints, 503 when the database is away.

A lost PostgreSQL connection or an exhausted pool (`OperationalError`, `psycopg_pool.PoolTimeout`)
is a temporary outage, not a bug: JSON callers get `503 service_unavailable` with `Retry-After`
instead of an HTML 500 page (issue 11.9). Pages keep Django's plain 500 template.
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views.defaults import server_error as html_server_error

from licenses.api import error_response

RETRY_AFTER_SECONDS = 5


def _unavailable_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        from psycopg_pool import PoolTimeout

        types.append(PoolTimeout)
    except ImportError:  # SQLite-only installs
        pass
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        types += [RedisConnectionError, RedisTimeoutError]
    except ImportError:
        pass
    return tuple(types)


def is_service_outage(exc: BaseException | None) -> bool:
    """A database or Redis that cannot be reached (now), as opposed to a bug."""
    return isinstance(exc, _unavailable_types())


def service_unavailable() -> HttpResponse:
    response = error_response(
        "service_unavailable", "The service is briefly unavailable. Please try again in a few seconds.", 503
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: for an exception outside a view (a middleware's session or user lookup), which
    HostileInputMiddleware.process_exception does not see."""
    from config.middleware import wants_json

    exc = sys.exc_info()[1]
    outage = is_service_outage(exc)
    if wants_json(request):
        if outage:
            return service_unavailable()
        return error_response("server_error", "Something went wrong on our side. Please try again.", 500)
    response = html_server_error(request)
    if outage:
        response.status_code = 503
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
