"""Public routes that customer sites call (loader, public config, chat proxy). See DESIGN.md."""

urlpatterns: list = []
