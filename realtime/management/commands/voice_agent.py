"""`python manage.py voice_agent [start|dev|connect …]`: the LiveKit voice agent worker (realtime/voice_agent.py).

The arguments after `voice_agent` go to livekit-agents' own command line (`start` for production, `dev`
for development with reload; `--help` lists them). It needs LIVEKIT_URL, LIVEKIT_API_KEY and
LIVEKIT_API_SECRET, and an OpenAI key (the widget's or OPENAI_API_KEY)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.livekit import livekit_configured


class Command(BaseCommand):
    help = "Run the LiveKit voice agent worker (livekit-agents + OpenAI Realtime)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("agent_args", nargs="*", default=["start"], help="livekit-agents CLI arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        # Everything after the command name belongs to the agents CLI (its own options included).
        self._agent_args = argv[2:] or ["start"]
        super().run_from_argv(argv[:2])

    def handle(self, *args: Any, **options: Any) -> None:
        if not livekit_configured():
            raise CommandError("Set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET to run the voice agent.")
        from livekit.agents import cli

        from realtime.voice_agent import server

        agent_args = getattr(self, "_agent_args", None) or options.get("agent_args") or ["start"]
        sys.argv = ["manage.py voice_agent", *agent_args]
        cli.run_app(server())
