"""Unit tests without HTTP: the agent, tools, widgets and actions under agents.testing.ScriptedModel, the
widget templates' shapes, and the SDK namespace this app shares."""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from pathlib import Path

import pytest
from agents.testing import ScriptedModel, assistant_message, function_call
from asgiref.sync import async_to_sync

from chatkit.agent import chatkit_instructions
from chatkit.agent_server import SwitchboardChatKitServer
from chatkit.tests.conftest import SERVER_CONFIG
from chatkit.threads import DjangoStore, RequestContext, new_id
from chatkit.tokens import chatkit_user_id
from chatkit.widget_templates import demo_clip, https_url, meeting_link, product_cards, trade_in_form, widget_for_event
from widgets.config_schema import config_normalize
from widgets.models import Lead, Message

pytestmark = pytest.mark.django_db


def context_for(widget, visitor="v1") -> RequestContext:
    config = widget.published_version.config
    return RequestContext(
        license=widget.license,
        widget=widget,
        config=config,
        owner=chatkit_user_id(license=widget.license, visitor_id=visitor),
        api_key="unused",
        model="gpt-6-sol",
    )


def run(server, body: dict, context) -> list[dict]:
    async def go():
        result = await server.process(json.dumps(body), context)
        if hasattr(result, "json"):
            return [json.loads(result.json)]
        return [json.loads(chunk[6:]) async for chunk in result]

    return async_to_sync(go)()


def create(text: str) -> dict:
    return {
        "type": "threads.create",
        "params": {
            "input": {"content": [{"type": "input_text", "text": text}], "attachments": [], "inference_options": {}}
        },
    }


def test_scripted_tool_call_streams_the_product_widget_and_the_summary(chatkit_widget):
    model = ScriptedModel(
        [
            [function_call("search_products", {"query": "phone", "max_price": 420}, call_id="call_1")],
            [assistant_message("The Pixel 7 fits your budget.", item_id="msg_" + "a" * 24)],
        ]
    )
    events = run(SwitchboardChatKitServer(model=model), create("a phone under 420"), context_for(chatkit_widget))
    model.assert_complete()

    widget = next(e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget")
    assert [c["children"][-1]["children"][0]["value"] for c in widget["widget"]["children"]] == ["Pixel 7 phone"]
    # Non-strict schema: the optional max_price reached the tool as the model sent it.
    tool_output = next(i for i in model.calls[1].input if i.get("type") == "function_call_output")
    assert "399.00" in tool_output["output"] and "449.00" not in tool_output["output"]
    assert [m.text for m in Message.objects.order_by("id")] == ["a phone under 420", "The Pixel 7 fits your budget."]


def test_history_is_the_latest_items_oldest_first_with_widgets_as_their_summary(chatkit_widget, settings):
    settings.CHATKIT_HISTORY_ITEMS = 4
    server = SwitchboardChatKitServer(
        model=ScriptedModel(
            [
                [function_call("search_products", {"query": "phone"}, call_id="c1")],
                [assistant_message("Two phones.", item_id="msg_1" + "0" * 23)],
                [assistant_message("Sure.", item_id="msg_2" + "0" * 23)],
                [assistant_message("Bye.", item_id="msg_3" + "0" * 23)],
            ]
        )
    )
    context = context_for(chatkit_widget)
    thread_id = next(e for e in run(server, create("phones"), context) if e["type"] == "thread.created")["thread"]["id"]
    for text in ("second", "third"):
        run(
            server,
            {
                "type": "threads.add_user_message",
                "params": {
                    "thread_id": thread_id,
                    "input": {
                        "content": [{"type": "input_text", "text": text}],
                        "attachments": [],
                        "inference_options": {},
                    },
                },
            },
            context,
        )

    last_input = server.model.calls[-1].input
    texts = [part["text"] for item in last_input for part in item["content"]]
    # 4 newest items: "Two phones.", "second", "Sure.", "third" (the card and "phones" fell off).
    assert texts == ["Two phones.", "second", "Sure.", "third"]
    second_input = server.model.calls[2].input
    assert any("The visitor was shown on screen: I found 2 options" in str(i) for i in second_input)


def test_trade_in_action_stores_one_lead_and_tells_the_model(chatkit_widget):
    server = SwitchboardChatKitServer(
        model=ScriptedModel(
            [
                [function_call("start_trade_in", {"device": "iPhone 12"}, call_id="c1")],
                [assistant_message("Fill in the form.", item_id="msg_" + "b" * 24)],
            ]
        )
    )
    context = context_for(chatkit_widget)
    events = run(server, create("trade in"), context)
    thread_id = next(e for e in events if e["type"] == "thread.created")["thread"]["id"]
    form = next(e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget")
    submit = {
        "type": "threads.custom_action",
        "params": {
            "thread_id": thread_id,
            "item_id": form["id"],
            "action": {
                "type": "trade_in.submit",
                "payload": {
                    "device": "iPhone 12",
                    "condition": "Fair",
                    "name": "Grace Hopper",
                    "email": "grace@example.com",
                },
            },
        },
    }

    first = run(server, submit, context)
    second = run(server, submit, context)

    assert Lead.objects.count() == 1
    assert Lead.objects.get().interest == "Trade-in: iPhone 12 (Fair)"
    assert any(e["type"] == "thread.item.replaced" for e in first)
    assert not any(e["type"] == "thread.item.done" for e in second)  # already sent: nothing happens


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"device": "iPhone 12", "condition": "Mint", "name": "A", "email": "a@example.com"}, "Pick the condition"),
        ({"device": "", "condition": "Good", "name": "A", "email": "a@example.com"}, "which device"),
        ({"device": "iPhone 12", "condition": "Good", "name": "", "email": "a@example.com"}, "name and email"),
        ({"device": "iPhone 12", "condition": "Good", "name": "A", "email": "a" * 300 + "@x.com"}, "at most"),
    ],
)
def test_trade_in_action_refuses_bad_payloads_in_words(chatkit_widget, payload, words):
    server = SwitchboardChatKitServer(
        model=ScriptedModel(
            [
                [function_call("start_trade_in", {}, call_id="c1")],
                [assistant_message("Form.", item_id="msg_" + "c" * 24)],
            ]
        )
    )
    context = context_for(chatkit_widget)
    events = run(server, create("trade"), context)
    thread_id = next(e for e in events if e["type"] == "thread.created")["thread"]["id"]
    form = next(e["item"] for e in events if e["type"] == "thread.item.done" and e["item"]["type"] == "widget")
    out = run(
        server,
        {
            "type": "threads.custom_action",
            "params": {
                "thread_id": thread_id,
                "item_id": form["id"],
                "action": {"type": "trade_in.submit", "payload": payload},
            },
        },
        context,
    )
    said = next(e["item"]["content"][0]["text"] for e in out if e["type"] == "thread.item.done")
    assert words in said and Lead.objects.count() == 0


