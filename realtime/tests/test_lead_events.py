"""The page's `lead` event on voice (issue 15.1): a tool that stores a lead (log_lead) tells the browser
`lead.captured` {source} on every transport — the relay's event, the WebRTC tool endpoint's `lead`, the
LiveKit agent's events — and nothing of the visitor's details."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from livekit import api

from realtime.livekit_call import LiveKitCall
from realtime.tests.conftest import FRAME, KEY, SECRET, communicator, post_token, receive_until
from widgets.models import Lead

LEAD_ARGS = {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000"}
ORIGIN = "https://shop.example.com"


@pytest.mark.django_db(transaction=True)
async def test_the_relay_tells_the_browser_a_lead_was_captured(voice_widget, fake_realtime):
    fake_realtime.tool_call = {"name": "log_lead", "arguments": json.dumps(LEAD_ARGS)}
    comm = communicator(voice_widget)
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    events = await receive_until(comm, "lead.captured")
    assert events[-1] == {"type": "lead.captured", "source": "voice"}
    assert "ada@example.com" not in json.dumps(events)
    assert (await Lead.objects.aget()).email == "ada@example.com"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_tool_that_stores_no_lead_sends_no_lead_event(voice_widget, fake_realtime):
    comm = communicator(voice_widget)  # the scripted turn calls search_products
    assert (await comm.connect())[0]
    await receive_until(comm, "session.ready")
    await comm.send_json_to({"type": "input_audio_buffer.append", "audio": FRAME})
    events = await receive_until(comm, "transcript.final")
    events += await receive_until(comm, "response.done")
    events += await receive_until(comm, "response.done")
    assert not [e for e in events if e["type"] == "lead.captured"]
    await comm.disconnect()


@pytest.mark.django_db
def test_the_webrtc_tool_endpoint_answers_the_lead(voice_widget, fake_openai_http):
    body = {"license": voice_widget.license.key, "widget": voice_widget.public_id, "visitor_id": "v-1"}
    secret = Client().post(
        "/api/realtime/client-secret", json.dumps(body), content_type="application/json", HTTP_ORIGIN=ORIGIN
    )
    token = secret.json()["tools_token"]

    def tool(name, arguments):
        return Client().post(
            f"/api/widget/{voice_widget.license.key}/tools/{name}",
            json.dumps({"token": token, "arguments": arguments}),
            content_type="application/json",
            HTTP_ORIGIN=ORIGIN,
        )

    answer = tool("log_lead", LEAD_ARGS).json()
    assert answer["lead"] == {"source": "voice"} and Lead.objects.count() == 1
    assert tool("search_products", {"query": "phone"}).json()["lead"] is None
    assert tool("log_lead", {**LEAD_ARGS, "email": "nope"}).json()["lead"] is None


@pytest.mark.django_db
def test_the_livekit_agent_sends_the_lead_event(livekit_widget):
    claims = api.TokenVerifier(KEY, SECRET).verify(post_token(livekit_widget).json()["participant_token"])
    metadata, room = claims.room_config.agents[0].metadata, claims.room_config.name
    call = LiveKitCall.open(metadata_text=metadata, room=room)
    output, events = call.tool("log_lead", json.dumps(LEAD_ARGS))
    assert json.loads(output)["ok"] is True
    assert events == [{"type": "lead.captured", "source": "voice"}]
