"""Switchboard's ChatKit server: openai-chatkit's `ChatKitServer` running the widget's Agents SDK agent.

`respond` feeds the thread's last items (newest first, then reversed) to the agent built from the
request's config (published, or the draft for the configurator preview) and relays
`stream_agent_response`. In `finally` it records the run's token usage and cost, so a visitor who
disconnects mid-answer is still billed for what was used, and stops the upstream call. A turn that
completes lands in the transcript as `widgets.Message` rows; an upstream failure (bad key, unknown
model, 429, timeout) removes what the turn streamed, marks the conversation failed and shows the
visitor a ChatKit error in plain words.

`action` handles the trade-in form's submit: validated, stored through `widgets.services.leads.lead_create`
(the lead service voice uses), the form replaced by a thanks card and the model told in a hidden
context item. A second submit of the same form does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from agents import Runner
from agents.models.interface import Model
from django.conf import settings
from django.core.cache import cache
from pydantic import TypeAdapter

from chatkit import services
from chatkit.admission import yield_to_admissions
from chatkit.agent import HistoryConverter, chatkit_agent, chatkit_run_config, lead_effect
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.client import RETRYABLE, ChatKitError, upstream_error
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.threads import DjangoStore, RequestContext, new_id
from chatkit.types import (
    Action,
    AssistantMessageContent,
    AssistantMessageItem,
    ChatKitReq,
    HiddenContextItem,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemReplacedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTextContent,
    WidgetItem,
    is_streaming_req,
)
from chatkit.widget_templates import TRADE_IN_CONDITIONS, TRADE_IN_SUBMIT, trade_in_thanks, widget_root
from licenses.api import ApiError, storable
from widgets.aio import db_step
from widgets.models import Conversation, Message
from widgets.services.leads import lead_clean, lead_create
from widgets.services.turns import chatkit_turn_record

logger = logging.getLogger(__name__)
CONVERTER = HistoryConverter()
REQUEST = TypeAdapter(ChatKitReq)  # built once: the SDK's `process` builds it per request (~2.5 ms CPU)


def _user_text(item: UserMessageItem | None) -> str:
    if item is None:
        return ""
    return "".join(part.text for part in item.content if isinstance(part, UserMessageTextContent)).strip()


def _assistant_text(item: AssistantMessageItem) -> str:
    """The answer's text for the transcript (a NUL from the model mended: licenses.api.storable)."""
    return storable("".join(part.text for part in item.content).strip())


