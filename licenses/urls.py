from django.urls import path

from licenses import views

urlpatterns = [
    path("me/", views.MeView.as_view(), name="api-me"),
    path("me/agency/", views.SwitchAgencyView.as_view(), name="api-me-agency"),
    path("licenses/", views.LicenseListView.as_view(), name="api-license-list"),
    path("licenses/<str:key>/", views.LicenseDetailView.as_view(), name="api-license-detail"),
    path("licenses/<str:key>/<str:action>/", views.LicenseActionView.as_view(), name="api-license-action"),
]
