"""WebSocket routes of every app, gathered in one list."""

from realtime.routing import websocket_urlpatterns as realtime_websocket_urlpatterns

websocket_urlpatterns: list = [
    *realtime_websocket_urlpatterns,
]
