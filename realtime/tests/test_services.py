"""Concurrency slots: atomic per slot (cache.add = SET NX on Redis), released by owner, expiring by TTL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache

from realtime import services as svc


@pytest.mark.django_db
def test_slots_cap_release_and_expiry(license_a, monkeypatch):
    license_a.limits = {**license_a.limits, "max_concurrent_voice_sessions": 2}
    first = svc.voice_slot_acquire(license=license_a, token="a")
    second = svc.voice_slot_acquire(license=license_a, token="b")
    assert first and second and first != second
    assert svc.voice_slot_acquire(license=license_a, token="c") is None
    assert svc.voice_slots_in_use(license=license_a) == 2
    svc.voice_slot_release(key=first, token="not-mine")  # only the owner frees a slot
    assert svc.voice_slot_acquire(license=license_a, token="c") is None
    svc.voice_slot_release(key=first, token="a")
    assert svc.voice_slot_acquire(license=license_a, token="c") == first
    cache.delete(second)  # what the TTL does to a crashed worker's slot
    assert svc.voice_slot_acquire(license=license_a, token="d") == second


@pytest.mark.django_db
def test_slots_are_atomic_under_concurrency(license_a):
    license_a.limits = {**license_a.limits, "max_concurrent_voice_sessions": 3}
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: svc.voice_slot_acquire(license=license_a, token=str(i)), range(20)))
    assert len([g for g in got if g]) == 3 and len({g for g in got if g}) == 3
