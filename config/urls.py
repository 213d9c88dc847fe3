from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from licenses.brand_pages import brand_logo
from licenses.views import healthz
from widgets.views.staff import staff_analytics


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """The product's icon (static/app/favicon.svg, its hashed name in production: resolved per request)."""
    return HttpResponsePermanentRedirect(static("app/favicon.svg"))


api_v1 = [
    path("", include("licenses.urls")),
    path("", include("widgets.urls.api")),
]

urlpatterns = [
    path("admin/analytics/", staff_analytics, name="admin-analytics"),  # before the admin's catch-all
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    # Browsers ask every host for /favicon.ico (admin, error pages, share pages): one answer, not a 404.
    path("favicon.ico", favicon, name="favicon"),
    # An agency's uploaded logo (issue 15.5): public, because share pages and e-mails show it signed out.
    path("brand/<int:agency_id>/logo-<str:digest>", brand_logo, name="brand-logo"),
    path("app/", include("licenses.urls_app")),
    path("app/", include("widgets.urls.configurator")),
    path("", include("widgets.urls.embed")),
    path("", include("widgets.urls.demo")),
    path("", include("chatkit.urls")),
    path("", include("realtime.urls")),
]

# JSON endpoints answer JSON errors, and 503 + Retry-After when the database or Redis is away.
handler500 = "config.errors.server_error"
