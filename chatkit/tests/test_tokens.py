"""Verified page and visitor tokens are kept per process (chatkit.tokens: a token's signature is checked once,
issue 8 bench), with the same security as checking every time: a page token's age is checked on every read, a
forged token is never kept, and everything the license decides (the origin, suspension, the visitor's license)
is checked again on every request."""

from __future__ import annotations

import time

import pytest
from django.core import signing

from chatkit.tests.conftest import ALLOWED, ChatKitVisitor

LIST = {"type": "threads.list", "params": {}}


@pytest.fixture
def loads_calls(monkeypatch):
    """How many times `signing.loads` verified a token."""
    calls: list[str] = []
    real = signing.loads

    def counted(s, *args, **kwargs):
        calls.append(kwargs.get("salt", ""))
        return real(s, *args, **kwargs)

    monkeypatch.setattr(signing, "loads", counted)
    return calls


def test_a_page_tokens_signature_is_verified_once_per_process(db, chatkit_widget, loads_calls):
    from chatkit.tokens import PAGE_TOKEN_SALT, page_token_issue, page_token_read

    token = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)
    first, second = page_token_read(token), page_token_read(token)
    assert first == second and first.origin == ALLOWED and first.widget_id == chatkit_widget.public_id
    assert loads_calls == [PAGE_TOKEN_SALT]


def test_a_visitor_tokens_signature_is_verified_once_and_its_license_checked_every_time(db, loads_calls):
    from chatkit.tokens import VISITOR_SALT, visitor_token_issue, visitor_token_read
    from licenses.tests.factories import LicenseFactory

    a, b = LicenseFactory(), LicenseFactory()
    token = visitor_token_issue(license=a)
    visitor = visitor_token_read(license=a, token=token)
    assert visitor and visitor_token_read(license=a, token=token) == visitor
    assert visitor_token_read(license=b, token=token) is None  # kept, still another license's
    assert loads_calls == [VISITOR_SALT]


def test_a_verified_page_token_still_expires(db, chatkit_widget, settings, monkeypatch):
    from chatkit.tokens import page_token_issue, page_token_read

    token = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)
    assert page_token_read(token) is not None  # verified and kept
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + settings.CHATKIT_PAGE_TOKEN_SECONDS - 5)
    assert page_token_read(token) is not None
    monkeypatch.setattr(time, "time", lambda: now + settings.CHATKIT_PAGE_TOKEN_SECONDS + 5)
    assert page_token_read(token) is None


def test_forged_tokens_are_refused_every_time_and_never_kept(db, chatkit_widget, loads_calls):
    from chatkit.tokens import (
        _page_token_verified,
        _visitor_token_verified,
        page_token_issue,
        page_token_read,
        visitor_token_issue,
        visitor_token_read,
    )

    page = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)
    visitor = visitor_token_issue(license=chatkit_widget.license)
    pages, visitors = _page_token_verified.cache_info().currsize, _visitor_token_verified.cache_info().currsize
    for _ in range(2):
        assert page_token_read(page[:-2] + "xx") is None
        assert visitor_token_read(license=chatkit_widget.license, token=visitor[:-2] + "xx") is None
        # Signed with the right key but the other salt: a visitor token is no page token and vice versa.
        assert page_token_read(visitor) is None
        assert visitor_token_read(license=chatkit_widget.license, token=page) is None
    assert len(loads_calls) == 8
    assert _page_token_verified.cache_info().currsize == pages
    assert _visitor_token_verified.cache_info().currsize == visitors


def test_a_token_verified_under_another_secret_key_is_refused(db, chatkit_widget, settings):
    from chatkit.tokens import page_token_issue, page_token_read, visitor_token_issue, visitor_token_read

    page = page_token_issue(license=chatkit_widget.license, widget=chatkit_widget, origin=ALLOWED)
    visitor = visitor_token_issue(license=chatkit_widget.license)
    assert page_token_read(page) and visitor_token_read(license=chatkit_widget.license, token=visitor)
    settings.SECRET_KEY = "another-" + "k" * 50
    assert page_token_read(page) is None
    assert visitor_token_read(license=chatkit_widget.license, token=visitor) is None


def test_an_expired_page_token_is_refused_by_the_endpoint_after_it_was_served(
    fake_openai, chatkit_widget, settings, monkeypatch
):
    visitor = ChatKitVisitor(chatkit_widget)
    assert visitor.call(LIST)[0].status_code == 200  # the token verified (and kept), the license cached
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + settings.CHATKIT_PAGE_TOKEN_SECONDS + 5)
    response, (error,) = visitor.call(LIST)
    assert response.status_code == 403 and error["error"]["code"] == "page_token_invalid"


def test_a_kept_page_tokens_origin_is_checked_against_the_license_every_time(fake_openai, chatkit_widget):
    from licenses.services import license_suspend, license_update

    visitor = ChatKitVisitor(chatkit_widget)
    assert visitor.call(LIST)[0].status_code == 200
    license_update(license=chatkit_widget.license, allowed_domains=["other.example.com"])
    response, (error,) = visitor.call(LIST)
    assert response.status_code == 403 and error["error"]["code"] == "domain_not_allowed"
    license_update(license=chatkit_widget.license, allowed_domains=["shop.example.com"])
    assert visitor.call(LIST)[0].status_code == 200
    license_suspend(license=chatkit_widget.license)
    response, (error,) = visitor.call(LIST)
    assert response.status_code == 403 and error["error"]["code"] == "suspended"
