"""Who calls from which page (issue 15.2/15.3 on voice): the verified identity and the page context reach the
session's instructions on every transport through the ONE builder — relay (the browser's `session.context`
frame, then one session.update to the fake Realtime server), WebRTC (the client-secret request the fake
OpenAI receives) and LiveKit (the dispatch metadata the server writes, read back by the agent's call)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from livekit import api

from licenses import identity as idn
from realtime import services as svc
from realtime.livekit_call import LiveKitCall
from realtime.relay import ACTIVE_SESSIONS
from realtime.tests.conftest import KEY, ORIGIN, SECRET, post_token, receive_until, wait_for
from widgets.config_schema import config_normalize
from widgets.models import Conversation, Widget
from widgets.tests.factories import publish

ANA = {"user_id": "42", "email": "ana@client.example", "name": "Ana", "attributes": {"plan": "pro"}}
PAGE = {
    "page": "https://shop.example.com/phones/x?ref=mail",
    "title": "Phone X – Shop",
    "referrer": "https://news.example.org/",
    "context": {"cart_total": 449, "plan": "gold"},
}
VERIFIED = "The visitor is signed in on the website (verified by the website's server)"
UNVERIFIED = "(NOT verified: a claim by the page; do not rely on it for anything sensitive)"


def with_page_context(widget: Widget, owner, on: bool = True) -> Widget:
    widget.config = config_normalize({"behaviour": {"page_context": on}}, base=widget.config)
    widget.save()
    publish(widget, owner)
    return Widget.objects.select_related("license", "published_version").get(pk=widget.pk)


@pytest.fixture
def secret(owner, license_a):
    return idn.identity_secret_rotate(actor=owner.memberships.get(), license=license_a)


def identify(license, body: dict) -> Client:
    return Client().post(
        f"/api/widget/{license.key}/identify", json.dumps(body), content_type="application/json", HTTP_ORIGIN=ORIGIN
    )


def token_for(license, *, verified: bool, secret: str = "") -> str:
    """A token as the identify endpoint answers it (with a valid hash when `verified`)."""
    body = {**ANA, "user_hash": hmac.new(secret.encode(), b"42", hashlib.sha256).hexdigest()} if verified else ANA
    response = identify(license, body)
    assert response.status_code == 200, response.content
    assert response.json()["verified"] is verified
    return response.json()["token"]


# --- relay ---------------------------------------------------------------------------------------------------


def context_communicator(widget) -> WebsocketCommunicator:
    from config.asgi import application

    path = f"/ws/realtime/{widget.license.key}/?widget={widget.public_id}&visitor=visitor-1&context=1"
    return WebsocketCommunicator(application, path, headers=[(b"host", b"testserver"), (b"origin", ORIGIN.encode())])


async def relay_call(widget, frame: dict | str) -> tuple[WebsocketCommunicator, list[dict]]:
    comm = context_communicator(widget)
    connected, _ = await comm.connect()
    assert connected
    await comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
    return comm, await receive_until(comm, "session.ready")


@pytest.mark.django_db(transaction=True)
class TestRelay:
    async def test_the_one_session_update_carries_the_verified_identity_and_the_page(
        self, voice_widget, owner, secret, fake_realtime
    ):
        widget = await sync_to_async(with_page_context)(voice_widget, owner)
        token = await sync_to_async(token_for)(widget.license, verified=True, secret=secret)
        comm, _ = await relay_call(widget, {"type": "session.context", "identity": token, "page_context": PAGE})
        [update] = fake_realtime.of_type("session.update")  # one, sent before anything else
        assert fake_realtime.received[0] is update
        instructions = update["session"]["instructions"]
        assert VERIFIED in instructions and "- User id: 42" in instructions and "- plan: pro" in instructions
        assert "(unverified)" not in instructions
        assert f"- URL: {PAGE['page']}" in instructions and "- Title: Phone X – Shop" in instructions
        assert "- Came from: https://news.example.org/" in instructions
        assert '"cart_total": 449' in instructions
        await comm.disconnect()
        conversation = await Conversation.objects.aget(channel="voice")
        assert conversation.identity == {**ANA, "verified": True} and conversation.page_url == PAGE["page"]

    async def test_an_identity_without_a_hash_is_marked_unverified(self, voice_widget, owner, fake_realtime):
        token = await sync_to_async(token_for)(voice_widget.license, verified=False)
        comm, _ = await relay_call(voice_widget, {"type": "session.context", "identity": token})
        instructions = fake_realtime.of_type("session.update")[0]["session"]["instructions"]
        assert UNVERIFIED in instructions and VERIFIED not in instructions
        assert "- plan: pro (unverified)" in instructions
        await comm.disconnect()

    async def test_a_forged_token_is_refused_before_anything_opens(self, voice_widget, secret, fake_realtime):
        token = await sync_to_async(token_for)(voice_widget.license, verified=True, secret=secret)
        forged = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
        comm = context_communicator(voice_widget)
        assert (await comm.connect())[0]
        await comm.send_to(text_data=json.dumps({"type": "session.context", "identity": forged}))
        events = await receive_until(comm, "<close>")
        assert events[0]["type"] == "error" and events[0]["code"] == "identity_invalid" and events[0]["fatal"]
        assert events[-1] == {"type": "<close>", "code": 4403}
        assert fake_realtime.paths == [] and not await Conversation.objects.aexists()
        assert not ACTIVE_SESSIONS
        assert await sync_to_async(svc.voice_slots_in_use)(license=voice_widget.license) == 0

    async def test_a_forged_hash_gets_no_token_so_the_call_carries_no_identity(
        self, voice_widget, secret, fake_realtime
    ):
        response = await sync_to_async(identify)(voice_widget.license, {**ANA, "user_hash": "0" * 64})
        assert response.status_code == 403 and response.json()["error"]["code"] == "identity_invalid"
        comm, _ = await relay_call(voice_widget, {"type": "session.context", "identity": ""})
        instructions = fake_realtime.of_type("session.update")[0]["session"]["instructions"]
        assert "signed in" not in instructions and "42" not in instructions
        await comm.disconnect()

    async def test_page_context_off_sends_nothing_of_the_page(self, voice_widget, fake_realtime):
        assert not voice_widget.published_version.config["behaviour"]["page_context"]
        comm, _ = await relay_call(voice_widget, {"type": "session.context", "page_context": PAGE})
        instructions = fake_realtime.of_type("session.update")[0]["session"]["instructions"]
        assert "shop.example.com/phones" not in instructions and "cart_total" not in instructions
        assert "visitor's page" not in instructions
        await comm.disconnect()
        # The inbox still records where the call started (our own record, as a chat's).
        assert (await Conversation.objects.aget()).page_url == PAGE["page"]

    @pytest.mark.parametrize(
        ("frame", "code"),
        [
            ({"type": "input_audio_buffer.append", "audio": "AAAA"}, "bad_request"),
            ("not json", "bad_request"),
            ({"type": "session.context", "page_context": {"page": "javascript:alert(1)"}}, "invalid_page_context"),
            ({"type": "session.context", "page_context": {"context": {"x": "y" * 3000}}}, "context_too_large"),
            ({"type": "session.context", "identity": 42}, "identity_invalid"),
        ],
    )
    async def test_a_bad_first_frame_is_refused(self, voice_widget, fake_realtime, frame, code):
        comm = context_communicator(voice_widget)
        assert (await comm.connect())[0]
        await comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
        events = await receive_until(comm, "<close>")
        assert events[0]["code"] == code and events[0]["fatal"] is True
        assert fake_realtime.paths == [] and not await Conversation.objects.aexists()

    async def test_without_context_1_the_call_starts_at_once_as_before(self, voice_widget, fake_realtime):
        from realtime.tests.conftest import communicator

        comm = communicator(voice_widget)
        assert (await comm.connect())[0]
        await receive_until(comm, "session.ready")
        await wait_for(lambda: fake_realtime.of_type("session.update"))
        assert "signed in" not in fake_realtime.of_type("session.update")[0]["session"]["instructions"]
        await comm.disconnect()


# --- WebRTC ---------------------------------------------------------------------------------------------------


def post_secret(widget, **extra):
    body = {"license": widget.license.key, "widget": widget.public_id, "visitor_id": "visitor-1", **extra}
    return Client().post(
        "/api/realtime/client-secret", json.dumps(body), content_type="application/json", HTTP_ORIGIN=ORIGIN
    )


@pytest.mark.django_db
class TestWebRTC:
    def test_the_client_secret_request_carries_identity_and_page(self, voice_widget, owner, secret, fake_openai_http):
        widget = with_page_context(voice_widget, owner)
        token = token_for(widget.license, verified=True, secret=secret)
        response = post_secret(widget, identity=token, page_context=PAGE)
        assert response.status_code == 200, response.content
        instructions = json.loads(fake_openai_http.requests[0]["body"])["session"]["instructions"]
        assert VERIFIED in instructions and "- E-mail: ana@client.example" in instructions
        assert f"- URL: {PAGE['page']}" in instructions and '"plan": "gold"' in instructions
        assert token not in response.content.decode()
        conversation = Conversation.objects.get()
        assert conversation.identity["verified"] is True and conversation.page_url == PAGE["page"]

    def test_a_forged_token_is_refused_without_calling_openai(self, voice_widget, secret, fake_openai_http):
        token = token_for(voice_widget.license, verified=True, secret=secret)
        response = post_secret(voice_widget, identity=token[:-3] + "zzz")
        assert response.status_code == 403 and response.json()["error"]["code"] == "identity_invalid"
        assert fake_openai_http.requests == [] and not Conversation.objects.exists()
        assert svc.voice_slots_in_use(license=voice_widget.license) == 0

    def test_a_token_of_another_license_is_refused(self, voice_widget, license_b, fake_openai_http):
        foreign = idn.identity_token_issue(license=license_b, identity=idn.Identity(user_id="42", verified=True))
        response = post_secret(voice_widget, identity=foreign)
        assert response.status_code == 403 and response.json()["error"]["code"] == "identity_invalid"
        assert fake_openai_http.requests == []

    def test_a_license_requiring_verification_refuses_an_unverified_identity(
        self, voice_widget, owner, secret, fake_openai_http
    ):
        token = token_for(voice_widget.license, verified=False)
        idn.identity_required_set(actor=owner.memberships.get(), license=voice_widget.license, required=True)
        response = post_secret(voice_widget, identity=token)
        assert response.status_code == 403 and response.json()["error"]["code"] == "identity_required"
        assert fake_openai_http.requests == []

    def test_page_context_off_sends_nothing_of_the_page(self, voice_widget, fake_openai_http):
        response = post_secret(voice_widget, page_context=PAGE)
        assert response.status_code == 200, response.content
        body = fake_openai_http.requests[0]["body"].decode()
        assert "phones/x" not in body and "cart_total" not in body and "news.example.org" not in body

    def test_a_bad_page_context_is_refused_naming_it(self, voice_widget, fake_openai_http):
        response = post_secret(voice_widget, page_context={"referrer": "ftp://x"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_page_context"
        assert fake_openai_http.requests == []


# --- LiveKit --------------------------------------------------------------------------------------------------


def dispatch_metadata(response) -> tuple[str, str]:
    assert response.status_code == 200, response.content
    claims = api.TokenVerifier(KEY, SECRET).verify(response.json()["participant_token"])
    return claims.room_config.agents[0].metadata, claims.room_config.name


@pytest.mark.django_db
class TestLiveKit:
    def test_the_dispatch_metadata_carries_them_and_the_agent_instructs_with_them(self, livekit_widget, owner, secret):
        widget = with_page_context(livekit_widget, owner)
        token = token_for(widget.license, verified=True, secret=secret)
        metadata, room = dispatch_metadata(post_token(widget, identity=token, page_context=PAGE))
        data = json.loads(metadata)
        assert data["identity"] == {**ANA, "verified": True}
        assert data["page_context"] == PAGE
        call = LiveKitCall.open(metadata_text=metadata, room=room)
        instructions = call.session["instructions"]
        assert VERIFIED in instructions and f"- URL: {PAGE['page']}" in instructions

    def test_unverified_is_marked_and_page_context_off_sends_nothing(self, livekit_widget):
        token = token_for(livekit_widget.license, verified=False)
        metadata, room = dispatch_metadata(post_token(livekit_widget, identity=token, page_context=PAGE))
        data = json.loads(metadata)
        assert data["identity"]["verified"] is False and data["page_context"] == {}
        instructions = LiveKitCall.open(metadata_text=metadata, room=room).session["instructions"]
        assert UNVERIFIED in instructions and "phones/x" not in instructions

    def test_a_forged_token_is_refused_before_a_slot_is_taken(self, livekit_widget, secret):
        token = token_for(livekit_widget.license, verified=True, secret=secret)
        response = post_token(livekit_widget, identity=token + "x")
        assert response.status_code == 403 and response.json()["error"]["code"] == "identity_invalid"
        assert svc.voice_slots_in_use(license=livekit_widget.license) == 0 and not Conversation.objects.exists()
