"""Every refusal in connect(): license/Origin (handshake rejected), voice off, quota, concurrency, caps."""

from __future__ import annotations

import json
from datetime import date

import pytest
from asgiref.sync import sync_to_async

from licenses.models import License, LicenseUsage
from realtime.relay import ACTIVE_SESSIONS
from realtime.tests.conftest import FRAME, communicator, publish, receive_until
from widgets.models import Conversation, Widget

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setattr("realtime.relay.TICK_SECONDS", 0.05)


async def refused(comm) -> tuple[dict, int]:
    connected, _ = await comm.connect()
    assert connected
    event = json.loads((await comm.receive_output(timeout=3))["text"])
    close = await comm.receive_output(timeout=3)
    assert close["type"] == "websocket.close"
    await comm.disconnect()
    return event, close["code"]


@pytest.mark.parametrize("origin", ["https://evil.example.net", None, "null"])
async def test_foreign_or_missing_origin_rejects_the_handshake(voice_widget, fake_realtime, origin):
    connected, code = await communicator(voice_widget, origin=origin).connect()
    assert not connected and code == 4403
    assert not fake_realtime.paths  # upstream never opened


async def test_unknown_license_rejects_the_handshake(voice_widget, fake_realtime):
    connected, code = await communicator(voice_widget, key="lic_doesnotexist").connect()
    assert not connected and code == 4404


async def test_an_agencys_own_domain_rejects_another_agencys_license(voice_widget, agency_b, fake_realtime):
    """The relay on a verified custom domain of agency B refuses agency A's key like an unknown one."""
    from channels.testing import WebsocketCommunicator

    from config.asgi import application
    from licenses import hosts
    from licenses.models import CustomDomain
    from realtime.tests.conftest import ORIGIN, ws_path

    domain = await CustomDomain.objects.acreate(agency=agency_b, host="chat.agency-b.example")
    await sync_to_async(hosts.custom_domain_set_status)(domain=domain, status=CustomDomain.Status.VERIFIED)
    try:
        headers = [(b"host", b"chat.agency-b.example"), (b"origin", ORIGIN.encode())]
        comm = WebsocketCommunicator(application, ws_path(voice_widget), headers=headers)
        connected, code = await comm.connect()
        assert not connected and code == 4404
        assert not fake_realtime.paths
    finally:
        await sync_to_async(hosts.host_map_invalidate)()


async def test_suspended_license_rejects_the_handshake(voice_widget, fake_realtime):
    await License.objects.filter(pk=voice_widget.license_id).aupdate(status=License.Status.SUSPENDED)
    connected, code = await communicator(voice_widget).connect()
    assert not connected and code == 4403


async def test_voice_disabled_is_refused_with_a_reason(widget_a, fake_realtime):
    widget = await Widget.objects.select_related("license").aget(pk=widget_a.pk)
    event, code = await refused(communicator(widget))
    assert event == {
        "type": "error",
        "code": "voice_disabled",
        "message": "Voice is not enabled for this widget.",
        "fatal": True,
    }
    assert code == 4403 and not fake_realtime.paths


async def test_unpublished_voice_draft_is_not_served(voice_widget, owner, fake_realtime):
    """Only the PUBLISHED config counts: turning voice off in a published version refuses the call."""

    def turn_off():
        from widgets.config_schema import config_normalize

        voice_widget.config = config_normalize({"voice": {"enabled": False}}, base=voice_widget.config)
        voice_widget.save()
        publish(voice_widget, owner)
        return Widget.objects.select_related("license").get(pk=voice_widget.pk)

    widget = await sync_to_async(turn_off)()
    event, code = await refused(communicator(widget))
    assert event["code"] == "voice_disabled"


async def test_no_voice_minutes_left_is_refused(voice_widget, fake_realtime):
    await LicenseUsage.objects.acreate(
        license_id=voice_widget.license_id, month=date.today().replace(day=1), voice_seconds=300 * 60
    )
    event, code = await refused(communicator(voice_widget))
    assert event["code"] == "quota_exceeded" and code == 4429


async def test_license_concurrency_cap(voice_widget, fake_realtime):
    fake_realtime.scenario = "idle"
    voice_widget.license.limits = {**voice_widget.license.limits, "max_concurrent_voice_sessions": 1}
    await voice_widget.license.asave()
    first = communicator(voice_widget)
    assert (await first.connect())[0]
    await receive_until(first, "session.ready")
    event, code = await refused(communicator(voice_widget))
    assert event["code"] == "too_many_sessions" and code == 4429
    await first.disconnect()
    again = communicator(voice_widget)
    assert (await again.connect())[0]
    await receive_until(again, "session.ready")
    await again.disconnect()


async def test_per_process_cap(voice_widget, fake_realtime, settings):
    fake_realtime.scenario = "idle"
    settings.REALTIME_MAX_SESSIONS_PER_PROCESS = 1
    first = communicator(voice_widget)
    assert (await first.connect())[0]
    await receive_until(first, "session.ready")
    event, code = await refused(communicator(voice_widget))
    assert event["code"] == "server_busy" and code == 4503
    await first.disconnect()
    assert not ACTIVE_SESSIONS


async def test_max_session_length_ends_the_call(voice_widget, fake_realtime, settings):
    fake_realtime.scenario = "idle"
    settings.REALTIME_MAX_SESSION_SECONDS = 1
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    events = await receive_until(comm, "<close>", timeout=5)
    types = [e["type"] for e in events]
    assert types[0] == "session.ready" and "warning" in types
    assert events[-2] == {
        "type": "session.ended",
        "reason": "max_duration",
        "message": "The call reached its maximum length.",
    }
    assert events[-1]["code"] == 4408
    conversation = await Conversation.objects.aget()
    assert conversation.end_reason == "max_duration"
    await comm.disconnect()


async def test_minutes_running_out_warns_then_ends(voice_widget, fake_realtime):
    fake_realtime.scenario = "idle"
    await LicenseUsage.objects.acreate(
        license_id=voice_widget.license_id, month=date.today().replace(day=1), voice_seconds=300 * 60 - 0.5
    )
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    events = await receive_until(comm, "warning")
    assert events[-1]["code"] == "voice_minutes_low"
    for _ in range(30):  # 0.6 s of audio
        await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    events = await receive_until(comm, "<close>", timeout=5)
    assert events[-2]["reason"] == "voice_minutes_exhausted" and events[-1]["code"] == 4429
    usage = await LicenseUsage.objects.aget(license_id=voice_widget.license_id)
    assert usage.voice_seconds >= 300 * 60
    await comm.disconnect()
