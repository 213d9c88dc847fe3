"""Public routes that customer sites call (loader, public config, chat proxy, leads). See DESIGN.md."""

from django.urls import path

from widgets.views import embed

urlpatterns = [
    path("api/widget/<str:license_key>/chat-widget.js", embed.chat_widget_js, name="embed-loader"),
    path("api/widget/<str:license_key>/config", embed.widget_config, name="embed-config"),
    path("api/widget/<str:license_key>/chat", embed.chat, name="embed-chat"),
    path("api/widget/<str:license_key>/leads", embed.leads, name="embed-leads"),
    path("api/widget/<str:license_key>/identify", embed.identify, name="embed-identify"),
]
