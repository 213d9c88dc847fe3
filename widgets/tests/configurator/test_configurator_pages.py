"""Server tests of the agency UI (/app/): every page and action, by persona."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from licenses.models import Membership
from licenses.services import usage_increment
from licenses.tests.factories import MembershipFactory, UserFactory
from widgets.models import Conversation, Widget

pytestmark = pytest.mark.django_db

WIDGET_PAGES = [
    "app-widget",
    "app-widget-versions",
    "app-widget-embed",
    "app-widget-knowledge",
    "app-widget-products",
    "app-widget-share",
    "app-widget-preview-frame",
]
SHELL_PAGES = ["app-home", "app-licenses", "app-members", "app-widget-new"]


def login(client, user):
    client.force_login(user)
    return client


# --- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHELL_PAGES)
def test_anonymous_is_sent_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith("/app/login/")


@pytest.mark.parametrize("name", WIDGET_PAGES)
def test_anonymous_widget_pages_redirect_to_login(client, widget_a, name):
    response = client.get(reverse(name, kwargs={"public_id": widget_a.public_id}))
    assert response.status_code == 302
    assert "/app/login/" in response["Location"]


@pytest.mark.parametrize("name", WIDGET_PAGES)
def test_outsider_gets_404_on_widget_pages(client, outsider, widget_a, name):
    response = login(client, outsider).get(reverse(name, kwargs={"public_id": widget_a.public_id}))
    assert response.status_code == 404


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
@pytest.mark.parametrize("name", WIDGET_PAGES)
def test_members_see_widget_pages(client, request, widget_a, persona, name):
    user = request.getfixturevalue(persona)
    response = login(client, user).get(reverse(name, kwargs={"public_id": widget_a.public_id}))
    assert response.status_code == 200


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
@pytest.mark.parametrize("name", SHELL_PAGES)
def test_members_see_shell_pages(client, request, widget_a, persona, name):
    response = login(client, request.getfixturevalue(persona)).get(reverse(name))
    assert response.status_code == 200


def test_user_without_agency_gets_a_friendly_page(client, db):
    response = login(client, UserFactory(username="lonely")).get(reverse("app-home"))
    assert response.status_code == 403
    assert b"not in an agency" in response.content


def test_outsider_list_does_not_show_other_agencies_widgets(client, outsider, widget_a, widget_b):
    body = login(client, outsider).get(reverse("app-home")).content.decode()
    assert widget_b.name in body and widget_a.public_id not in body


# --- sign in, reset, agency switch ----------------------------------------------------------------


def test_login_form_signs_in(client, owner):
    response = client.post(reverse("app-login"), {"username": owner.username, "password": "pass-word-123"})
    assert response.status_code == 302 and response["Location"] == "/app/"
    assert client.get("/app/").status_code == 200


def test_login_with_wrong_password_shows_error(client, owner):
    response = client.post(reverse("app-login"), {"username": owner.username, "password": "nope"})
    assert response.status_code == 200
    assert b"callout danger" in response.content


def test_logout_is_post(client, owner):
    login(client, owner)
    assert client.post(reverse("app-logout")).status_code == 302
    assert client.get("/app/").status_code == 302


def test_password_reset_emails_a_link(client, owner):
    response = client.post(reverse("app-password-reset"), {"email": owner.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and "/app/reset/" in mail.outbox[0].body


def test_agency_switcher(client, owner, agency_b):
    MembershipFactory(user=owner, agency=agency_b, role=Membership.Role.VIEWER)
    login(client, owner)
    assert b"agency-select" in client.get("/app/").content
    client.post(reverse("app-agency-switch"), {"agency": agency_b.pk})
    assert b"Agency B" in client.get(reverse("app-licenses")).content
    assert client.get("/app/").context["membership"].agency == agency_b


def test_agency_switcher_refuses_foreign_agency(client, member, agency_b):
    login(client, member)
    client.post(reverse("app-agency-switch"), {"agency": agency_b.pk})
    assert client.get("/app/").context["membership"].agency.slug == "agency-a"


# --- widgets list, create, duplicate, delete --------------------------------------------------------


def test_widget_list_shows_status_and_conversations(client, owner, widget_a, license_a):
    Conversation.objects.create(widget=widget_a, channel="chat")
    Conversation.objects.create(widget=widget_a, channel="chat", is_preview=True)
    draft = Widget.objects.create(license=license_a, name="Draft only", config=widget_a.config, widget_type="n8n")
    response = login(client, owner).get("/app/")
    widgets = {w.public_id: w for g in response.context["groups"] for w in g["widgets"]}
    assert widgets[widget_a.public_id].conversations_month == 1
    body = response.content.decode()
    assert "Published v1" in body and "Never published" in body and draft.name in body


def test_create_chatkit_widget(client, member, license_a):
    response = login(client, member).post(
        reverse("app-widget-new"), {"name": "Kit", "license": license_a.key, "provider": "chatkit"}
    )
    widget = Widget.objects.get(name="Kit")
    assert response.status_code == 302 and widget.public_id in response["Location"]
    assert widget.widget_type == "chatkit" and widget.config["connection"]["provider"] == "chatkit"


def test_create_widget_invalid_input(client, member, license_a, license_b):
    login(client, member)
    response = client.post(reverse("app-widget-new"), {"name": "", "license": license_a.key, "provider": "n8n"})
    assert response.status_code == 400 and response.context["errors"]["name"]
    response = client.post(reverse("app-widget-new"), {"name": "X", "license": license_b.key, "provider": "n8n"})
    assert response.status_code == 400 and response.context["errors"]["license"]
    response = client.post(reverse("app-widget-new"), {"name": "X", "license": license_a.key, "provider": "bogus"})
    assert response.status_code == 400
    assert not Widget.objects.filter(license=license_a).exists()


def test_viewer_cannot_create_widget(client, viewer, license_a):
    response = login(client, viewer).post(
        reverse("app-widget-new"), {"name": "V", "license": license_a.key, "provider": "n8n"}
    )
    assert response.status_code == 403
    assert not Widget.objects.filter(name="V").exists()


def test_duplicate_widget(client, member, widget_a):
    login(client, member).post(reverse("app-widget-duplicate", kwargs={"public_id": widget_a.public_id}))
    assert Widget.objects.filter(name="Widget A (copy)").exists()


def test_viewer_cannot_duplicate(client, viewer, widget_a):
    response = login(client, viewer).post(reverse("app-widget-duplicate", kwargs={"public_id": widget_a.public_id}))
    assert response.status_code == 403 and Widget.objects.count() == 1


def test_outsider_cannot_duplicate(client, outsider, widget_a):
    response = login(client, outsider).post(reverse("app-widget-duplicate", kwargs={"public_id": widget_a.public_id}))
    assert response.status_code == 404


def test_owner_deletes_widget_after_confirm(client, owner, widget_a):
    url = reverse("app-widget-delete", kwargs={"public_id": widget_a.public_id})
    login(client, owner)
    assert b"cannot be undone" in client.get(url).content
    assert client.post(url).status_code == 302
    assert not Widget.objects.filter(pk=widget_a.pk).exists()


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_editor_and_viewer_cannot_delete(client, request, widget_a, persona):
    url = reverse("app-widget-delete", kwargs={"public_id": widget_a.public_id})
    login(client, request.getfixturevalue(persona))
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    assert Widget.objects.filter(pk=widget_a.pk).exists()


def test_outsider_cannot_delete(client, outsider, widget_a):
    response = login(client, outsider).post(reverse("app-widget-delete", kwargs={"public_id": widget_a.public_id}))
    assert response.status_code == 404 and Widget.objects.filter(pk=widget_a.pk).exists()


# --- licenses ---------------------------------------------------------------------------------------


def test_licenses_page_shows_domains_limits_and_usage(client, viewer, license_a, widget_a):
    usage_increment(license=license_a, conversations=250, voice_seconds=600)
    response = login(client, viewer).get(reverse("app-licenses"))
    body = response.content.decode()
    assert "shop.example.com" in body and license_a.key in body
    meters = response.context["rows"][0]["meters"]
    assert meters[0]["used"] == "250" and meters[0]["percent"] == 25
    assert meters[1]["used"] == "10" and meters[2]["used"] == "1"


def test_license_without_domains_is_flagged(client, owner, license_a):
    license_a.allowed_domains = []
    license_a.save()
    assert b"will not load anywhere" in login(client, owner).get(reverse("app-licenses")).content


# --- members ----------------------------------------------------------------------------------------


def test_admin_invites_new_user(client, owner, agency_a):
    response = login(client, owner).post(reverse("app-members"), {"email": "New@Agency.test", "role": "editor"})
    assert response.status_code == 200
    membership = Membership.objects.get(agency=agency_a, user__email="new@agency.test")
    assert membership.role == "editor" and not membership.user.has_usable_password()
    # The password-set link goes to the invitee's mailbox only, never to the inviter's screen.
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new@agency.test"]
    link = re.search(r"(http://testserver/app/reset/\S+)", mail.outbox[0].body).group(1)
    assert "/app/reset/" not in response.content.decode()
    # The link lets them set a password.
    set_page = client.get(link, follow=True)
    assert set_page.context["validlink"]


def test_invite_existing_user_adds_membership(client, owner, outsider, agency_a):
    login(client, owner).post(reverse("app-members"), {"email": outsider.email, "role": "viewer"})
    assert Membership.objects.filter(agency=agency_a, user=outsider, role="viewer").exists()


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        # Valid to Django's validator (up to 320 characters), longer than the e-mail column (254): a 500 on
        # PostgreSQL before.
        "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com",
    ],
)
def test_invite_invalid_email(client, owner, agency_a, email):
    response = login(client, owner).post(reverse("app-members"), {"email": email, "role": "editor"})
    assert response.status_code == 400 and response.context["errors"]["email"]
    assert Membership.objects.filter(agency=agency_a).count() == 1


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_non_admins_cannot_invite(client, request, agency_a, persona):
    response = login(client, request.getfixturevalue(persona)).post(
        reverse("app-members"), {"email": "x@y.test", "role": "editor"}
    )
    assert response.status_code == 403
    assert not Membership.objects.filter(user__email="x@y.test").exists()


def test_change_role_and_remove(client, owner, member):
    m = member.memberships.get()
    login(client, owner).post(reverse("app-member-role", kwargs={"pk": m.pk}), {"role": "admin"})
    m.refresh_from_db()
    assert m.role == "admin"
    client.post(reverse("app-member-remove", kwargs={"pk": m.pk}))
    assert not Membership.objects.filter(pk=m.pk).exists()


def test_last_owner_cannot_be_removed_or_demoted(client, owner, agency_a):
    admin = UserFactory(username="admin-a")
    MembershipFactory(user=admin, agency=agency_a, role="admin")
    own = owner.memberships.get()
    login(client, owner)
    client.post(reverse("app-member-role", kwargs={"pk": own.pk}), {"role": "editor"})
    own.refresh_from_db()
    assert own.role == "owner"
    response = client.post(reverse("app-member-remove", kwargs={"pk": own.pk}), follow=True)
    assert Membership.objects.filter(pk=own.pk).exists()
    assert b"at least one owner" in response.content


def test_admin_cannot_touch_owner(client, owner, agency_a):
    admin = UserFactory(username="admin-a")
    MembershipFactory(user=admin, agency=agency_a, role="admin")
    own = owner.memberships.get()
    login(client, admin)
    assert client.post(reverse("app-member-remove", kwargs={"pk": own.pk})).status_code == 403
    assert client.post(reverse("app-members"), {"email": "o@x.test", "role": "owner"}).status_code == 403
    assert Membership.objects.filter(pk=own.pk).exists()


def test_outsider_cannot_manage_other_agency_members(client, outsider, member):
    m = member.memberships.get()
    assert login(client, outsider).post(reverse("app-member-remove", kwargs={"pk": m.pk})).status_code == 404
    assert Membership.objects.filter(pk=m.pk).exists()


WIDGET_ACTIONS = [
    "app-widget-duplicate",
    "app-widget-delete",
    "app-widget-rollback",
    "app-widget-knowledge",
    "app-widget-products",
    "app-widget-products-import",
    "app-widget-share",
    "app-widget-test-connection",
    "app-widget-preview-chat",
]


@pytest.mark.parametrize("name", WIDGET_ACTIONS)
def test_anonymous_actions_redirect_to_login_and_change_nothing(client, widget_a, name):
    response = client.post(reverse(name, kwargs={"public_id": widget_a.public_id}), {"version": 1})
    assert response.status_code == 302 and "/app/login/" in response["Location"]
    assert Widget.objects.count() == 1 and widget_a.versions.count() == 1


@pytest.mark.parametrize("name", WIDGET_ACTIONS)
def test_outsider_actions_are_404(client, outsider, widget_a, name):
    response = login(client, outsider).post(
        reverse(name, kwargs={"public_id": widget_a.public_id}),
        {"version": 1, "question": "Q", "answer": "A", "title": "T"},
    )
    assert response.status_code == 404
    assert Widget.objects.filter(license=widget_a.license).count() == 1
    assert not widget_a.knowledge.exists() and not widget_a.products.exists() and not widget_a.preview_links.exists()


@pytest.mark.parametrize("name", ["app-member-role", "app-member-remove"])
def test_anonymous_member_actions_redirect(client, member, name):
    m = member.memberships.get()
    response = client.post(reverse(name, kwargs={"pk": m.pk}), {"role": "viewer"})
    assert response.status_code == 302 and "/app/login/" in response["Location"]
    m.refresh_from_db()
    assert m.role == "editor"
