"""First run: the seeded demo n8n widget chats on a customer page, streams, shows cards and the form.

The app runs under ASGI (uvicorn, as Daphne serves it for `make run`) with DEBUG on, seeded by
`seed_demo --port <its port>`: no n8n is installed; the widget talks to the built-in demo workflow.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command

from licenses.models import License
from widgets.models import Lead

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_seeded_demo_widget_streams_cards_and_a_lead_form(
    asgi_live_server, settings, browser_contexts, customer_site, artifacts_dir
):
    settings.DEBUG = True
    call_command("seed_demo", port=urlsplit(asgi_live_server).port)
    license = License.objects.get(client_name="Demo Store")
    widget = license.widgets.get(name="Demo n8n chat")
    url = customer_site.page(
        "demo.html",
        f"""<!doctype html><html><head><meta charset="utf-8"><title>Demo</title>
</head><body><h1>Demo Store</h1><script src="{asgi_live_server}/api/widget/{license.key}/chat-widget.js"
data-widget="{widget.public_id}" async></script></body></html>""",
    )
    page = browser_contexts(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(url)
    page.locator("switchboard-widget >> .lau").click()
    page.locator("switchboard-widget >> .hd b").get_by_text("Demo Store").wait_for()
    # Record every state of the reply bubble: a streamed answer grows in several steps.
    page.evaluate("""() => {
        const lg = document.querySelector('switchboard-widget').shadowRoot.querySelector('.lg');
        window.replyStates = new Set();
        new MutationObserver(() => {
            const b = [...lg.querySelectorAll('.m.a .b:not(.ty)')].pop();
            if (b) window.replyStates.add(b.innerText);
        }).observe(lg, {subtree: true, childList: true, characterData: true});
    }""")
    page.locator("switchboard-widget >> .st button", has_text="Phones under $500?").click()
    cards = page.locator("switchboard-widget >> .cd")
    cards.first.wait_for()
    titles = cards.locator("b").all_inner_texts()
    assert titles == ["Galaxy A55", "Pixel 8a"]
    states = page.evaluate("() => [...window.replyStates]")
    final = "Here are 2 options under $500: Galaxy A55, Pixel 8a."
    assert final in states
    # It streamed: the bubble showed part of the answer before the whole (network reads may merge pieces).
    assert [s for s in states if s.startswith("Here") and s != final and final.startswith(s.strip())], states
    page.wait_for_timeout(300)  # entry animations
    page.screenshot(path=os.path.join(artifacts_dir, "demo-first-run-cards.png"))

    box = page.locator("switchboard-widget >> textarea")
    box.fill("I want to trade in my iPhone 12")
    box.press("Enter")
    form = page.locator("switchboard-widget >> form.fm")
    form.wait_for()
    assert form.locator("input[name=device]").input_value() == "iPhone 12"
    form.locator("select[name=condition]").select_option("Good")
    form.locator("input[name=name]").fill("Grace Hopper")
    form.locator("input[name=email]").fill("grace@example.com")
    form.locator("button").click()
    page.locator("switchboard-widget >> text=Thanks! We'll be in touch").wait_for()
    lead = Lead.objects.get()
    assert (lead.widget_id, lead.name, lead.interest) == (widget.pk, "Grace Hopper", "iPhone 12")
    page.screenshot(path=os.path.join(artifacts_dir, "demo-first-run-trade-in.png"))
