"""White-label on /app/, share pages and e-mails (issue 15.5): every persona, and agency A's brand never
shown to agency B."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from licenses import branding
from licenses.models import AgencyBrand, Membership
from widgets.services.preview_links import preview_link_create, preview_link_token

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
BRAND_URL = "/app/brand/"


def set_brand(user, **fields):
    membership = user.memberships.get()
    return branding.brand_update(actor=membership, agency=membership.agency, **fields)


def form(**changes):
    values = {"name": "", "support_email": "", "primary_color": "", "accent_color": "", "logo_url": ""}
    return {**values, **changes}


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(BRAND_URL)
    assert response.status_code == 302 and response["Location"] == f"/app/login/?next={BRAND_URL}"
    response = client.post(BRAND_URL, form(name="X"))
    assert response.status_code == 302 and not AgencyBrand.objects.exists()


def test_owner_saves_the_brand_with_an_uploaded_logo(client, owner, agency_a):
    client.force_login(owner)
    page = client.get(BRAND_URL)
    assert page.status_code == 200 and b'name="name"' in page.content and b"Save brand" in page.content
    logo = SimpleUploadedFile("logo.png", PNG, content_type="image/png")
    response = client.post(
        BRAND_URL,
        {**form(name="Acme Chat", support_email="help@acme.example", primary_color="#1d4ed8"), "logo": logo},
    )
    assert response.status_code == 302 and response["Location"] == BRAND_URL
    row = AgencyBrand.objects.get(agency=agency_a)
    assert (row.name, row.support_email, row.primary_color, bytes(row.logo)) == (
        "Acme Chat",
        "help@acme.example",
        "#1d4ed8",
        PNG,
    )
    home = client.get("/app/").content.decode()
    assert '<span class="brand-text">Acme Chat</span>' in home
    assert f'src="/brand/{agency_a.pk}/logo-{row.logo_digest}"' in home
    assert ".topbar { background: #1d4ed8; }" in home
    assert 'href="mailto:help@acme.example"' in home
    assert "<title>Widgets · Acme Chat</title>" in home


def test_an_admin_saves_the_brand(client, agency_a):
    admin = get_user_model().objects.create_user("admin-a", "admin-a@example.test")
    Membership.objects.create(user=admin, agency=agency_a, role=Membership.Role.ADMIN)
    client.force_login(admin)
    assert client.post(BRAND_URL, form(name="By admin")).status_code == 302
    assert AgencyBrand.objects.get(agency=agency_a).name == "By admin"


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_editor_and_viewer_see_the_brand_read_only_and_cannot_change_it(request, client, owner, persona, agency_a):
    set_brand(owner, name="Acme Chat")
    client.force_login(request.getfixturevalue(persona))
    page = client.get(BRAND_URL)
    assert page.status_code == 200
    assert b"Read-only: admins and owners change the brand." in page.content
    assert b"Save brand" not in page.content and b'value="Acme Chat"' in page.content
    response = client.post(BRAND_URL, form(name="Hijacked"))
    assert response.status_code == 403 and b"Your role may not change the agency" in response.content
    assert AgencyBrand.objects.get(agency=agency_a).name == "Acme Chat"


def test_outsider_edits_only_their_own_agency_and_never_sees_agency_as_brand(client, owner, outsider, agency_b):
    set_brand(owner, name="Acme Chat", primary_color="#1d4ed8", support_email="help@acme.example")
    client.force_login(outsider)
    for path in (BRAND_URL, "/app/", "/app/licenses/"):
        content = client.get(path).content.decode()
        assert '<span class="brand-text">Switchboard</span>' in content
        assert "Acme Chat" not in content and "#1d4ed8" not in content and "help@acme.example" not in content
    # A header naming agency A does not switch an outsider into it.
    page = client.get(BRAND_URL, HTTP_X_SWITCHBOARD_AGENCY="agency-a")
    assert page.context["membership"].agency == agency_b and b"Acme Chat" not in page.content
    assert client.post(BRAND_URL, form(name="Outsider brand")).status_code == 302
    assert dict(AgencyBrand.objects.values_list("agency__slug", "name")) == {
        "agency-a": "Acme Chat",
        "agency-b": "Outsider brand",
    }


def test_invalid_fields_are_named_and_nothing_is_saved(client, owner, agency_a):
    client.force_login(owner)
    svg = SimpleUploadedFile("logo.png", b"<svg onload=alert(1)></svg>", content_type="image/png")
    response = client.post(BRAND_URL, {**form(primary_color="blue"), "logo": svg})
    assert response.status_code == 400
    assert response.context["errors"] == {
        "primary_color": ["Use a colour like #1d4ed8 (a # and six hex digits)."],
        "logo": ["Upload a PNG, JPEG, GIF or WebP image (SVG and other files are refused)."],
    }
    assert b'aria-invalid="true"' in response.content and not AgencyBrand.objects.exists()


@pytest.mark.parametrize(
    "name",
    ["Acme\u202eevil", "Acme\u2066Chat\u2069", "Acme\u200fChat", "Ac\u200bme", "\ufeffAcme", "Acme\r\nChat"],
)
def test_a_brand_name_with_bidi_zero_width_or_control_characters_is_refused(client, owner, agency_a, name):
    client.force_login(owner)
    response = client.post(BRAND_URL, form(name=name))
    assert response.status_code == 400
    assert list(response.context["errors"]) == ["name"] and not AgencyBrand.objects.exists()


def test_a_brand_name_may_hold_joiners_that_scripts_and_emoji_need(client, owner, agency_a):
    client.force_login(owner)
    name = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645 \U0001f468\u200d\U0001f4bb"  # Persian ZWNJ, emoji ZWJ
    assert client.post(BRAND_URL, form(name=name)).status_code == 302
    assert AgencyBrand.objects.get(agency=agency_a).name == name


def test_the_logo_is_served_with_its_sniffed_type_and_nothing_in_it_can_run(client, owner, agency_a, agency_b):
    row = set_brand(owner, logo_file=PNG)
    url = reverse("brand-logo", kwargs={"agency_id": agency_a.pk, "digest": row.logo_digest})
    response = client.get(url)
    assert response.status_code == 200 and response.content == PNG
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    other = reverse("brand-logo", kwargs={"agency_id": agency_b.pk, "digest": row.logo_digest})
    assert client.get(other).status_code == 404
    assert client.get(url.replace(row.logo_digest, "0" * 16)).status_code == 404


def _share_token(owner, widget):
    link = preview_link_create(widget=widget, user=owner, membership=owner.memberships.get())
    return preview_link_token(link)


def test_share_page_wears_the_agencys_brand_and_powered_by_follows_the_license(client, owner, widget_a):
    set_brand(owner, name="Acme Chat", accent_color="#f97316", support_email="help@acme.example")
    url = reverse("app-share", kwargs={"token": _share_token(owner, widget_a)})
    content = client.get(url).content.decode()
    assert '<span class="brand-text">Acme Chat</span>' in content and "--accent: #f97316;" in content
    assert 'href="mailto:help@acme.example"' in content
    assert '<span class="powered-by" id="powered-by">Powered by Switchboard</span>' in content
    widget_a.license.white_label = True
    widget_a.license.save()
    content = client.get(url).content.decode()
    assert '<span class="brand-text">Acme Chat</span>' in content and "Powered by" not in content


def test_another_agencys_share_page_keeps_its_own_brand(client, owner, outsider, widget_b):
    set_brand(owner, name="Acme Chat")
    content = client.get(reverse("app-share", kwargs={"token": _share_token(outsider, widget_b)})).content.decode()
    assert '<span class="brand-text">Switchboard</span>' in content and "Acme Chat" not in content


def test_invitation_mail_carries_the_inviting_agencys_brand(client, owner):
    set_brand(owner, name="Acme Chat", support_email="help@acme.example")
    client.force_login(owner)
    client.post("/app/members/", {"email": "new@client.example", "role": "editor"})
    (sent,) = mail.outbox
    assert sent.from_email == "Acme Chat <no-reply@switchboard.local>"
    assert sent.reply_to == ["help@acme.example"] and sent.to == ["new@client.example"]
    assert sent.body.startswith("You have been invited to Agency A on Acme Chat.")
    assert "Questions? Write to help@acme.example." in sent.body and "Switchboard" not in sent.body


def test_a_brand_name_with_a_line_break_never_breaks_the_invitation_mail(client, owner):
    """A row saved before names were checked (or by hand): the From header gets the name on one line instead
    of the invitation failing with a 500 (Django refuses line breaks in headers)."""
    set_brand(owner, name="Acme Chat")
    AgencyBrand.objects.filter(agency=owner.memberships.get().agency).update(name="Acme\r\nBcc: victim@example.com")
    client.force_login(owner)
    response = client.post("/app/members/", {"email": "new@client.example", "role": "editor"})
    assert response.status_code == 200
    (sent,) = mail.outbox
    assert sent.from_email == '"Acme Bcc: victim@example.com" <no-reply@switchboard.local>'
    assert sent.message()["Bcc"] is None and sent.recipients() == ["new@client.example"]


def test_invitation_mail_of_an_unbranded_agency_is_the_platforms(client, outsider):
    client.force_login(outsider)
    client.post("/app/members/", {"email": "new@client.example", "role": "editor"})
    (sent,) = mail.outbox
    assert sent.from_email == "Switchboard <no-reply@switchboard.local>" and sent.reply_to == []
    assert sent.body.startswith("You have been invited to Agency B on Switchboard.")


def test_password_reset_mail_carries_the_users_agency_brand(client, owner, outsider):
    set_brand(owner, name="Acme Chat", support_email="help@acme.example")
    client.post(reverse("app-password-reset"), {"email": owner.email})
    client.post(reverse("app-password-reset"), {"email": outsider.email})
    branded, plain = mail.outbox
    assert branded.subject == "Reset your Acme Chat password" and branded.to == [owner.email]
    assert branded.from_email == "Acme Chat <no-reply@switchboard.local>" and branded.reply_to == ["help@acme.example"]
    assert "your Acme Chat account (owner-a)" in branded.body and re.search(r"/app/reset/[^/]+/[^/]+/", branded.body)
    assert plain.subject == "Reset your Switchboard password" and "Acme Chat" not in plain.body
    assert plain.from_email == "Switchboard <no-reply@switchboard.local>"


def test_the_brand_page_says_where_powered_by_shows_as_the_widget_and_share_pages_do(client, owner, widget_a):
    """The Brand page's promise matches the product: the share page shows “Powered by” (until staff
    white-label the license), the embedded widget's bundle and public config carry none."""
    client.force_login(owner)
    note = re.search(r'<span id="powered-by-note">(.*?)</span>', client.get(BRAND_URL).content.decode()).group(1)
    assert "Share links say “Powered by Switchboard” unless" in note and "never shows it" in note
    share = client.get(reverse("app-share", kwargs={"token": _share_token(owner, widget_a)})).content.decode()
    assert 'id="powered-by"' in share
    widget_js = (settings.BASE_DIR / "static" / "widget" / "widget.js").read_text()
    assert "Powered by" not in widget_js and "powered" not in widget_js.lower()


def test_the_brand_page_flags_a_verified_domain_whose_dns_recheck_fails(client, owner, agency_a, settings):
    from licenses import hosts
    from licenses.models import CustomDomain

    settings.CUSTOM_DOMAIN_TARGET = "edge.platform.example"
    answers = {"edge.platform.example": "203.0.113.5", "chat.agency.example": "203.0.113.5"}
    resolve = lambda host, *a, **k: [(2, 1, 6, "", (answers[host], 0))]  # noqa: E731
    hosts.custom_domain_check(
        domain=CustomDomain.objects.create(agency=agency_a, host="chat.agency.example"), resolve=resolve
    )
    client.force_login(owner)
    assert b"data-domain-failing" not in client.get(BRAND_URL).content
    answers["chat.agency.example"] = "198.51.100.9"
    hosts.custom_domains_recheck(resolve=resolve)
    page = client.get(BRAND_URL).content.decode()
    assert "Verified · DNS failing" in page and "still served until" in page and "198.51.100.9" in page
