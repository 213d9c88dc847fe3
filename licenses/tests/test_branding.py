"""White-label brand service (licenses/branding.py): role gate, validation, logo sniffing, isolation."""

from __future__ import annotations

import pytest

from licenses import branding
from licenses.api import ApiError
from licenses.models import AgencyBrand, Membership

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def _membership(user):
    return user.memberships.get()


@pytest.mark.django_db
def test_owner_sets_the_brand_and_it_is_read_back(owner, agency_a):
    branding.brand_update(
        actor=_membership(owner),
        agency=agency_a,
        name="Acme Chat",
        support_email="help@acme.example",
        primary_color="#1D4ED8",
        accent_color="#f97316",
        logo_file=PNG,
    )
    row = AgencyBrand.objects.get(agency=agency_a)
    assert (row.name, row.support_email, row.primary_color, row.accent_color) == (
        "Acme Chat",
        "help@acme.example",
        "#1d4ed8",
        "#f97316",
    )
    assert bytes(row.logo) == PNG and row.logo_type == "image/png" and len(row.logo_digest) == 16
    brand = branding.brand_for_agency(agency=agency_a)
    assert brand == branding.Brand(
        name="Acme Chat",
        support_email="help@acme.example",
        primary_color="#1d4ed8",
        accent_color="#f97316",
        logo_src=f"/brand/{agency_a.pk}/logo-{row.logo_digest}",
        custom=True,
    )


@pytest.mark.django_db
def test_admin_may_set_the_brand(agency_a):
    from licenses.tests.factories import MembershipFactory

    admin = MembershipFactory(agency=agency_a, role=Membership.Role.ADMIN)
    branding.brand_update(actor=admin, agency=agency_a, name="By admin")
    assert AgencyBrand.objects.get(agency=agency_a).name == "By admin"


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_editor_and_viewer_cannot_set_the_brand(request, persona, agency_a):
    user = request.getfixturevalue(persona)
    with pytest.raises(ApiError) as exc:
        branding.brand_update(actor=_membership(user), agency=agency_a, name="Nope")
    assert (exc.value.code, exc.value.status_code) == ("permission_denied", 403)
    assert not AgencyBrand.objects.filter(agency=agency_a).exists()


@pytest.mark.django_db
def test_outsider_cannot_set_another_agencys_brand(outsider, agency_a):
    with pytest.raises(ApiError) as exc:
        branding.brand_update(actor=_membership(outsider), agency=agency_a, name="Hijack")
    assert exc.value.status_code == 404
    assert not AgencyBrand.objects.filter(agency=agency_a).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"primary_color": "red"}, "primary_color"),
        ({"accent_color": "#12345"}, "accent_color"),
        ({"accent_color": "#1234567"}, "accent_color"),
        ({"primary_color": "#12g456"}, "primary_color"),
        ({"accent_color": "#fff;}body{x"}, "accent_color"),
        ({"support_email": "not-an-address"}, "support_email"),
        ({"support_email": "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com"}, "support_email"),  # > 254
        ({"name": "x" * 81}, "name"),
        ({"name": "Acme\r\nBcc: victim@example.com"}, "name"),  # the name is an e-mail header's display name
        ({"name": "Acme\u2028Chat"}, "name"),
        ({"logo_url": "http://cdn.example/logo.png"}, "logo_url"),
        ({"logo_url": "javascript:alert(1)"}, "logo_url"),
        ({"logo_url": 'https://cdn.example/a".png'}, "logo_url"),
        ({"logo_file": SVG}, "logo"),
        ({"logo_file": b"GIF8" + b"x" * 10}, "logo"),
        ({"logo_file": PNG + b"\x00" * branding.LOGO_MAX_BYTES}, "logo"),
    ],
)
def test_invalid_brand_input_is_refused_naming_the_field(owner, agency_a, changes, field):
    with pytest.raises(ApiError) as exc:
        branding.brand_update(actor=_membership(owner), agency=agency_a, **changes)
    assert exc.value.status_code == 400
    assert list(exc.value.fields) == [field]
    assert not AgencyBrand.objects.filter(agency=agency_a).exists()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "image/jpeg"),
        (b"GIF89a" + b"\x00" * 8, "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (SVG, None),
        (b"<html><script>alert(1)</script>", None),
        (b"", None),
    ],
)
def test_logo_type_comes_from_the_bytes(data, kind):
    assert branding.logo_sniff(data) == kind


@pytest.mark.django_db
def test_a_logo_url_replaces_an_upload_and_remove_clears_both(owner, agency_a):
    actor = _membership(owner)
    branding.brand_update(actor=actor, agency=agency_a, logo_file=PNG)
    branding.brand_update(actor=actor, agency=agency_a, logo_url="https://cdn.example/logo.png")
    row = AgencyBrand.objects.get(agency=agency_a)
    assert (bytes(row.logo), row.logo_digest, row.logo_url) == (b"", "", "https://cdn.example/logo.png")
    assert branding.brand_for_agency(agency=agency_a).logo_src == "https://cdn.example/logo.png"
    branding.brand_update(actor=actor, agency=agency_a, logo_file=PNG)
    branding.brand_update(actor=actor, agency=agency_a, name="Keeps the upload")
    assert AgencyBrand.objects.get(agency=agency_a).logo_digest != ""
    branding.brand_update(actor=actor, agency=agency_a, logo_clear=True)
    row = AgencyBrand.objects.get(agency=agency_a)
    assert (bytes(row.logo), row.logo_digest, row.logo_url) == (b"", "", "")


@pytest.mark.django_db
def test_brand_of_agency_a_is_never_agency_bs(owner, agency_a, agency_b):
    branding.brand_update(actor=_membership(owner), agency=agency_a, name="Acme Chat", primary_color="#111111")
    assert branding.brand_for_agency(agency=agency_b) == branding.PLATFORM_BRAND
    assert branding.brand_for_agency(agency=agency_a).name == "Acme Chat"


@pytest.mark.django_db
def test_mail_brand_is_the_users_only_agency_else_the_platforms(owner, outsider, agency_a, agency_b):
    from licenses.tests.factories import MembershipFactory

    branding.brand_update(
        actor=_membership(owner), agency=agency_a, name="Acme Chat", support_email="help@acme.example"
    )
    brand = branding.brand_for_user(user=owner)
    assert brand.name == "Acme Chat"
    assert branding.brand_mail_headers(brand) == {
        "from_email": "Acme Chat <no-reply@switchboard.local>",
        "reply_to": ["help@acme.example"],
    }
    assert branding.brand_for_user(user=outsider) == branding.PLATFORM_BRAND
    assert branding.brand_mail_headers(branding.PLATFORM_BRAND) == {"from_email": None}
    MembershipFactory(user=owner, agency=agency_b)  # in two agencies: neither brand
    assert branding.brand_for_user(user=owner) == branding.PLATFORM_BRAND
