"""Beat tasks of the licenses app (config/celery.py)."""

from __future__ import annotations

from celery import shared_task

from licenses import hosts


@shared_task(ignore_result=True)
def custom_domains_recheck() -> dict[str, int]:
    """Every CUSTOM_DOMAIN_RECHECK_SECONDS: re-check the DNS of verified custom domains (licenses.hosts)."""
    return hosts.custom_domains_recheck()
