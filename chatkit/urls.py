"""ChatKit routes (mounted at the site root by config/urls.py)."""

from django.urls import path

from chatkit import views

app_name = "chatkit"
urlpatterns = [
    path("widget/chatkit/preview/<str:public_id>", views.preview_page, name="preview"),
    path("widget/chatkit/share/<str:token>", views.share_page, name="share"),
    path("widget/chatkit/<str:license_key>", views.page, name="page"),
    path("api/chatkit/sessions", views.session_create, name="sessions"),
    path("api/chatkit/preview-sessions", views.preview_session_create, name="preview-sessions"),
    path("api/chatkit/preview-options", views.PreviewOptionsView.as_view(), name="preview-options"),
    path("api/chatkit/<str:license_key>/", views.server, name="server"),
]
