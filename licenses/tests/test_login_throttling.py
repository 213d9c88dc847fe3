"""Issue 9 finding 7: sign-in throttling (django-axes, per username + IP) on /app/login/, /admin/login/
and API tokens; password reset stays non-enumerating."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client
from rest_framework.authtoken.models import Token

from licenses.tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.AXES_FAILURE_LIMIT = 5


@pytest.fixture
def user(member):
    member.set_password(PASSWORD)
    member.save()
    return member


def _login(client, path, username, password, ip="203.0.113.7"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.parametrize("path", ["/app/login/", "/admin/login/"])
def test_thirty_wrong_passwords_then_the_right_one_is_refused(client, user, staff, path):
    account = user
    if path.startswith("/admin/"):
        staff.set_password(PASSWORD)
        staff.save()
        account = staff
    for _ in range(30):
        _login(client, path, account.username, "wrong-password")
    response = _login(client, path, account.username, PASSWORD)
    assert response.status_code == 429
    text = response.content.decode()
    assert "Too many failed sign-in attempts" in text and "15 minutes" in text
    assert 'name="username"' in text  # the sign-in page again, with the message
    assert response["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


def test_lockout_is_per_user_and_ip(client, user, owner):
    for _ in range(5):
        _login(client, "/app/login/", user.username, "wrong")
    assert _login(client, "/app/login/", user.username, PASSWORD).status_code == 429
    # Same user from another IP, and another user from the same IP, still sign in.
    assert _login(Client(), "/app/login/", user.username, PASSWORD, ip="198.51.100.9").status_code == 302
    owner.set_password(PASSWORD)
    owner.save()
    assert _login(Client(), "/app/login/", owner.username, PASSWORD).status_code == 302


def test_below_the_limit_the_right_password_works_and_resets(client, user):
    for _ in range(4):
        assert _login(client, "/app/login/", user.username, "wrong").status_code == 200
    assert _login(client, "/app/login/", user.username, PASSWORD).status_code == 302
    other = Client()
    for _ in range(4):
        _login(other, "/app/login/", user.username, "wrong")
    assert _login(other, "/app/login/", user.username, PASSWORD).status_code == 302  # the count was reset


def test_lockout_does_not_reveal_whether_the_account_exists(client, user):
    for name in (user.username, "nobody-here"):
        for _ in range(5):
            _login(client, "/app/login/", name, "wrong")
    known = _login(client, "/app/login/", user.username, "wrong")
    unknown = _login(client, "/app/login/", "nobody-here", "wrong")
    assert known.status_code == unknown.status_code == 429

    def page(response, name):  # the CSRF token is masked differently on every answer
        return re.sub(r'value="[A-Za-z0-9]{64}"', "", response.content.decode().replace(name, "X"))

    assert page(known, user.username) == page(unknown, "nobody-here")


def test_password_reset_stays_non_enumerating(client, user):
    user.email = "member@example.com"
    user.save()
    known = client.post("/app/password-reset/", {"email": "member@example.com"})
    unknown = client.post("/app/password-reset/", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"]
    assert len(mail.outbox) == 1


def test_wrong_api_tokens_lock_the_ip_out_of_token_auth(api, user):
    token = Token.objects.create(user=user)
    client = Client()
    for _ in range(5):
        response = client.get("/api/v1/me/", HTTP_AUTHORIZATION="Token " + "0" * 40, REMOTE_ADDR="203.0.113.8")
        assert response.status_code == 401
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {token.key}", REMOTE_ADDR="203.0.113.8")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited" and int(response["Retry-After"]) > 0
    # Another IP with the right token is not affected.
    ok = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {token.key}", REMOTE_ADDR="198.51.100.1")
    assert ok.status_code == 200


def test_a_user_created_without_password_attempts_is_not_locked(client):
    fresh = UserFactory(username="fresh")
    fresh.set_password(PASSWORD)
    fresh.save()
    assert _login(client, "/app/login/", "fresh", PASSWORD).status_code == 302
