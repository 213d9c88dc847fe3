from django.urls import path

from realtime.consumers import RealtimePreviewConsumer, RealtimeRelayConsumer

websocket_urlpatterns = [
    path("ws/realtime/preview/<str:ticket>/", RealtimePreviewConsumer.as_asgi()),
    path("ws/realtime/<str:license_key>/", RealtimeRelayConsumer.as_asgi()),
]
