"""widgets.aio.pg_async: one statement on the running loop's own psycopg pool. A connection PostgreSQL dropped
is found out at checkout (issue 11.9), except within ALIVE_BYPASS_SECONDS of its last answer; errors are
Django's."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import OperationalError, connection

from widgets import aio

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_async is PostgreSQL's (CI runs it)"),
]


def _terminate_pool_backends() -> None:
    """PostgreSQL drops every connection of the loop pools on this test's database (a restart, a failover)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'switchboard-loop' AND datname = current_database()"
        )


def _run(bypass: float) -> tuple[list[int], object]:
    """Two statements on one loop's pool with the pool's backends terminated between them: (the first's
    backend pid, the second's answer or error)."""

    async def run():
        aio.ALIVE_BYPASS_SECONDS = bypass
        try:
            (first,) = await aio.pg_async("SELECT pg_backend_pid()", {})
            await sync_to_async(_terminate_pool_backends)()
            try:
                second = await aio.pg_async("SELECT pg_backend_pid()", {})
            except OperationalError as exc:
                second = exc
            return [first[0]], second
        finally:
            await aio.pg_async_close()

    return async_to_sync(run)()


def test_a_dropped_connection_is_replaced_at_checkout(monkeypatch):
    monkeypatch.setattr(aio, "ALIVE_BYPASS_SECONDS", aio.ALIVE_BYPASS_SECONDS)
    (dropped,), second = _run(bypass=0.0)
    assert isinstance(second, list) and second[0][0] != dropped  # a new backend answered


def test_within_the_bypass_window_the_check_is_skipped(monkeypatch):
    """The trade-off the window makes: a connection dropped right after it answered fails one statement,
    as Django's error (an outage is a JSON 503), and is not handed out again."""
    monkeypatch.setattr(aio, "ALIVE_BYPASS_SECONDS", aio.ALIVE_BYPASS_SECONDS)
    _, second = _run(bypass=3600.0)
    assert isinstance(second, OperationalError)
