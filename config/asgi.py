"""ASGI entry: HTTP through Django, WebSockets through Channels.

The WebSocket stack is AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(...))); the
per-license origin check happens in each consumer's connect(), before accept().
"""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from config.chat_route import ChatRoute  # noqa: E402
from config.middleware import ASGIHandler  # noqa: E402

# Django's handler with its own middlewares' hooks inline instead of in a thread (config/middleware.py),
# behind the public chat's short route (config/chat_route.py).
django_asgi_app = ASGIHandler()
http_app = ChatRoute(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402

# Customer sites embed the voice widget from any origin, so the host allowlist cannot
# decide; every consumer checks the Origin against its license before accept().
application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), ["*"]),
    }
)

# The process's startup objects (Django, every app's modules, URLconf, the chat route's views) live as long
# as the process: moved out of the cyclic GC's reach (gc.freeze), so a full collection no longer walks them.
# Issue 11 bench (bench/chat_proxy.py): a full collection of the ~310,000 startup objects stopped the event
# loop for 0.3-0.5 s a few times per run (every request in flight waited: the proxy's p99) and was a third
# of the CPU per turn. Reference counting still frees everything; only cycles among them are kept.
http_app.hooks()  # import the chat route's views now, so they are frozen with the rest
gc.collect()
gc.freeze()
# A young-generation collection every 10,000 net allocations instead of 700: with 200 requests in flight most
# young objects are still alive when it runs, and each was walked again and again on its way to the old
# generation (in-process, 100 visitors x 5 turns: the collector's time 285 -> 122 ms per 2,000 turns, and no
# full collection — 33-53 ms pauses — instead of two).
gc.set_threshold(10_000, 20, 10)
