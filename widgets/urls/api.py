from django.urls import path

from widgets.views import api

urlpatterns = [
    path("widgets/", api.WidgetListView.as_view(), name="api-widget-list"),
    path("widgets/config-schema/", api.ConfigSchemaView.as_view(), name="api-widget-config-schema"),
    path("widgets/<str:public_id>/", api.WidgetDetailView.as_view(), name="api-widget-detail"),
    path("widgets/<str:public_id>/publish/", api.WidgetPublishView.as_view(), name="api-widget-publish"),
    path("widgets/<str:public_id>/versions/", api.WidgetVersionsView.as_view(), name="api-widget-versions"),
    path("widgets/<str:public_id>/rollback/", api.WidgetRollbackView.as_view(), name="api-widget-rollback"),
    path("widgets/<str:public_id>/duplicate/", api.WidgetDuplicateView.as_view(), name="api-widget-duplicate"),
]
