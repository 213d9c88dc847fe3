"""The agency shell under /app/ (licenses, members, agency switch); included before the widget pages."""

from django.urls import path

from licenses import brand_pages, pages

urlpatterns = [
    path("agency/", pages.agency_switch, name="app-agency-switch"),
    path("licenses/", pages.license_list, name="app-licenses"),
    path("licenses/<str:key>/domains/", pages.license_domains, name="app-license-domains"),
    path("licenses/<str:key>/identity/", pages.license_identity, name="app-license-identity"),
    path("members/", pages.member_list, name="app-members"),
    path("members/<int:pk>/role/", pages.member_role, name="app-member-role"),
    path("members/<int:pk>/remove/", pages.member_remove, name="app-member-remove"),
    path("brand/", brand_pages.brand_page, name="app-brand"),
]
