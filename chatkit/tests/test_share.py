"""A share link of a ChatKit widget chats for real: /widget/chatkit/share/<token> (the link's saved draft,
framed by the share page) and POST /api/chatkit/<key>/?share=<token> with the page's signed visitor.
Signed out, rate limited like the preview, never counted."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from django.utils import timezone

from chatkit.models import ChatKitThread
from chatkit.tests.conftest import OWN_ORIGIN, TENANT_KEY
from chatkit.tokens import visitor_token_issue
from licenses.models import License, LicenseUsage
from widgets.models import Conversation, PreviewLink
from widgets.services.preview_links import preview_link_create, preview_link_token
from widgets.services.widgets import widget_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def link(chatkit_widget, owner):
    return preview_link_create(widget=chatkit_widget, user=owner, membership=owner.memberships.get(), days=7)


def page_data(response) -> dict:
    content = response.content.decode()
    return json.loads(content.split('id="sb-chatkit-page" type="application/json">')[1].split("</script>")[0])


def share_send(widget, token: str, text: str, *, visitor: str | None = "issue", license_key: str | None = None):
    if visitor == "issue":
        visitor = visitor_token_issue(license=widget.license)
    headers = {"Origin": OWN_ORIGIN}
    if visitor:
        headers["X-Switchboard-Visitor"] = visitor
    body = {
        "type": "threads.create",
        "params": {
            "input": {"content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}
        },
    }
    url = f"/api/chatkit/{license_key or widget.license.key}/?share={token}"

    async def go():
        response = await AsyncClient().post(
            url, data=json.dumps(body), content_type="application/json", headers=headers
        )
        if response.streaming:
            raw = b"".join([c async for c in response.streaming_content])
            return response, [json.loads(x[6:]) for x in raw.split(b"\n\n") if x.startswith(b"data: ")]
        return response, [response.json()]

    return async_to_sync(go)()


def test_share_page_carries_the_draft_a_visitor_and_the_share_api(fake_openai, chatkit_widget, owner, link):
    widget_update(
        widget=chatkit_widget, membership=owner.memberships.get(), config={"behaviour": {"greeting": "Draft hello"}}
    )
    token = preview_link_token(link)
    response = Client().get(f"/widget/chatkit/share/{token}")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == "frame-ancestors 'self'"
    content = response.content.decode()
    assert "Draft hello" in content
    page = page_data(response)
    assert page["apiUrl"] == f"/api/chatkit/{chatkit_widget.license.key}/?{urlencode({'share': token})}"
    assert page["visitorToken"] and "optionsUrl" not in page and "csrfToken" not in page
    assert TENANT_KEY not in content


def test_a_share_pages_kept_visitor_counts_only_when_framed(fake_openai, chatkit_widget, link):
    from chatkit.tokens import visitor_token_issue

    kept = visitor_token_issue(license=chatkit_widget.license)
    url = f"/widget/chatkit/share/{preview_link_token(link)}?vt={kept}"
    framed = page_data(Client().get(url, HTTP_SEC_FETCH_DEST="iframe"))
    top_level = page_data(Client().get(url, HTTP_SEC_FETCH_DEST="document"))
    assert framed["visitorToken"] == kept and top_level["visitorToken"] != kept


def test_a_share_link_holds_a_real_conversation_on_the_draft_not_counted(fake_openai, chatkit_widget, owner, link):
    widget_update(
        widget=chatkit_widget,
        membership=owner.memberships.get(),
        config={"connection": {"chatkit": {"instructions": "SHARED DRAFT RULES"}}},
    )
    response, events = share_send(chatkit_widget, preview_link_token(link), "Hello from the client")
    assert response.status_code == 200
    assert any(e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message" for e in events)
    assert "SHARED DRAFT RULES" in fake_openai.responses()[0].body["instructions"]
    conversation = Conversation.objects.get()
    assert conversation.is_preview is True
    usage = LicenseUsage.objects.filter(license=chatkit_widget.license).first()
    assert usage is None or (usage.chatkit_sessions == 0 and usage.cost_usd == 0)


def test_two_holders_of_one_link_never_see_each_others_threads(fake_openai, chatkit_widget, link):
    token = preview_link_token(link)
    mine = visitor_token_issue(license=chatkit_widget.license)
    first, _ = share_send(chatkit_widget, token, "mine", visitor=mine)
    assert first.status_code == 200
    thread_id = ChatKitThread.objects.get().thread_id
    body = {"type": "threads.list", "params": {"limit": 20, "order": "desc"}}

    def listed(visitor):
        async def go():
            return await AsyncClient().post(
                f"/api/chatkit/{chatkit_widget.license.key}/?share={token}",
                data=json.dumps(body),
                content_type="application/json",
                headers={"Origin": OWN_ORIGIN, "X-Switchboard-Visitor": visitor},
            )

        response = async_to_sync(go)()
        assert response.status_code == 200
        return [t["id"] for t in json.loads(response.content)["data"]]

    assert listed(mine) == [thread_id]
    assert listed(visitor_token_issue(license=chatkit_widget.license)) == []


def test_a_share_links_model_calls_are_limited_per_link_not_per_fresh_visitor(
    fake_openai, chatkit_widget, link, settings, frozen_minute
):
    """Anyone holding a share link can open its page again for a new signed visitor: the link's model calls
    (on the agency's key, never counted against the month) are limited per link, as its n8n chat is."""
    settings.CHATKIT_VISITOR_RATE_PER_MINUTE = 2
    token = preview_link_token(link)
    statuses = [share_send(chatkit_widget, token, f"hi {i}")[0].status_code for i in range(3)]  # 3 visitors
    assert statuses == [200, 200, 429]
    other = preview_link_create(
        widget=chatkit_widget, user=None, membership=link.widget.license.agency.memberships.get(), days=1
    )
    assert share_send(chatkit_widget, preview_link_token(other), "hi")[0].status_code == 200  # its own allowance


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ("revoked", 410, "preview_unavailable"),
        ("expired", 410, "preview_unavailable"),
        ("forged", 410, "preview_unavailable"),
    ],
)
def test_a_dead_or_forged_link_cannot_chat(fake_openai, chatkit_widget, link, state, status, code):
    token = preview_link_token(link)
    if state == "revoked":
        PreviewLink.objects.filter(pk=link.pk).update(revoked_at=timezone.now())
    elif state == "expired":
        PreviewLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response, (error,) = share_send(chatkit_widget, token, "hi")
    assert response.status_code == status and error["error"]["code"] == code
    assert fake_openai.requests == []


