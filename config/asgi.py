"""ASGI entry: HTTP through Django, WebSockets through Channels.

The WebSocket stack is AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...))); the
per-license origin check happens in each consumer's connect(), before accept().
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from config.middleware import ASGIHandler  # noqa: E402

# Django's handler with its own middlewares' hooks inline instead of in a thread (config/middleware.py).
django_asgi_app = ASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402

# Customer sites embed the voice widget from any origin, so the host allowlist cannot
# decide; every consumer checks the Origin against its license before accept().
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), ["*"]),
    }
)
