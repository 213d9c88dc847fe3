"""Voice in the configurator preview (issue 14.3): a member's test call on the UNSAVED draft, through the relay
to the fake Realtime server, never counted against the client's license (realtime/preview.py)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.test import Client

from licenses.models import LicenseUsage, Membership
from realtime import preview
from realtime import services as svc
from realtime.relay import ACTIVE_SESSIONS
from realtime.tests.conftest import FRAME, receive_until, wait_for
from widgets.models import Conversation, DailyStat, Lead, Message, Widget
from widgets.tests.factories import WidgetFactory

pytestmark = [pytest.mark.django_db(transaction=True)]

OWN = "http://testserver"
DRAFT = {"voice": {"instructions": "DRAFT ONLY: you are Zed, the draft's voice."}}


def url(widget) -> str:
    return f"/app/widgets/{widget.public_id}/voice-preview/"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def mint(client: Client, widget, draft=DRAFT, **extra):
    return client.post(url(widget), json.dumps({"config": draft, **extra}), content_type="application/json")


def ticket_of(response) -> str:
    path = response.json()["ws_path"]
    assert path.startswith("/ws/realtime/preview/") and path.endswith("/")
    return path.removeprefix("/ws/realtime/preview/").rstrip("/")


def socket(ticket: str, *, client: Client | None, origin: str | None = OWN) -> WebsocketCommunicator:
    from config.asgi import application

    headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if client is not None:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, f"/ws/realtime/preview/{ticket}/", headers=headers)


async def call(user, widget, draft=DRAFT) -> tuple[WebsocketCommunicator, Client]:
    client = await sync_to_async(signed_in)(user)
    response = await sync_to_async(mint)(client, widget, draft)
    assert response.status_code == 201, response.content
    comm = socket(ticket_of(response), client=client)
    connected, _ = await comm.connect()
    assert connected
    return comm, client


async def refused(comm: WebsocketCommunicator) -> tuple[dict, int]:
    """A refusal after the handshake: one fatal error event, then the close code."""
    connected, _ = await comm.connect()
    assert connected
    event = await comm.receive_json_from(timeout=5)
    close = await comm.receive_output(timeout=5)
    assert close["type"] == "websocket.close"
    return event, close["code"]


async def rejected(comm: WebsocketCommunicator) -> int:
    """A handshake refused outright (nothing is said)."""
    connected, code = await comm.connect()
    assert not connected
    return code


# --- the ticket: POST /app/widgets/<id>/voice-preview/ ----------------------------------------------------


def test_member_gets_a_ticket_for_the_unsaved_draft(voice_widget, member):
    response = mint(signed_in(member), voice_widget)
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["expires_in"] == 60 and body["transport"] == "relay" and body["draft_transport"] == "relay"
    assert body["max_session_seconds"] == 300  # REALTIME_PREVIEW_MAX_SECONDS under the widget's 900
    snapshot = cache.get(f"switchboard:voice-preview-ticket:{ticket_of(response)}")
    assert snapshot["u"] == member.pk and snapshot["w"] == voice_widget.pk
    assert snapshot["c"]["voice"]["instructions"] == DRAFT["voice"]["instructions"]
    assert snapshot["c"]["voice"]["voice"] == "coral"  # merged over the saved draft
    voice_widget.refresh_from_db()
    assert "DRAFT ONLY" not in json.dumps(voice_widget.config)  # nothing saved
    assert "sk-" not in response.content.decode()


def test_viewer_may_test_too(voice_widget, viewer):
    assert mint(signed_in(viewer), voice_widget).status_code == 201


def test_anonymous_gets_no_ticket(voice_widget):
    response = mint(Client(), voice_widget)
    assert response.status_code == 403 and response.json()["error"]["code"] == "not_authenticated"


def test_outsider_gets_404(voice_widget, outsider):
    response = mint(signed_in(outsider), voice_widget)
    assert response.status_code == 404 and response.json()["error"]["code"] == "widget_not_found"
    assert "ws_path" not in response.json()


def test_csrf_is_required(voice_widget, member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert mint(client, voice_widget).status_code == 403
    client.get(f"/app/widgets/{voice_widget.public_id}/")  # the configurator sets the CSRF cookie
    response = client.post(
        url(voice_widget),
        json.dumps({"config": DRAFT}),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert response.status_code == 201


def test_get_is_not_allowed(voice_widget, member):
    assert signed_in(member).get(url(voice_widget)).status_code == 405


@pytest.mark.parametrize(
    "draft,field",
    [
        ({"voice": {"speed": 9}}, "config.voice.speed"),
        ({"voice": {"voice": "nobody"}}, "config.voice.voice"),
        ({"voice": {"model": "gpt-3"}}, "config.voice.model"),
    ],
)
def test_an_invalid_draft_is_400_naming_the_field(voice_widget, member, draft, field):
    response = mint(signed_in(member), voice_widget, draft)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config" and field in error["fields"]


def test_a_draft_that_is_not_an_object_is_400(voice_widget, member):
    response = mint(signed_in(member), voice_widget, ["voice"])
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_config"


def test_no_config_tries_the_saved_draft(voice_widget, member):
    response = signed_in(member).post(url(voice_widget), "{}", content_type="application/json")
    assert response.status_code == 201
    snapshot = cache.get(f"switchboard:voice-preview-ticket:{ticket_of(response)}")
    assert snapshot["c"]["voice"]["instructions"] == voice_widget.config["voice"]["instructions"]


def test_voice_off_in_the_draft_is_409(voice_widget, member):
    response = mint(signed_in(member), voice_widget, {"voice": {"enabled": False}})
    assert response.status_code == 409 and response.json()["error"]["code"] == "voice_disabled"


def test_a_suspended_license_makes_no_test_calls(voice_widget, member):
    voice_widget.license.status = "suspended"
    voice_widget.license.save()
    response = mint(signed_in(member), voice_widget)
    assert response.status_code == 409 and response.json()["error"]["code"] == "license_not_serving"


def test_tickets_per_member_are_rate_limited(voice_widget, member, owner, settings):
    settings.REALTIME_PREVIEW_TICKETS_PER_MINUTE = 2
    client = signed_in(member)
    assert [mint(client, voice_widget).status_code for _ in range(2)] == [201, 201]
    response = mint(client, voice_widget)
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert mint(signed_in(owner), voice_widget).status_code == 201  # per member


@pytest.mark.parametrize("transport", ["webrtc", "livekit"])
def test_webrtc_and_livekit_drafts_are_tried_over_the_relay(voice_widget, member, transport):
    response = mint(signed_in(member), voice_widget, {"voice": {"transport": transport}})
    assert response.status_code == 201
    assert response.json()["transport"] == "relay" and response.json()["draft_transport"] == transport


def _boot(response) -> dict:
    html = response.content.decode()
    start = html.index('id="preview-boot"')
    return json.loads(html[html.index(">", start) + 1 : html.index("</script>", start)])


def test_the_members_preview_frame_names_the_ticket_url_and_a_share_link_none(voice_widget, owner):
    from widgets.services import preview_links

    client = signed_in(owner)
    frame = client.get(f"/app/widgets/{voice_widget.public_id}/preview-frame/")
    assert _boot(frame)["voicePreviewUrl"] == url(voice_widget)
    # The frame's CSP lets voice.js's microphone worklet (a blob: URL) run, and still no inline script.
    assert frame["Content-Security-Policy"].startswith("script-src 'self' blob:;")
    link = preview_links.preview_link_create(
        widget=voice_widget, user=owner, membership=owner.memberships.get(), days=1, label="review"
    )
    shared = Client().get(f"/app/p/{preview_links.preview_link_token(link)}/frame/")
    assert shared.status_code == 200 and _boot(shared)["voicePreviewUrl"] == ""


# --- the call: WS /ws/realtime/preview/<ticket>/ ----------------------------------------------------------


async def test_the_drafts_instructions_reach_the_upstream_and_nothing_is_counted(voice_widget, member, fake_realtime):
    published = voice_widget.published_version.config["voice"]["instructions"]
    comm, _client = await call(member, voice_widget)
    await receive_until(comm, "session.ready")
    await wait_for(lambda: fake_realtime.of_type("session.update"))
    session = fake_realtime.of_type("session.update")[0]["session"]
    assert session["instructions"].startswith(DRAFT["voice"]["instructions"])
    assert published not in session["instructions"]
    assert session["audio"]["output"]["voice"] == "coral" and "sk-" not in json.dumps(session)
    assert fake_realtime.headers[0]["authorization"] == "Bearer sk-platform-test"  # the server's key
    # No slot of the license; one of the member's and of the agency's preview slots.
    assert await sync_to_async(svc.voice_slots_in_use)(license=voice_widget.license) == 0
    agency = voice_widget.license.agency_id
    assert await sync_to_async(preview.voice_preview_slots_in_use)(kind="member", owner=member.pk) == 1
    assert await sync_to_async(preview.voice_preview_slots_in_use)(kind="agency", owner=agency) == 1
    # A whole turn with a tool call: turns and usage are on the (preview) conversation, none on the license.
    await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    events = await receive_until(comm, "transcript.final")
    assert events[-1]["role"] == "user"
    events = await receive_until(comm, "transcript.final")
    assert events[-1]["role"] == "assistant" and any(e["type"] == "ui.event" for e in events)
    await receive_until(comm, "response.done")
    await comm.disconnect()
    await wait_for(lambda: not ACTIVE_SESSIONS)
    conversation = await Conversation.objects.aget(widget=voice_widget)
    assert conversation.is_preview and conversation.visitor_id == f"preview:{member.pk}"
    assert conversation.ended_at is not None and conversation.end_reason == "hangup"
    assert conversation.usage["input_tokens"] == 400 and conversation.cost_usd > 0
    roles = [r async for r in Message.objects.filter(conversation=conversation).values_list("role", flat=True)]
    assert roles == ["user", "tool", "assistant"]
    assert not await LicenseUsage.objects.filter(license_id=voice_widget.license_id).aexists()
    assert await sync_to_async(preview.voice_preview_slots_in_use)(kind="member", owner=member.pk) == 0
    assert await sync_to_async(preview.voice_preview_slots_in_use)(kind="agency", owner=agency) == 0


async def test_preview_calls_stay_out_of_the_inbox_and_analytics(voice_widget, member, fake_realtime):
    from widgets.analytics import rollup_day
    from widgets.inbox import conversations, filters_clean

    comm, _client = await call(member, voice_widget)
    await receive_until(comm, "session.ready")
    await comm.disconnect()
    await wait_for(lambda: not ACTIVE_SESSIONS)
    assert await Conversation.objects.filter(is_preview=True).acount() == 1
    agency = await sync_to_async(lambda: voice_widget.license.agency)()
    listed = await sync_to_async(lambda: list(conversations(agency=agency, filters=filters_clean({}))))()
    assert listed == []
    await sync_to_async(rollup_day)(date.today())
    assert not await DailyStat.objects.filter(conversations__gt=0).aexists()


async def test_a_license_out_of_minutes_and_slots_can_still_test(voice_widget, member, fake_realtime):
    fake_realtime.scenario = "idle"
    license = voice_widget.license
    await LicenseUsage.objects.acreate(license=license, month=date.today().replace(day=1), voice_seconds=300 * 60)
    license.limits = {**license.limits, "max_concurrent_voice_sessions": 1}
    await license.asave()
    assert await sync_to_async(svc.voice_slot_acquire)(license=license, token="visitor")  # the only slot
    comm, _client = await call(member, voice_widget)
    await receive_until(comm, "session.ready")
    relay = next(iter(ACTIVE_SESSIONS))
    assert relay.preview and relay.max_seconds == 300 and relay.quota_left_seconds == float("inf")
    await comm.disconnect()
    usage = await LicenseUsage.objects.aget(license=license)
    assert usage.voice_sessions == 0 and usage.voice_seconds == 300 * 60


async def test_a_preview_call_stores_no_lead(voice_widget, member, fake_realtime):
    fake_realtime.tool_call = {"name": "log_lead", "arguments": json.dumps({"name": "Ada Test", "email": "a@x.io"})}
    comm, _client = await call(member, voice_widget)
    await receive_until(comm, "session.ready")
    await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    await receive_until(comm, "transcript.final")
    await receive_until(comm, "response.done")
    await wait_for(lambda: fake_realtime.of_type("conversation.item.create"))
    output = json.loads(fake_realtime.of_type("conversation.item.create")[0]["item"]["output"])
    assert output["ok"] is True and output["preview"] is True
    await comm.disconnect()
    assert not await Lead.objects.aexists()


async def test_anonymous_socket_is_rejected(voice_widget, member, fake_realtime):
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    assert await rejected(socket(ticket, client=None)) == 4403
    assert not fake_realtime.paths
    # The ticket is still there for its member.
    comm = socket(ticket, client=client)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.disconnect()


@pytest.mark.parametrize(
    "origin", [None, "https://shop.example.com", "http://testserver.evil.com", "http://testserver:8080", "null"]
)
async def test_a_socket_from_another_origin_is_rejected(voice_widget, member, fake_realtime, origin):
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    assert await rejected(socket(ticket, client=client, origin=origin)) == 4403
    assert not fake_realtime.paths


async def test_an_outsider_cannot_use_a_members_ticket(voice_widget, member, outsider, fake_realtime):
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    other = await sync_to_async(signed_in)(outsider)
    event, code = await refused(socket(ticket, client=other))
    assert event == {
        "type": "error",
        "code": "invalid_ticket",
        "message": preview.PREVIEW_MESSAGES["invalid_ticket"],
        "fatal": True,
    }
    assert code == 4404 and not fake_realtime.paths
    assert not await Conversation.objects.aexists()
    comm = socket(ticket, client=client)  # not burnt by the outsider's try
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.disconnect()


async def test_a_ticket_is_used_once(voice_widget, member, fake_realtime):
    fake_realtime.scenario = "idle"
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    first = socket(ticket, client=client)
    assert (await first.connect())[0]
    await receive_until(first, "session.ready")
    event, code = await refused(socket(ticket, client=client))
    assert event["code"] == "invalid_ticket" and code == 4404
    await first.disconnect()
    assert await Conversation.objects.acount() == 1


async def test_an_expired_ticket_is_refused(voice_widget, member, fake_realtime, monkeypatch):
    monkeypatch.setattr(preview, "TICKET_SECONDS", 1)
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    await wait_for(lambda: cache.get(f"switchboard:voice-preview-ticket:{ticket}") is None, timeout=5)
    event, code = await refused(socket(ticket, client=client))
    assert event["code"] == "invalid_ticket" and code == 4404
    assert not fake_realtime.paths


async def test_unknown_ticket_is_refused(voice_widget, member, fake_realtime):
    client = await sync_to_async(signed_in)(member)
    event, code = await refused(socket("x" * 32, client=client))
    assert event["code"] == "invalid_ticket" and code == 4404


async def test_a_member_removed_after_the_ticket_cannot_call(voice_widget, member, fake_realtime):
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    await Membership.objects.filter(user=member).adelete()
    event, code = await refused(socket(ticket, client=client))
    assert event["code"] == "invalid_ticket" and code == 4404
    assert not fake_realtime.paths


async def test_license_suspended_after_the_ticket_is_refused(voice_widget, member, fake_realtime):
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    voice_widget.license.status = "suspended"
    await voice_widget.license.asave()
    event, code = await refused(socket(ticket, client=client))
    assert event["code"] == "license_not_serving" and code == 4403


async def test_test_calls_per_member_are_capped(voice_widget, member, owner, fake_realtime, settings):
    fake_realtime.scenario = "idle"
    settings.REALTIME_PREVIEW_MAX_PER_MEMBER = 1
    first, client = await call(member, voice_widget)
    await receive_until(first, "session.ready")
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    event, code = await refused(socket(ticket, client=client))
    assert event["code"] == "preview_busy" and code == 4429
    other, _ = await call(owner, voice_widget)  # another member of the agency still may
    await receive_until(other, "session.ready")
    await first.disconnect()
    await other.disconnect()
    again, _ = await call(member, voice_widget)  # the slot came back with the hang-up
    await receive_until(again, "session.ready")
    await again.disconnect()


async def test_test_calls_per_agency_are_capped(voice_widget, member, owner, fake_realtime, settings):
    fake_realtime.scenario = "idle"
    settings.REALTIME_PREVIEW_MAX_PER_AGENCY = 1
    first, _ = await call(owner, voice_widget)
    await receive_until(first, "session.ready")
    client = await sync_to_async(signed_in)(member)
    ticket = ticket_of(await sync_to_async(mint)(client, voice_widget))
    event, code = await refused(socket(ticket, client=client))
    assert event["code"] == "agency_preview_busy" and code == 4429
    # The member's slot taken on the way was given back.
    assert await sync_to_async(preview.voice_preview_slots_in_use)(kind="member", owner=member.pk) == 0
    await first.disconnect()


async def test_another_agencys_widget_is_not_reachable_with_an_own_ticket(
    voice_widget, outsider, license_b, fake_realtime
):
    """A ticket names the widget it was minted for; the outsider's own widget's ticket says nothing of ours."""
    theirs = await sync_to_async(WidgetFactory)(license=license_b, created_by=outsider)
    client = await sync_to_async(signed_in)(outsider)
    response = await sync_to_async(mint)(client, theirs, {"voice": {"enabled": True, "instructions": "Mine."}})
    assert response.status_code == 201
    comm = socket(ticket_of(response), client=client)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.disconnect()
    conversation = await Conversation.objects.select_related("widget").aget()
    assert conversation.widget_id == theirs.pk and await Widget.objects.filter(pk=voice_widget.pk).aexists()
