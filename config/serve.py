"""One production web process: Uvicorn (uvloop, websockets-sansio) on its own SO_REUSEPORT socket.

    python -m config.serve [--host 127.0.0.1] [--port 8000] [--graceful-timeout 30]

`make prod` runs WEB_CONCURRENCY of these under supervisord (config/supervisord.conf), which restarts any
that dies. Balancing: each process binds its own socket to the same port with SO_REUSEPORT, so the kernel
hashes new connections over the processes (Linux). With one shared listening socket (`uvicorn --workers`)
whichever process wakes first takes a burst, and voice calls landed 20:0 on two workers (issue 11,
finding 10), so the per-process cap understated capacity.

SIGTERM (a deploy or `supervisorctl restart`): stop accepting, end every voice call of this process with
`session.ended {reason: "server_restart"}` and close 1012 (the widget reconnects, to another process or
to the restarted one; the conversation is recorded as `server_restart` with its usage), then let in-flight
HTTP requests finish for up to --graceful-timeout seconds, cancel what is left and exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket

import uvicorn

logger = logging.getLogger("switchboard.serve")

DRAIN_SECONDS = 10.0  # voice calls get this long to hear server_restart and be finalised


class GracefulServer(uvicorn.Server):
    """Uvicorn whose shutdown ends voice calls with a reason the widget acts on before closing sockets."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new connections while the calls are ended
            server.close()
        for sock in sockets or []:
            sock.close()
        from realtime.relay import relay_drain

        ended = await relay_drain(
            reason="server_restart", timeout=min(DRAIN_SECONDS, self.config.timeout_graceful_shutdown or 30)
        )
        if ended:
            logger.info("shutdown: %s voice call(s) ended with server_restart", ended)
        await super().shutdown(sockets=sockets)


def reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def server_config(*, graceful_timeout: int, app: str = "config.asgi:application") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        loop="uvloop",
        ws="websockets-sansio",
        proxy_headers=True,
        timeout_graceful_shutdown=graceful_timeout,
        access_log=False,
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=int(os.environ.get("GRACEFUL_TIMEOUT", "30")),
        help="seconds in-flight requests get to finish after SIGTERM (default 30)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sock = reuseport_socket(args.host, args.port)
    logger.info("web process %s on %s:%s (SO_REUSEPORT)", os.getpid(), args.host, args.port)
    GracefulServer(server_config(graceful_timeout=args.graceful_timeout)).run(sockets=[sock])


if __name__ == "__main__":
    main()
