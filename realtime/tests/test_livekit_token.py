"""POST /api/livekit/token: the relay's fail-closed checks and caps, then a LiveKit participant token whose
claims (decoded with livekit-api's own TokenVerifier) allow one room, the microphone, subscribing and data,
and dispatch our agent with metadata the server wrote."""

from __future__ import annotations

import json
from datetime import date

import jwt
import pytest
from django.core.cache import cache
from django.test import Client
from livekit import api

from licenses.models import LicenseUsage
from realtime import livekit as lk
from realtime import services as svc
from realtime.tests.conftest import KEY, SECRET, SERVER_URL, post_token
from widgets.models import Conversation

ORIGIN = "https://shop.example.com"


def error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def slots_in_use(widget) -> int:
    return svc.voice_slots_in_use(license=widget.license)


@pytest.mark.django_db
class TestToken:
    def test_token_claims_decoded_with_the_sdk_verifier(self, livekit_widget):
        response = post_token(livekit_widget)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"server_url", "participant_token"}
        assert body["server_url"] == SERVER_URL
        assert SECRET not in response.content.decode()
        assert response["Cache-Control"] == "no-store"
        assert response["Access-Control-Allow-Origin"] == ORIGIN

        conversation = Conversation.objects.get()
        assert conversation.channel == "voice" and conversation.widget_id == livekit_widget.pk
        assert conversation.session_id.startswith("livekit-") and conversation.heartbeat_at is not None
        session_id = conversation.session_id.removeprefix("livekit-")
        room = f"switchboard-{session_id}"

        claims = api.TokenVerifier(KEY, SECRET).verify(body["participant_token"])
        assert claims.identity == "visitor-visitor-1"
        assert claims.name == "Visitor"
        assert claims.kind == ""
        assert claims.metadata == "" and claims.attributes == {}
        video = claims.video
        assert video.room_join is True and video.room == room
        assert video.can_publish is True and video.can_publish_sources == ["microphone"]
        assert video.can_subscribe is True and video.can_publish_data is True
        assert video.can_update_own_metadata is False
        assert video.room_create is None and video.room_admin is None and video.room_list is None
        assert video.room_record is None and video.hidden is None and video.agent is None
        assert video.destination_room is None and video.ingress_admin is None

        config = claims.room_config
        assert config.name == room and config.max_participants == 2
        assert config.empty_timeout == lk.ROOM_EMPTY_TIMEOUT_SECONDS
        assert len(config.agents) == 1 and config.agents[0].agent_name == "switchboard-voice"
        slot_key = f"switchboard:voice-slot:{livekit_widget.license_id}:0"
        metadata = json.loads(config.agents[0].metadata)
        assert metadata == {
            "license": livekit_widget.license_id,
            "widget": livekit_widget.pk,
            "version": livekit_widget.published_version_id,
            "conversation": conversation.pk,
            "room": room,
            "visitor": "visitor-visitor-1",
            "slot": slot_key,
            "slot_token": metadata["slot_token"],
            "identity": {},
            "page_context": {},
            "v": 2,
        }
        assert cache.get(slot_key) == metadata["slot_token"] and len(metadata["slot_token"]) == 32
        assert lk.dispatch_metadata_read(config.agents[0].metadata) == lk.DispatchMetadata(**metadata)

        # Nothing else is granted: the whole payload, as LiveKit's server reads it.
        raw = jwt.decode(body["participant_token"], SECRET, algorithms=["HS256"], issuer=KEY)
        assert set(raw) == {"sub", "iss", "nbf", "exp", "name", "video", "roomConfig"}
        assert raw["video"] == {
            "roomJoin": True,
            "room": room,
            "canPublish": True,
            "canSubscribe": True,
            "canPublishData": True,
            "canPublishSources": ["microphone"],
            "canUpdateOwnMetadata": False,
        }
        assert raw["exp"] - raw["nbf"] == lk.TOKEN_TTL_SECONDS == 60

    def test_another_secret_does_not_verify(self, livekit_widget):
        token = post_token(livekit_widget).json()["participant_token"]
        with pytest.raises(jwt.InvalidSignatureError):
            api.TokenVerifier(KEY, "another-secret-0123456789abcdef01").verify(token)

    def test_dispatch_metadata_is_not_request_controlled(self, livekit_widget, widget_b):
        response = post_token(
            livekit_widget,
            visitor_id="../admin room",
            metadata={"license": widget_b.license_id, "conversation": 1},
            room="switchboard-other",
            conversation=999,
            participant_identity="agent",
            agent_name="someone-else",
            version=1,
        )
        assert response.status_code == 200, response.content
        claims = api.TokenVerifier(KEY, SECRET).verify(response.json()["participant_token"])
        conversation = Conversation.objects.get()
        metadata = json.loads(claims.room_config.agents[0].metadata)
        assert claims.room_config.agents[0].agent_name == "switchboard-voice"
        assert metadata["license"] == livekit_widget.license_id
        assert metadata["conversation"] == conversation.pk
        assert metadata["version"] == livekit_widget.published_version_id
        assert (
            claims.video.room == metadata["room"] == "switchboard-" + conversation.session_id.removeprefix("livekit-")
        )
        assert claims.identity == metadata["visitor"] == "visitor-adminroom"

    def test_a_room_per_conversation(self, livekit_widget):
        first = api.TokenVerifier(KEY, SECRET).verify(post_token(livekit_widget).json()["participant_token"])
        second = api.TokenVerifier(KEY, SECRET).verify(post_token(livekit_widget).json()["participant_token"])
        assert first.video.room != second.video.room
        assert Conversation.objects.count() == 2

    def test_text_plain_body_and_preflight(self, livekit_widget):
        body = json.dumps({"license": livekit_widget.license.key, "widget": livekit_widget.public_id})
        response = Client().post("/api/livekit/token", body, content_type="text/plain", HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 200, response.content
        preflight = Client().options(
            f"/api/livekit/token?license={livekit_widget.license.key}",
            HTTP_ORIGIN=ORIGIN,
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        )
        assert preflight.status_code == 204 and preflight["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.django_db
class TestRefusals:
    def assert_nothing_opened(self, widget):
        assert not Conversation.objects.exists()
        assert slots_in_use(widget) == 0

    def test_foreign_origin(self, livekit_widget):
        response = post_token(livekit_widget, origin="https://evil.example.net")
        assert response.status_code == 403
        assert response.json() == error("domain_not_allowed", "This site is not on the license's allowed domains.")
        self.assert_nothing_opened(livekit_widget)

    def test_no_origin(self, livekit_widget):
        response = post_token(livekit_widget, origin=None)
        assert response.status_code == 403
        assert response.json() == error(
            "origin_missing", "The request has no usable Origin; the widget only runs on allowed sites."
        )
        self.assert_nothing_opened(livekit_widget)

    def test_unknown_license(self, livekit_widget):
        response = post_token(livekit_widget, key="lic_does_not_exist")
        assert response.status_code == 404
        assert response.json() == error("unknown_license", "This license key does not exist.")
        self.assert_nothing_opened(livekit_widget)

    def test_outsiders_widget_id_is_an_unknown_widget(self, livekit_widget, widget_b):
        response = post_token(widget_b, key=livekit_widget.license.key)
        assert response.status_code == 404
        assert response.json() == error("widget_not_found", "This license has no published widget with that id.")
        self.assert_nothing_opened(livekit_widget)

    def test_outsiders_license_from_our_site(self, livekit_widget, widget_b):
        widget_b.license.allowed_domains = ["outsider.example.net"]
        widget_b.license.save()
        response = post_token(widget_b)
        assert response.status_code == 403
        assert response.json() == error("domain_not_allowed", "This site is not on the license's allowed domains.")
        assert not Conversation.objects.exists()

    def test_voice_disabled(self, widget_a, livekit_settings):
        response = post_token(widget_a)
        assert response.status_code == 403
        assert response.json() == error("voice_disabled", "Voice is not enabled for this widget.")
        self.assert_nothing_opened(widget_a)

    def test_widget_on_another_transport(self, voice_widget, livekit_settings):
        response = post_token(voice_widget)
        assert response.status_code == 409
        assert response.json() == error("wrong_transport", "This widget's voice does not use LiveKit.")
        self.assert_nothing_opened(voice_widget)

    def test_not_configured(self, livekit_widget, settings):
        settings.LIVEKIT_API_SECRET = ""
        response = post_token(livekit_widget)
        assert response.status_code == 503
        assert response.json() == error("livekit_not_configured", "LiveKit is not configured on this server.")
        self.assert_nothing_opened(livekit_widget)
        # A foreign site still learns only the license check's answer.
        foreign = post_token(livekit_widget, origin="https://evil.example.net")
        assert foreign.json()["error"]["code"] == "domain_not_allowed"

    def test_no_voice_minutes_left(self, livekit_widget):
        LicenseUsage.objects.create(
            license_id=livekit_widget.license_id, month=date.today().replace(day=1), voice_seconds=300 * 60
        )
        response = post_token(livekit_widget)
        assert response.status_code == 429
        assert response.json() == error("quota_exceeded", "This license has used its monthly allowance.")
        self.assert_nothing_opened(livekit_widget)

    def test_concurrency_cap_counts_every_transport(self, livekit_widget):
        license = livekit_widget.license
        license.limits = {**license.limits, "max_concurrent_voice_sessions": 2}
        license.save()
        relay_slot = svc.voice_slot_acquire(license=license, token="relay-call")  # a relayed call in progress
        assert relay_slot is not None
        assert post_token(livekit_widget).status_code == 200
        response = post_token(livekit_widget)
        assert response.status_code == 429
        assert response.json() == error(
            "too_many_sessions", "Too many voice calls are running on this site right now. Please try again shortly."
        )
        assert Conversation.objects.count() == 1 and slots_in_use(livekit_widget) == 2
        svc.voice_slot_release(key=relay_slot, token="relay-call")
        assert post_token(livekit_widget).status_code == 200

    def test_cache_down_is_a_clean_busy(self, livekit_widget, monkeypatch):
        def down(*args, **kwargs):
            raise ConnectionError("redis is down")

        monkeypatch.setattr(cache, "add", down)
        response = post_token(livekit_widget)
        assert response.status_code == 503
        assert response.json() == error("server_busy", "The voice service is busy right now. Please try again shortly.")
        assert not Conversation.objects.exists()

    def test_get_is_refused(self, livekit_widget):
        response = Client().get(f"/api/livekit/token?license={livekit_widget.license.key}", HTTP_ORIGIN=ORIGIN)
        assert response.status_code == 405
        assert response.json() == error("method_not_allowed", "Use POST.")


@pytest.mark.django_db
class TestConfigurator:
    def transport_options(self, client, widget) -> str:
        html = client.get(f"/app/widgets/{widget.public_id}/").content.decode()
        start = html.index('data-path="voice.transport"')
        return html[start : html.index("</select>", start)]

    def test_livekit_offered_only_when_configured(self, voice_widget, owner, settings):
        client = Client()
        client.force_login(owner)
        settings.LIVEKIT_URL = settings.LIVEKIT_API_KEY = settings.LIVEKIT_API_SECRET = ""
        options = self.transport_options(client, voice_widget)
        assert '<option value="relay"' in options and '<option value="webrtc"' in options
        assert 'value="livekit"' not in options
        settings.LIVEKIT_URL, settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET = SERVER_URL, KEY, SECRET
        options = self.transport_options(client, voice_widget)
        assert '<option value="livekit" >LiveKit</option>' in options
