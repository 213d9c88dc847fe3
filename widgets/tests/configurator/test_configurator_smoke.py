import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_smoke_all_pages(client, owner, widget_a):
    client.force_login(owner)
    wid = widget_a.public_id
    for name, kwargs in [
        ("app-home", {}),
        ("app-licenses", {}),
        ("app-members", {}),
        ("app-widget-new", {}),
        ("app-widget", {"public_id": wid}),
        ("app-widget-versions", {"public_id": wid}),
        ("app-widget-embed", {"public_id": wid}),
        ("app-widget-knowledge", {"public_id": wid}),
        ("app-widget-products", {"public_id": wid}),
        ("app-widget-share", {"public_id": wid}),
        ("app-widget-preview-frame", {"public_id": wid}),
        ("app-widget-delete", {"public_id": wid}),
    ]:
        r = client.get(reverse(name, kwargs=kwargs))
        assert r.status_code == 200, (name, r.status_code)
