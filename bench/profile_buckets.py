"""Where a chat turn's CPU goes, from `bench/chat_proxy.py --profile`'s py-spy samples (raw format: one stack per
line, frames `function (file:line)` separated by `;`, then the sample count).

Each sample goes to the first bucket one of whose markers is in its stack, in the order below (the group commit
before the upstream reads, as the relay's reads call the commit at a stream's end), else to "other"; shares are of
all samples (py-spy `--gil`: the samples holding the GIL). A coarse map of a flat profile, not a call tree.

    python bench/chat_proxy.py ... --arrivals spread --slow 0 --messages 20 --profile --profile-phase stream \
        --profile-rate 1000
    python bench/profile_buckets.py /tmp/chat-proxy-profile.txt [--detail "view"]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("group commit", ("_GroupCommit", "_batch_record", "turn_commit", "AsyncRelay._commit")),
    ("rate limit", ("widgets/ratelimit.py", "licenses/redis.py")),
    ("first turn's step (db)", ("chat_prepare_async", "_sessions_open_async", "pg_async")),
    ("upstream request", ("N8nStream.open", "ClientSession._request", "upstream_json")),
    ("upstream reads", ("N8nStream.batches", "aiohttp/streams.py", "client_proto.py", "AsyncRelay._next")),
    ("visitor writes (Uvicorn send)", ("RequestResponseCycle.send",)),
    ("view", ("widgets/views/embed.py", "widgets/public.py", "csrf.py")),
    ("short route", ("config/chat_route.py",)),
    ("Uvicorn parsing", ("httptools_impl.py",)),
    ("aiohttp, other", ("aiohttp/",)),
    ("psycopg, other", ("psycopg/",)),
]


def buckets(lines: list[str]) -> tuple[collections.Counter[str], dict[str, collections.Counter[str]], int]:
    """(samples per bucket, per bucket the samples per innermost frame, all samples)."""
    shares: collections.Counter[str] = collections.Counter()
    frames: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        name = next((name for name, markers in BUCKETS if any(m in stack for m in markers)), "other")
        shares[name] += samples
        frames[name][stack.split(";")[-1]] += samples
    return shares, frames, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--detail", help="also list this bucket's innermost frames")
    args = parser.parse_args()
    shares, frames, total = buckets(args.profile.read_text().splitlines())
    print(f"{total} samples")
    for name, samples in shares.most_common():
        print(f"{100 * samples / total:5.1f}%  {name}")
    if args.detail:
        for frame, samples in frames[args.detail].most_common(30):
            print(f"  {100 * samples / total:5.2f}%  {frame}")


if __name__ == "__main__":
    main()
