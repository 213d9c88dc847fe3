"""Every pooled outgoing client is shared by all tenants, so none keeps a cookie an answer set
(licenses.outbound): OpenAI's REST side for voice (one httpx client per process), ChatKit's pool (httpx2, one
per event loop) and the n8n session (aiohttp, one per loop). The fakes are reached by a host name
(`localhost`): cookie jars keep no cookie of an IP address, so 127.0.0.1 would hide the bug."""

from __future__ import annotations

import asyncio

from chatkit.client import _pool
from licenses.outbound import cookieless_jar
from realtime.client import client_secret_create
from widgets.n8n import n8n_request, n8n_session

SET_COOKIE = [("Set-Cookie", "__cf_bm=tenant-a-edge-cookie; Path=/"), ("Set-Cookie", "sid=tenant-a; Path=/")]
SECRET = {"value": "ek_test_123", "expires_at": 1893456000, "session": {"id": "sess_x"}}


def _by_name(fake) -> str:
    return fake.url.replace("127.0.0.1", "localhost")


def _cookies(fake) -> list[str | None]:
    return [r["headers"].get("cookie") for r in fake.requests]


def test_the_voice_client_secret_call_sends_no_cookie_another_tenants_answer_set(settings, fake_http):
    fake = fake_http([(200, SECRET)], headers=SET_COOKIE)
    settings.OPENAI_BASE_URL = _by_name(fake) + "/v1"
    for key in ("sk-tenant-a", "sk-tenant-b", "sk-tenant-b"):
        assert client_secret_create(api_key=key, session={"type": "realtime"})["value"] == "ek_test_123"
    assert [r["headers"]["authorization"] for r in fake.requests][1] == "Bearer sk-tenant-b"
    assert _cookies(fake) == [None, None, None]


def test_the_chatkit_pool_sends_no_cookie_another_tenants_answer_set(fake_http):
    fake = fake_http([(200, {})], headers=SET_COOKIE)

    async def calls() -> None:
        for key in ("sk-tenant-a", "sk-tenant-b"):
            response = await _pool().post(_by_name(fake) + "/v1/responses", json={}, headers={"Authorization": key})
            assert response.status_code == 200 and "set-cookie" in response.headers
        assert not _pool().cookies  # nothing kept either
        await _pool().aclose()  # this loop's pool, closed with it

    asyncio.run(calls())
    assert _cookies(fake) == [None, None]


def test_the_n8n_session_sends_no_cookie_another_visitors_answer_set(settings, fake_http):
    settings.N8N_ALLOW_PRIVATE_NETWORKS = True  # the fake is on loopback
    fake = fake_http([(200, {"output": "hi"})], headers=SET_COOKIE)

    async def calls() -> None:
        for session in ("alice", "bob"):
            async with n8n_request(_by_name(fake) + "/webhook/x/chat", {"sessionId": session}, None) as response:
                assert response.status == 200 and "Set-Cookie" in response.headers
                await response.read()
        await n8n_session().close()  # this loop's session, closed with it

    asyncio.run(calls())
    assert _cookies(fake) == [None, None]


def test_the_cookieless_jar_keeps_and_sends_nothing(fake_http):
    import httpx

    fake = fake_http([(200, {})], headers=SET_COOKIE)
    with httpx.Client(cookies=cookieless_jar()) as client:
        client.post(_by_name(fake) + "/a", json={})
        client.post(_by_name(fake) + "/a", json={})
        assert not client.cookies
    with httpx.Client() as client:  # the default, for contrast: the fake's cookie comes back
        client.post(_by_name(fake) + "/b", json={})
        client.post(_by_name(fake) + "/b", json={})
    assert _cookies(fake) == [None, None, None, "__cf_bm=tenant-a-edge-cookie; sid=tenant-a"]
