"""Inbox and analytics at size (issue 13): one agency with 100k conversations / 1M messages, 10 other
agencies with 10k conversations / 100k messages each, on PostgreSQL; p50/p99 and queries per page.

    .venv/bin/python bench/inbox.py --database-url postgres://postgres@127.0.0.1:5432/<EMPTY scratch db> \\
        [--conversations 100000 --messages-per 10 --others 10 --requests 30] [--json bench/results-inbox.json]

Seeds with INSERT ... SELECT generate_series (a minute), runs the daily rollup for the last 90 days, then
renders each page --requests times through Django's test client in this process (the whole view: tenancy,
filters, queries, templates; no network). Goal: p99 <= 200 ms for the inbox list and analytics at that
size, <= 10 queries per page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = [
    "phone",
    "pixel",
    "galaxy",
    "iphone",
    "case",
    "charger",
    "battery",
    "screen",
    "trade",
    "delivery",
    "shipping",
    "canada",
    "hours",
    "price",
    "stock",
    "refund",
    "warranty",
    "discount",
    "order",
    "track",
    "address",
    "payment",
    "card",
    "store",
    "opening",
    "weekend",
    "repair",
]


def seed(conversations: int, per: int, others: int) -> tuple[str, str]:
    from django.core.management import call_command
    from django.db import connection

    from licenses.models import Agency, License, Membership
    from licenses.tests.factories import UserFactory
    from widgets.models import Widget

    call_command("migrate", verbosity=0, interactive=False)
    user = UserFactory(username="bench-inbox", email="bench@example.com")
    config = {"connection": {"provider": "n8n", "n8n": {"webhook_url": "https://n8n.example.com/webhook/x"}}}
    plan = [("bench", conversations)] + [(f"other-{i}", conversations // 10) for i in range(others)]
    main_key = ""
    for slug, n in plan:
        agency = Agency.objects.create(name=slug, slug=slug)
        if slug == "bench":
            Membership.objects.create(user=user, agency=agency, role=Membership.Role.VIEWER)
        widget_ids = []
        for c in range(3):
            lic = License.objects.create(agency=agency, client_name=f"{slug} client {c}", allowed_domains=["x.example"])
            main_key = main_key or lic.key
            widget_ids.append(Widget.objects.create(license=lic, name=f"w{c}", config=config, secrets={}).pk)
        with connection.cursor() as cur:
            cur.execute(
                """
                INSERT INTO widgets_conversation (widget_id, channel, visitor_id, session_id, is_preview, started_at,
                    end_reason, usage, audio_in_seconds, audio_out_seconds, cost_usd, page_url)
                SELECT (%s::int[])[1 + g %% 3],
                       (ARRAY['chat','chat','chatkit','voice'])[1 + g %% 4],
                       'v' || g, %s || '-' || g, false,
                       now() - (g * interval '77 seconds'),
                       CASE WHEN g %% 53 = 0 THEN 'failed:upstream_error' ELSE '' END,
                       jsonb_build_object('total_tokens', g %% 3000), (g %% 4 = 3)::int * (g %% 200),
                       0, (g %% 97) / 1000.0, 'https://x.example/p/' || (g %% 50)
                FROM generate_series(1, %s) g
                """,
                [widget_ids, slug, n],
            )
            cur.execute(
                """
                INSERT INTO widgets_message (conversation_id, role, text, payload, item_id, failure_kind, created_at)
                SELECT c.id, CASE WHEN t %% 2 = 1 THEN 'user' ELSE 'assistant' END,
                       (%s::text[])[1 + (c.id * 7 + t * 13) %% %s] || ' ' || (%s::text[])[1 + (c.id + t) %% %s]
                         || ' please ' || c.id,
                       '{}'::jsonb, '',
                       CASE WHEN t = 3 AND c.id %% 41 = 0 THEN 'upstream_timeout' ELSE '' END,
                       c.started_at + t * interval '5 seconds'
                FROM widgets_conversation c CROSS JOIN generate_series(1, %s) t
                WHERE c.widget_id = ANY(%s::int[])
                """,
                [list(WORDS), len(WORDS), list(WORDS), len(WORDS), per, widget_ids],
            )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return user.username, main_key


def timed(client, url: str, n: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm
    times = []
    for _ in range(n):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(times[min(len(times) - 1, round(0.99 * len(times)) - 1)], 1),
        "queries": len(queries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages-per", type=int, default=10)
    parser.add_argument("--others", type=int, default=10)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--json", default="")
    parser.add_argument("--reuse", action="store_true", help="the database is already seeded by a previous run")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url postgres://... (an empty scratch database) is required")
    os.environ.update(
        {"DATABASE_URL": args.database_url, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "config.settings", "REDIS_URL": ""}
    )
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from widgets.analytics import rollup_day
    from widgets.models import Conversation

    settings.ALLOWED_HOSTS = ["testserver"]
    load = os.getloadavg()
    started = time.perf_counter()
    today = timezone.now().date()
    if args.reuse:
        from licenses.models import License

        username, key = "bench-inbox", License.objects.filter(agency__slug="bench").order_by("pk").first().key
        seeded = rolled = 0.0
    else:
        username, key = seed(args.conversations, args.messages_per, args.others)
        seeded = time.perf_counter() - started
        for d in range(90):
            rollup_day(today - timedelta(days=d))
        rolled = time.perf_counter() - started - seeded
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    mine = Conversation.objects.filter(widget__license__key=key).order_by("-started_at")
    some = mine.values_list("pk", flat=True)[args.conversations // 20]
    from widgets.inbox import conversation_page, conversations, filters_clean

    deep = conversation_page(conversations(agency=client_agency(username), filters=filters_clean({})))
    pages = {
        "inbox list": "/app/conversations/",
        "inbox: status=failed": "/app/conversations/?status=failed",
        "inbox: channel=voice + client": f"/app/conversations/?channel=voice&client={key}",
        "inbox: date range": f"/app/conversations/?since={today - timedelta(days=30)}&until={today - timedelta(20)}",
        "inbox: search, common word": "/app/conversations/?q=pixel",
        "inbox: search, rare (one conversation)": f"/app/conversations/?q={some}",
        "inbox: page 2 (keyset)": f"/app/conversations/?before={deep.older}",
        "conversation page": f"/app/conversations/{some}/",
        "leads": "/app/leads/",
        "analytics 30 days": "/app/analytics/?days=30",
        "analytics 90 days, one client": f"/app/analytics/?days=90&client={key}",
    }
    results = {}
    print(
        f"{args.conversations} conversations x {args.messages_per} messages for the agency, {args.others} others with "
        f"{args.conversations // 10} each; seeded in {seeded:.0f} s, 90 days rolled up in {rolled:.0f} s; "
        f"load {load[0]:.1f}; {args.requests} requests per page"
    )
    print(f"{'page':42}{'p50 ms':>9}{'p99 ms':>9}{'queries':>9}")
    for name, url in pages.items():
        results[name] = timed(client, url, args.requests)
        r = results[name]
        print(f"{name:42}{r['p50_ms']:9.1f}{r['p99_ms']:9.1f}{r['queries']:9d}")
    worst = max(r["p99_ms"] for n, r in results.items() if n.startswith(("inbox list", "analytics")))
    most = max(r["queries"] for r in results.values())
    print(
        f"goal: inbox list and analytics p99 <= 200 ms: {'MET' if worst <= 200 else 'NOT MET'} ({worst:.0f} ms); "
        f"<= 10 queries per page: {'MET' if most <= 10 else 'NOT MET'} (max {most})"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "args": {k: v for k, v in vars(args).items() if k != "database_url"},
                    "loadavg_at_start": load,
                    "seed_seconds": round(seeded),
                    "pages": results,
                },
                indent=2,
            )
            + "\n"
        )


def client_agency(username: str):
    from licenses.models import Membership

    return Membership.objects.select_related("agency").get(user__username=username).agency


if __name__ == "__main__":
    main()
