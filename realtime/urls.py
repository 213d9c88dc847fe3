from django.urls import path

from realtime import views

app_name = "realtime"
urlpatterns = [
    path("api/realtime/config", views.realtime_config, name="config"),
    path("api/realtime/client-secret", views.client_secret, name="client-secret"),
    path("api/widget/<str:license_key>/tools/<str:name>", views.tool_call, name="tool-call"),
    path("api/livekit/token", views.livekit_token, name="livekit-token"),
    path("api/widget/<str:license_key>/voice/record", views.call_record, name="call-record"),
    # The configurator preview's test call (a member's page under /app/; the socket is realtime's).
    path("app/widgets/<str:public_id>/voice-preview/", views.voice_preview_ticket, name="voice-preview"),
]
