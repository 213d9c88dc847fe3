"""Issue 9, finding 10: a refusal after the license/Origin check accepts only to say why (the browser cannot
read why a handshake was refused: every refused handshake is close 1006 with no reason), closes with a code
and a reason the widget reads, and opens nothing: no upstream socket, slot, conversation or relay task."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache

from licenses.models import LicenseUsage
from realtime.relay import ACTIVE_SESSIONS
from realtime.tests.conftest import ORIGIN, VOICE_CONFIG, publish
from widgets.config_schema import config_normalize
from widgets.models import Conversation, Widget
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def upstream_calls(monkeypatch):
    """Every attempt to open the upstream Realtime socket, whatever the fake would answer."""
    import realtime.relay

    calls: list[dict] = []
    real = realtime.relay.upstream_connect

    async def spy(**kwargs):
        calls.append(kwargs)
        return await real(**kwargs)

    monkeypatch.setattr(realtime.relay, "upstream_connect", spy)
    return calls


def connect_to(license_key: str, widget_id: str) -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(
        application,
        f"/ws/realtime/{license_key}/?widget={widget_id}&visitor=v1",
        headers=[(b"host", b"testserver"), (b"origin", ORIGIN.encode())],
    )


async def refusal(comm: WebsocketCommunicator) -> tuple[dict, dict]:
    connected, _ = await comm.connect()
    assert connected
    event = json.loads((await comm.receive_output(timeout=3))["text"])
    close = await comm.receive_output(timeout=3)
    await comm.disconnect()
    return event, close


async def assert_nothing_opened(upstream_calls, fake_realtime, license_id: int) -> None:
    assert upstream_calls == [] and fake_realtime.paths == []  # no upstream socket, not even attempted
    assert not ACTIVE_SESSIONS
    assert not await Conversation.objects.aexists()
    assert not await LicenseUsage.objects.filter(license_id=license_id, voice_sessions__gt=0).aexists()
    slots = [f"switchboard:voice-slot:{license_id}:{i}" for i in range(10)]
    assert not await sync_to_async(cache.get_many)(slots)


async def test_voice_disabled_widget_gets_a_readable_reason_and_nothing_is_opened(
    widget_a, fake_realtime, upstream_calls
):
    widget = await Widget.objects.select_related("license").aget(pk=widget_a.pk)
    event, close = await refusal(connect_to(widget.license.key, widget.public_id))
    assert event == {
        "type": "error",
        "code": "voice_disabled",
        "message": "Voice is not enabled for this widget.",
        "fatal": True,
    }
    assert close == {"type": "websocket.close", "code": 4403, "reason": "voice_disabled"}
    await assert_nothing_opened(upstream_calls, fake_realtime, widget.license_id)


async def test_another_licenses_widget_is_refused_exactly_like_an_unknown_id(
    voice_widget, license_b, outsider, fake_realtime, upstream_calls
):
    def voice_widget_of_b():
        other = WidgetFactory(
            license=license_b, name="Voice B", created_by=outsider, config=config_normalize(VOICE_CONFIG)
        )
        return publish(other, outsider).public_id

    foreign_id = await sync_to_async(voice_widget_of_b)()
    key = voice_widget.license.key
    foreign = await refusal(connect_to(key, foreign_id))
    unknown = await refusal(connect_to(key, "w_doesnotexist"))
    assert foreign == unknown  # no oracle for whether another license's widget exists
    event, close = foreign
    assert event["code"] == "widget_not_found" and event["fatal"] is True
    assert close == {"type": "websocket.close", "code": 4404, "reason": "widget_not_found"}
    await assert_nothing_opened(upstream_calls, fake_realtime, voice_widget.license_id)
    await assert_nothing_opened(upstream_calls, fake_realtime, license_b.pk)
