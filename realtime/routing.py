from django.urls import path

from realtime.consumers import RealtimeRelayConsumer

websocket_urlpatterns = [
    path("ws/realtime/<str:license_key>/", RealtimeRelayConsumer.as_asgi()),
]
