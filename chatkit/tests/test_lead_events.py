"""The page's `lead` event on ChatKit widgets (issue 15.1): every stored lead streams ChatKit's client effect
`switchboard.lead` with its source only (our ChatKit page turns the element's `chatkit.effect` into it)."""

from __future__ import annotations

import json

import pytest

from chatkit.tests.conftest import thread_id_of
from widgets.models import Lead

pytestmark = pytest.mark.django_db


def effects(events):
    return [e for e in events if e["type"] == "client_effect"]


def test_log_lead_streams_the_lead_effect_with_the_source_only(fake_openai, visitor):
    fake_openai.triggers["call me"] = ("log_lead", {"name": "Ada Lovelace", "email": "ada@example.com"})
    fake_openai.reply = "Thanks, the team will call you."

    response, events = visitor.send("Please call me back")

    assert response.status_code == 200
    assert effects(events) == [{"type": "client_effect", "name": "switchboard.lead", "data": {"source": "chatkit"}}]
    assert Lead.objects.get().email == "ada@example.com"
    assert "ada@example.com" not in json.dumps(effects(events))


def test_a_turn_that_stores_no_lead_streams_no_effect(fake_openai, visitor):
    fake_openai.triggers["call me"] = ("log_lead", {"name": "Ada", "email": "not-an-email"})
    _, events = visitor.send("Please call me back")
    assert effects(events) == [] and not Lead.objects.exists()


def test_the_trade_in_form_streams_the_effect_once(fake_openai, visitor):
    fake_openai.triggers["trade"] = ("start_trade_in", {"device": "Pixel 7"})
    fake_openai.reply = "The form is on your screen."
    _, events = visitor.send("I want to trade in my phone")
    form = next(e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget")
    payload = {"device": "Pixel 7", "condition": "Good", "name": "Ada Lovelace", "email": "ada@example.com"}
    action = {
        "type": "threads.custom_action",
        "params": {
            "thread_id": thread_id_of(events),
            "item_id": form["id"],
            "action": {"type": "trade_in.submit", "payload": payload},
        },
    }

    _, first = visitor.call(action)
    _, again = visitor.call(action)

    assert effects(first) == [
        {"type": "client_effect", "name": "switchboard.lead", "data": {"source": "trade_in_form"}}
    ]
    assert effects(again) == [] and Lead.objects.count() == 1