class SwitchboardChatKitServer(ChatKitServer[RequestContext]):
    def __init__(self, store: DjangoStore | None = None, *, model: Model | None = None):
        super().__init__(store or DjangoStore())
        self.model = model  # tests: an agents.testing.ScriptedModel instead of OpenAI

    async def process(
        self, request: str | bytes | bytearray, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        return await self.process_parsed(REQUEST.validate_json(request), context)

    async def process_parsed(
        self, request: ChatKitReq, context: RequestContext
    ) -> StreamingResult | NonStreamingResult:
        """The SDK's `process` for a request the endpoint already parsed (and checked) with `REQUEST`."""
        if is_streaming_req(request):
            return StreamingResult(self._process_streaming(request, context))
        return NonStreamingResult(await self._process_non_streaming(request, context))

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: RequestContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        agent_ctx = AgentContext(thread=thread, store=self.store, request_context=context)
        history = await self.store.load_thread_items(thread.id, None, settings.CHATKIT_HISTORY_ITEMS, "desc", context)
        items = await CONVERTER.to_agent_input(list(reversed(history.data)))
        try:
            run_config = chatkit_run_config(context, model=self.model)
        except ChatKitError as exc:
            await self._fail(context, exc.code)
            raise CustomStreamError(exc.message, allow_retry=False)
        await yield_to_admissions()
        result = Runner.run_streamed(
            chatkit_agent(context),
            items,
            context=agent_ctx,
            run_config=run_config,
            max_turns=settings.CHATKIT_MAX_TURNS,
        )
        produced: list[str] = []
        replies: list[str] = []
        context.ui_events = []
        finished = False
        try:
            async for event in stream_agent_response(agent_ctx, result):
                await yield_to_admissions()
                if isinstance(event, ThreadItemDoneEvent) and not isinstance(event.item, UserMessageItem):
                    produced.append(event.item.id)
                    if isinstance(event.item, AssistantMessageItem):
                        replies.append(_assistant_text(event.item))
                yield event
            finished = True
        except Exception as exc:
            error = upstream_error(exc)
            if error is None:
                logger.exception("chatkit run failed for widget %s", context.widget.pk)
                error = ChatKitError(
                    "upstream_error", "The assistant could not answer just now. Please try again shortly.", 502
                )
            # Nothing half-saved: what this turn streamed goes (the visitor's own message stays for a retry).
            for item_id in produced:
                yield ThreadItemRemovedEvent(item_id=item_id)
            await self._fail(context, error.code)
            raise CustomStreamError(error.message, allow_retry=error.code in RETRYABLE)
        finally:
            if not finished:
                result.cancel()
            turn = (
                {
                    "user_text": _user_text(input_user_message),
                    "assistant_text": "\n\n".join(r for r in replies if r),
                    "ui": list(context.ui_events),
                }
                if finished
                else None
            )
            await asyncio.shield(self._record(context, result, turn))

    async def _record(self, context: RequestContext, result: Any, turn: dict[str, Any] | None) -> None:
        """Usage (always, even after a disconnect) and the completed turn (if any): one write."""
        if context.conversation_id is None:
            return
        usage = result.context_wrapper.usage
        cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", 0) or 0
        reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0) or 0
        try:
            await yield_to_admissions()
            await db_step(
                services.chatkit_usage_record,
                conversation_id=context.conversation_id,
                model=context.model,
                counted=not context.preview,
                turn=turn,
                usage={
                    "requests": usage.requests,
                    "input_tokens": usage.input_tokens,
                    "input_cached_tokens": cached,
                    "output_tokens": usage.output_tokens,
                    "reasoning_tokens": reasoning,
                    "total_tokens": usage.total_tokens,
                },
            )
        except Exception:
            logger.exception("chatkit usage not recorded for conversation %s", context.conversation_id)

    async def _fail(self, context: RequestContext, code: str) -> None:
        if context.conversation_id is not None:
            await db_step(services.chatkit_conversation_fail, conversation_id=context.conversation_id, code=code)

    # --- widget actions ---------------------------------------------------------------------

    async def action(
        self, thread: ThreadMetadata, action: Action[str, Any], sender: WidgetItem | None, context: RequestContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        if action.type != TRADE_IN_SUBMIT or sender is None:
            raise CustomStreamError("That button does nothing here.", allow_retry=False)
        async for event in self._trade_in_submit(thread, action, sender, context):
            yield event

    async def _trade_in_submit(
        self, thread: ThreadMetadata, action: Action[str, Any], sender: WidgetItem, context: RequestContext
    ) -> AsyncIterator[ThreadStreamEvent]:
        if getattr(sender.widget, "key", None) != "trade-in" or _is_sent(sender):
            return  # not the form, or already sent: one lead per form
        payload = action.payload if isinstance(action.payload, dict) else {}
        device = str(payload.get("device") or "").strip()[:120]
        condition = str(payload.get("condition") or "").strip()
        try:
            if not device:
                raise ApiError("invalid", "Tell us which device you want to trade in.")
            if condition not in TRADE_IN_CONDITIONS:
                raise ApiError("invalid", f"Pick the condition: {', '.join(TRADE_IN_CONDITIONS)}.")
            clean = lead_clean(
                data={
                    "source": "trade_in_form",
                    "name": payload.get("name"),
                    "email": payload.get("email"),
                    "phone": payload.get("phone"),
                    "interest": f"Trade-in: {device} ({condition})",
                    "data": {"device": device, "condition": condition},
                }
            )
            if not clean["name"] or not clean["email"]:
                raise ApiError("invalid", "Enter your name and email so we can send the quote.")
        except ApiError as exc:
            yield ThreadItemDoneEvent(item=self._say(thread, context, f"{exc.message} Then send the form again."))
            return
        # One lead per form, even for two submits racing on two workers (SET NX on Redis).
        if not await db_step(cache.add, f"sb:chatkit:trade-in:{thread.id}:{sender.id}", 1, 86400):
            return
        lead_id = await db_step(_trade_in_lead, context, clean)
        thanks = sender.model_copy(
            update={"widget": widget_root(trade_in_thanks(name=clean["name"], device=device, condition=condition))}
        )
        yield ThreadItemReplacedEvent(item=thanks)
        yield lead_effect(clean["source"])
        note = (
            f"The visitor submitted the trade-in form: {device}, condition {condition}, name {clean['name']}, "
            f"email {clean['email']}. It is saved for the team (lead {lead_id}); do not ask for it again."
        )
        await self.store.add_thread_item(
            thread.id,
            HiddenContextItem(
                id=new_id("sdk_hidden_context"), thread_id=thread.id, created_at=datetime.now(), content=note
            ),
            context,
        )
        reply = f"Thanks {clean['name'].split()[0]}! We have your {device}; the team will email you a quote."
        yield ThreadItemDoneEvent(item=self._say(thread, context, reply))
        if context.conversation_id is not None:
            await db_step(
                chatkit_turn_record,
                conversation_id=context.conversation_id,
                role=Message.Role.TOOL,
                user_text=f"Trade-in form sent: {device} ({condition})",
                assistant_text=reply,
            )

    def _say(self, thread: ThreadMetadata, context: RequestContext, text: str) -> AssistantMessageItem:
        return AssistantMessageItem(
            id=new_id("message"),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text=text)],
        )


def _is_sent(item: WidgetItem) -> bool:
    status = getattr(item.widget, "status", None)
    return isinstance(status, dict) and status.get("text") == "Sent"


def _trade_in_lead(context: RequestContext, clean: dict[str, Any]) -> int:
    conversation = Conversation.objects.filter(pk=context.conversation_id).first()
    return lead_create(widget=context.widget, conversation=conversation, **clean).pk
