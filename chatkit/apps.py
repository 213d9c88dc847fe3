from pathlib import Path

from django.apps import AppConfig


class ChatkitConfig(AppConfig):
    name = "chatkit"
    # The package's __path__ also holds the openai-chatkit SDK (see chatkit/__init__.py): name ours.
    path = str(Path(__file__).resolve().parent)

    def ready(self) -> None:
        # Tenant conversations must never be exported to the platform org's traces (the Agents SDK
        # traces by default with OPENAI_API_KEY); every run also passes tracing_disabled=True.
        from agents import set_tracing_disabled

        set_tracing_disabled(True)

        # The configurator's "Test connection" of a ChatKit widget (widgets never import chatkit).
        from chatkit.connection_test import chatkit_connection_test
        from widgets.connection_test import connection_test_register

        connection_test_register("chatkit", chatkit_connection_test)
