from django.apps import AppConfig


class ChatkitConfig(AppConfig):
    name = "chatkit"
