"""Monthly usage counting under concurrency (exact totals from many threads on one license)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from licenses.models import LicenseUsage
from licenses.services import usage_increment
from licenses.tests.factories import LicenseFactory
from widgets.tests.conftest import run_in_threads

THREADS = 8
PER_THREAD = 25


@pytest.mark.django_db(transaction=True)
def test_usage_increment_is_exact_under_concurrency():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers with a file lock; this runs on PostgreSQL in CI")
    license = LicenseFactory()
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def hammer() -> None:
        try:
            barrier.wait()
            for _ in range(PER_THREAD):
                usage_increment(license=license.pk, conversations=1, voice_seconds=0.5)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    run_in_threads(lambda _n: hammer(), THREADS)
    assert errors == []
    usage = LicenseUsage.objects.get(license=license)
    assert usage.conversations == THREADS * PER_THREAD
    assert usage.voice_seconds == pytest.approx(THREADS * PER_THREAD * 0.5)
    assert LicenseUsage.objects.filter(license=license).count() == 1