def test_unknown_action_is_a_plain_error(chatkit_widget):
    server = SwitchboardChatKitServer(model=ScriptedModel([[assistant_message("Hi.", item_id="msg_" + "d" * 24)]]))
    context = context_for(chatkit_widget)
    thread_id = next(e for e in run(server, create("hi"), context) if e["type"] == "thread.created")["thread"]["id"]
    out = run(
        server,
        {
            "type": "threads.custom_action",
            "params": {"thread_id": thread_id, "action": {"type": "admin.delete_everything", "payload": {}}},
        },
        context,
    )
    assert out[-1]["type"] == "error" and out[-1]["message"] == "That button does nothing here."


def test_instructions_compose_the_widgets_words_facts_and_tool_guidance():
    text = chatkit_instructions(config_normalize(SERVER_CONFIG))
    assert text.startswith("You are the assistant of Demo Shop.")
    assert "Open Monday to Friday" in text and "Use search_products when" in text and "short paragraphs" in text


# --- the store on its own ------------------------------------------------------------------------


def test_store_ids_have_96_random_bits_and_saves_are_upserts(chatkit_widget):
    from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata

    assert len(new_id("thread")) == 4 + 24 and new_id("message").startswith("msg_")
    store, context = DjangoStore(), context_for(chatkit_widget)
    thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())
    async_to_sync(store.save_thread)(thread, context)
    async_to_sync(store.save_thread)(thread.model_copy(update={"title": "Renamed"}), context)
    item = AssistantMessageItem(
        id="msg_same", thread_id=thread.id, created_at=datetime.now(), content=[AssistantMessageContent(text="one")]
    )
    async_to_sync(store.add_thread_item)(thread.id, item, context)
    async_to_sync(store.add_thread_item)(
        thread.id, item.model_copy(update={"content": [AssistantMessageContent(text="two")]}), context
    )

    page = async_to_sync(store.load_thread_items)(thread.id, None, 10, "asc", context)
    assert [i.content[0].text for i in page.data] == ["two"]
    assert async_to_sync(store.load_thread)(thread.id, context).title == "Renamed"
    from chatkit.models import ChatKitThread
    from widgets.models import Conversation

    assert ChatKitThread.objects.count() == 1 and Conversation.objects.count() == 1


