from django.apps import AppConfig


class WidgetsConfig(AppConfig):
    name = "widgets"

    def ready(self) -> None:
        from widgets import loader  # noqa: F401 - connects the loader's cache invalidation receivers
