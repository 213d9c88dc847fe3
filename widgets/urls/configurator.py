"""The agency UI under /app/."""

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from licenses.brand_pages import BrandedPasswordResetForm
from widgets.views import alerts, analytics, inbox, privacy
from widgets.views.configurator import editor, pages, preview

W = "widgets/<str:public_id>/"

urlpatterns = [
    # Sign in / out and password reset (Django's auth views, our templates).
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="app-login"),
    path("logout/", auth_views.LogoutView.as_view(), name="app-logout"),
    path(
        "password-reset/",
        auth_views.PasswordResetView.as_view(
            success_url=reverse_lazy("app-password-reset-done"),
            email_template_name="registration/password_reset_email.txt",
            form_class=BrandedPasswordResetForm,
        ),
        name="app-password-reset",
    ),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="app-password-reset-done"),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            success_url=reverse_lazy("app-password-reset-complete"),
        ),
        name="app-password-reset-confirm",
    ),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="app-password-reset-complete"),
    # Shell.
    path("", pages.widget_list, name="app-home"),
    path("conversations/", inbox.conversation_list, name="app-conversations"),
    path("conversations/export.csv", inbox.conversation_csv, name="app-conversations-csv"),
    path("conversations/<int:pk>/", inbox.conversation_detail, name="app-conversation"),
    path("leads/", inbox.lead_list, name="app-leads"),
    path("leads/export.csv", inbox.lead_csv, name="app-leads-csv"),
    path("leads/<int:pk>/retry/", inbox.lead_retry_view, name="app-lead-retry"),
    path("analytics/", analytics.analytics_page, name="app-analytics"),
    path("analytics/usage.csv", analytics.analytics_csv, name="app-analytics-csv"),
    path("alerts/", alerts.alerts_page, name="app-alerts"),
    path("privacy/", privacy.privacy_page, name="app-privacy"),
    path("privacy/visitor/", privacy.privacy_visitor, name="app-privacy-visitor"),
    path("widgets/new/", pages.widget_new, name="app-widget-new"),
    path(W + "duplicate/", pages.widget_duplicate, name="app-widget-duplicate"),
    path(W + "delete/", pages.widget_delete, name="app-widget-delete"),
    # Configurator.
    path(W, editor.configurator, name="app-widget"),
    path(W + "test-connection/", editor.test_connection, name="app-widget-test-connection"),
    path(W + "chatkit-migrate/", editor.chatkit_migrate, name="app-widget-chatkit-migrate"),
    path(W + "versions/", editor.versions, name="app-widget-versions"),
    path(W + "rollback/", editor.rollback, name="app-widget-rollback"),
    path(W + "embed/", editor.embed_code, name="app-widget-embed"),
    path(W + "knowledge/", editor.knowledge, name="app-widget-knowledge"),
    path(W + "knowledge/<int:pk>/delete/", editor.knowledge_delete, name="app-widget-knowledge-delete"),
    path(W + "products/", editor.products, name="app-widget-products"),
    path(W + "products/import/", editor.products_import, name="app-widget-products-import"),
    path(W + "products/<int:pk>/delete/", editor.product_delete, name="app-widget-product-delete"),
    # Preview and share links.
    path(W + "preview-frame/", preview.preview_frame, name="app-widget-preview-frame"),
    path(W + "preview-chat/", preview.preview_chat, name="app-widget-preview-chat"),
    path(W + "preview-config/", preview.preview_config, name="app-widget-preview-config"),
    path(W + "share/", preview.share_links, name="app-widget-share"),
    path(W + "share/<int:pk>/revoke/", preview.share_revoke, name="app-widget-share-revoke"),
    path("p/<str:token>/", preview.share_page, name="app-share"),
    path("p/<str:token>/frame/", preview.share_frame, name="app-share-frame"),
    path("p/<str:token>/chat/", preview.share_chat, name="app-share-chat"),
]
