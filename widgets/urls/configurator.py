"""The agency UI under /app/."""

urlpatterns: list = []