def test_a_share_call_needs_the_pages_visitor(fake_openai, chatkit_widget, link):
    response, (error,) = share_send(chatkit_widget, preview_link_token(link), "hi", visitor=None)
    assert response.status_code == 403 and error["error"]["code"] == "visitor_invalid"
    response, (error,) = share_send(chatkit_widget, preview_link_token(link), "hi", visitor="forged.token")
    assert response.status_code == 403 and error["error"]["code"] == "visitor_invalid"
    assert fake_openai.requests == []


def test_a_share_link_under_another_licenses_path_is_404(fake_openai, chatkit_widget, link, license_b):
    response, (error,) = share_send(chatkit_widget, preview_link_token(link), "hi", license_key=license_b.key)
    assert response.status_code == 404 and error["error"]["code"] == "widget_not_found"
    assert fake_openai.requests == []


def test_a_suspended_license_share_link_cannot_chat(fake_openai, chatkit_widget, link):
    License.objects.filter(pk=chatkit_widget.license.pk).update(status=License.Status.SUSPENDED)
    response, (error,) = share_send(chatkit_widget, preview_link_token(link), "hi")
    assert response.status_code == 403 and error["error"]["code"] == "suspended"


def test_a_share_call_from_another_site_is_refused(fake_openai, chatkit_widget, link):
    visitor = visitor_token_issue(license=chatkit_widget.license)

    async def go():
        return await AsyncClient().post(
            f"/api/chatkit/{chatkit_widget.license.key}/?share={preview_link_token(link)}",
            data="{}",
            content_type="application/json",
            headers={"Origin": "https://evil.example", "X-Switchboard-Visitor": visitor},
        )

    response = async_to_sync(go)()
    assert response.status_code == 403 and response.json()["error"]["code"] == "domain_not_allowed"
    assert fake_openai.requests == []


@pytest.mark.parametrize(("state", "status"), [("revoked", 410), ("expired", 410), ("forged", 404)])
def test_share_page_of_a_dead_or_forged_link(chatkit_widget, link, state, status):
    token = preview_link_token(link)
    if state == "revoked":
        PreviewLink.objects.filter(pk=link.pk).update(revoked_at=timezone.now())
    elif state == "expired":
        PreviewLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        token = "not-a-token"
    response = Client().get(f"/widget/chatkit/share/{token}")
    assert response.status_code == status
    assert "sb-chatkit-page" not in response.content.decode()