def test_store_pages_tie_on_created_at_by_sequence(chatkit_widget):
    from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata

    store, context = DjangoStore(), context_for(chatkit_widget)
    thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())
    async_to_sync(store.save_thread)(thread, context)
    same = datetime.now()
    for n in range(5):
        async_to_sync(store.add_thread_item)(
            thread.id,
            AssistantMessageItem(
                id=f"msg_{n}", thread_id=thread.id, created_at=same, content=[AssistantMessageContent(text=str(n))]
            ),
            context,
        )
    seen, after = [], None
    while True:
        page = async_to_sync(store.load_thread_items)(thread.id, after, 2, "desc", context)
        seen += [i.id for i in page.data]
        if not page.has_more:
            break
        after = page.after
    assert seen == ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"]


def test_store_refuses_other_owners_widgets_and_the_preview_side(chatkit_widget, license_b, outsider):
    from chatkit.store import NotFoundError
    from chatkit.types import ThreadMetadata

    store, mine = DjangoStore(), context_for(chatkit_widget)
    thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())
    async_to_sync(store.save_thread)(thread, mine)
    other_visitor = context_for(chatkit_widget, visitor="v2")
    preview = context_for(chatkit_widget)
    preview.preview = True
    for context in (other_visitor, preview):
        with pytest.raises(NotFoundError):
            async_to_sync(store.load_thread)(thread.id, context)
        with pytest.raises(NotFoundError):
            async_to_sync(store.save_thread)(thread, context)  # cannot take it over either
        with pytest.raises(NotFoundError):
            async_to_sync(store.delete_thread)(thread.id, context)
        assert async_to_sync(store.load_threads)(10, None, "desc", context).data == []
    with pytest.raises(NotFoundError):
        async_to_sync(store.load_attachment)("atc_1", mine)


# --- widget templates: pinned shapes (build() checks only the root type) ------------------------------


def test_widget_shapes_validate_against_the_strict_component_types():
    """The SDK's DynamicWidgetRoot accepts any typo; the (deprecated) strict classes do not."""
    from pydantic import TypeAdapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from chatkit.widgets import StrictWidgetRoot

        adapter = TypeAdapter(StrictWidgetRoot)
        product = {
            "id": 1,
            "title": "P",
            "price": "9.00",
            "currency": "USD",
            "in_stock": False,
            "image_url": "https://img.example.com/p.png",
            "url": "https://shop.example.com/p",
        }
        for shape in (
            product_cards({"products": [product]}),
            trade_in_form({"device": "X", "devices": ["X", "Y"]}),
            trade_in_form({"devices": []}),
            demo_clip({"topic": "t", "title": "T", "url": "https://v.example.com/t.mp4"}),
            meeting_link({"url": "https://cal.example.com/x"}),
        ):
            adapter.validate_python(shape)


def test_links_are_https_only():
    card = product_cards(
        {
            "products": [
                {"id": 1, "title": "P", "url": "javascript:alert(1)", "image_url": "http://img.example.com/p.png"}
            ]
        }
    )
    item = card["children"][0]
    assert "onClickAction" not in item and item["children"][0]["type"] == "Col"
    assert "Button" not in json.dumps(meeting_link({"url": "http://cal.example.com"}))
    assert https_url("https://ok.example.com/x") and not https_url("//evil.example.com") and not https_url(None)
    assert widget_for_event({"type": "ui.unknown"}) is None
    assert widget_for_event({"type": "ui.product_cards", "products": []}) is None


# --- the SDK shares this app's import name ------------------------------------------------------------


def test_sdk_modules_resolve_to_the_sdk_and_this_app_defines_none_of_their_names():
    import chatkit.server

    sdk_dir = Path(chatkit.server.__file__).parent
    app_dir = Path(__file__).resolve().parent.parent
    assert sdk_dir != app_dir and "site-packages" in str(sdk_dir)
    sdk_modules = {p.stem for p in sdk_dir.glob("*.py")} - {"__init__"}
    ours = {p.stem for p in app_dir.glob("*.py")} | {p.name for p in app_dir.iterdir() if p.is_dir()}
    assert sdk_modules & ours == set(), "a module of this app would shadow the openai-chatkit SDK"


def test_tracing_is_disabled_for_the_process():
    from agents.tracing import get_trace_provider

    # ChatkitConfig.ready() turned it off: tenant chats never go to the platform org's traces.
    assert get_trace_provider()._manual_disabled is True
