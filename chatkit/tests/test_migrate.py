"""The configurator's "Migrate to server mode" for hosted ChatKit widgets (Agent Builder shut down 2026-11-30)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from chatkit.tests.conftest import HOSTED_CONFIG, ChatKitVisitor

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def migrate_url(widget) -> str:
    return reverse("app-widget-chatkit-migrate", kwargs={"public_id": widget.public_id})


def test_configurator_shows_why_and_the_migrate_action(hosted_widget, owner):
    body = signed_in(owner).get(reverse("app-widget", kwargs={"public_id": hosted_widget.public_id})).content.decode()
    assert 'data-testid="hosted-retired"' in body and "shut Agent Builder down on 2026-11-30" in body
    assert migrate_url(hosted_widget) in body and "Migrate to server mode" in body


def test_owner_migrates_keeps_theme_and_start_screen_prefills_instructions_and_publishes(
    fake_openai, hosted_widget, owner
):
    before = hosted_widget.config
    client = signed_in(owner)
    response = client.post(migrate_url(hosted_widget))

    assert response.status_code == 302
    hosted_widget.refresh_from_db()
    config = hosted_widget.published_version.config
    assert config["connection"]["chatkit"]["mode"] == "server"
    assert config["connection"]["chatkit"]["workflow_id"] == ""
    assert "Client A" in config["connection"]["chatkit"]["instructions"]
    assert config["appearance"]["chatkit"] == before["appearance"]["chatkit"]
    assert config["behaviour"]["greeting"] == before["behaviour"]["greeting"] == "Welcome to the shop!"
    assert config["behaviour"]["starter_prompts"] == HOSTED_CONFIG["behaviour"]["starter_prompts"]
    assert not hosted_widget.has_unpublished_changes
    page = client.get(response["Location"]).content.decode()
    assert "published: the widget answers again" in page and 'data-testid="hosted-retired"' not in page
    # And the widget answers visitors again.
    answer, events = ChatKitVisitor(hosted_widget).send("Are you back?")
    assert answer.status_code == 200 and any(e["type"] == "thread.item.done" for e in events)


def test_existing_instructions_are_kept(hosted_widget, owner):
    from widgets.services.widgets import widget_update

    widget_update(
        widget=hosted_widget,
        membership=owner.memberships.get(),
        config={"connection": {"chatkit": {"instructions": "Talk like a pirate."}}},
    )
    signed_in(owner).post(migrate_url(hosted_widget))
    hosted_widget.refresh_from_db()
    assert hosted_widget.config["connection"]["chatkit"]["instructions"] == "Talk like a pirate."
    # The draft held another unpublished change: migrated, left for review, not published behind their back.
    assert hosted_widget.published_version.config["connection"]["chatkit"]["mode"] == "hosted"


def test_editor_migrates_the_draft_only(hosted_widget, member):
    response = signed_in(member).post(migrate_url(hosted_widget), follow=True)
    hosted_widget.refresh_from_db()
    assert hosted_widget.config["connection"]["chatkit"]["mode"] == "server"
    assert hosted_widget.published_version.config["connection"]["chatkit"]["mode"] == "hosted"
    assert "Review the instructions, then publish" in response.content.decode()


def test_viewer_is_refused_outsider_gets_404_anonymous_signs_in(hosted_widget, viewer, outsider):
    assert signed_in(viewer).post(migrate_url(hosted_widget)).status_code == 403
    assert signed_in(outsider).post(migrate_url(hosted_widget)).status_code == 404
    anonymous = Client().post(migrate_url(hosted_widget))
    assert anonymous.status_code == 302 and "/app/login/" in anonymous["Location"]
    hosted_widget.refresh_from_db()
    assert hosted_widget.config["connection"]["chatkit"]["mode"] == "hosted"


def test_a_server_mode_or_n8n_widget_has_nothing_to_migrate(chatkit_widget, widget_a, owner):
    for widget in (chatkit_widget, widget_a):
        response = signed_in(owner).post(migrate_url(widget), follow=True)
        assert "nothing to migrate" in response.content.decode()
    assert (
        not signed_in(owner)
        .get(reverse("app-widget", kwargs={"public_id": chatkit_widget.public_id}))
        .content.decode()
        .count('data-testid="hosted-retired"')
    )


def test_get_is_not_allowed(hosted_widget, owner):
    assert signed_in(owner).get(migrate_url(hosted_widget)).status_code == 405


def test_seeded_chatkit_widget_is_server_mode_and_an_old_hosted_seed_is_moved(settings):
    from django.core.management import call_command

    from widgets.models import Widget

    settings.DEBUG = True
    call_command("seed_demo")
    widget = Widget.objects.get(name="Demo ChatKit")
    config = widget.published_version.config
    assert config["connection"]["chatkit"]["mode"] == "server"
    assert (
        config["tools"]["enabled"]["start_trade_in"] is True
        and "Demo Store" in config["connection"]["chatkit"]["instructions"]
    )

    # A database seeded before the shutdown (hosted, published): the next seed moves it.
    hosted = {
        **config,
        "connection": {
            **config["connection"],
            "chatkit": {**config["connection"]["chatkit"], "mode": "hosted", "workflow_id": "wf_old"},
        },
    }
    Widget.objects.filter(pk=widget.pk).update(config=hosted)
    type(widget.published_version).objects.filter(pk=widget.published_version_id).update(config=hosted)
    call_command("seed_demo")
    widget.refresh_from_db()
    assert widget.published_version.config["connection"]["chatkit"]["mode"] == "server"
    assert widget.published_version.config["connection"]["chatkit"]["workflow_id"] == ""
