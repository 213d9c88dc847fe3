"""One web process as production runs it (config/serve.py: Uvicorn, uvloop, its own SO_REUSEPORT socket), for any
ASGI app, so a bench can start `--workers N` of them on one port like `make prod` does (and the SDK floor the same
way as our project).

    cd <project> && python <this file> --app config.asgi:application --port P

The app is imported from the working directory's project (bench/chatkit_server.py --baseline-tree serves a copy
of another commit with this same file).

Prints `ready` on stdout once it accepts connections (with N processes on one port, a health check could be
answered by an earlier one).
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

sys.path.insert(0, os.getcwd())

from config.serve import reuseport_socket, server_config  # noqa: E402


class _Server(uvicorn.Server):
    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        print("ready", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sock = reuseport_socket("127.0.0.1", args.port)
    _Server(server_config(graceful_timeout=5, app=args.app)).run(sockets=[sock])


if __name__ == "__main__":
    main()
