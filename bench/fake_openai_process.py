"""The fake OpenAI Responses API (chatkit/tests/fake_openai.py) in a process of its own, for the benchmarks.

    python bench/fake_openai_process.py --record <file> [--chunks 20] [--chunk-delay 0] [--delay 0]

Prints its base URL (`http://127.0.0.1:<port>/v1`) as the first line on stdout, then serves until killed.
The body of the first `POST /v1/responses` it receives is written to `--record` (JSON), so the bench can
replay the request the Agents SDK sent. Run inside the bench process, the fake shared one GIL with the
bench's client threads: at 50 concurrent conversations its own first byte moved with the clients' load
(118–367 ms), and its streaming to the servers under test delayed the clients' reading of their answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatkit.tests.fake_openai import FakeOpenAI  # noqa: E402  (no Django: the fake imports the stdlib only)


class _FirstResponse(list):
    """The fake's request log: writes the first Responses body to `path` and keeps nothing (so a long run
    does not grow the process)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.lock = threading.Lock()

    def append(self, request) -> None:
        with self.lock:
            if request.path == "/v1/responses" and not self.path.exists():
                self.path.write_text(json.dumps(request.body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", required=True, help="write the first /v1/responses body here (JSON)")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeOpenAI(delay=args.delay)
    fake.reply = " ".join(f"word{i}" for i in range(args.chunks * 2))
    fake.chunks, fake.chunk_delay = args.chunks, args.chunk_delay
    fake.requests = _FirstResponse(Path(args.record))
    fake.start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
