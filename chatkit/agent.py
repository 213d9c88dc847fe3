"""The Agents SDK agent behind a ChatKit widget in server mode, built from the widget's config.

- Instructions: `connection.chatkit.instructions` + the business facts + the enabled tools'
  guidance (`widgets.tools.tools_guidance`, the same words voice gets) + one line on the medium.
- Tools: the enabled tools of `widgets/tools.py` (the ONE enable list `tools.enabled`, shared with
  voice) as `FunctionTool`s. Non-strict schemas: strict mode would force every optional argument.
  Each call runs `tool_run` (tenant-scoped, never raises) in Django's ORM thread; a UI event becomes
  a ChatKit widget streamed into the thread, and the model gets the same JSON result voice gets.
  A stored lead (log_lead) also streams ChatKit's client effect `switchboard.lead` {source}: the
  element's `chatkit.effect` event, which our ChatKit page turns into the page's `lead` event.
- Run config: the model by name, a per-request provider (`chatkit.client.model_provider`), tracing
  off, `store=False` (OpenAI keeps no copy; reasoning is carried encrypted between tool rounds).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agents import Agent, FunctionTool, ModelSettings, RunConfig
from agents.models.interface import Model
from agents.tool_context import ToolContext
from django.conf import settings
from openai.types.shared import Reasoning

from chatkit.agents import AgentContext, ThreadItemConverter
from chatkit.client import model_provider
from chatkit.threads import RequestContext
from chatkit.types import Attachment, ClientEffectEvent, UserMessageTagContent, WidgetItem
from chatkit.widget_templates import widget_for_event
from licenses.identity import identity_text
from widgets.aio import db_step
from widgets.models import Conversation
from widgets.page_context import page_context_text
from widgets.tools import TOOLS, Tool, tool_run, tools_enabled, tools_guidance

LEAD_EFFECT = "switchboard.lead"  # templates/chatkit/page.html listens for it


def lead_effect(source: str) -> ClientEffectEvent:
    """ChatKit's client effect for a stored lead: its source only (no contact details reach the page)."""
    return ClientEffectEvent(name=LEAD_EFFECT, data={"source": source})


MEDIUM = (
    "You are chatting with a visitor in a chat window on the business's website: answer in short paragraphs, "
    "plain words, markdown only for short lists. Never make up prices, stock or policies."
)


def chatkit_instructions(
    config: dict[str, Any], *, page_context: dict[str, Any] | None = None, identity: dict[str, Any] | None = None
) -> str:
    parts = [(config["connection"]["chatkit"].get("instructions") or "").strip()]
    facts = ((config.get("voice") or {}).get("business_facts") or "").strip()
    if facts:
        parts.append("Business facts (authoritative; prefer them over anything else):\n" + facts)
    parts.append(tools_guidance(tools_enabled(config)))
    parts.append(MEDIUM)
    parts.append(page_context_text(page_context))
    parts.append(identity_text(identity))
    return "\n\n".join(p for p in parts if p)


def _run_tool(name: str, ctx: RequestContext, arguments: str) -> Any:
    conversation = Conversation.objects.filter(pk=ctx.conversation_id).first() if ctx.conversation_id else None
    return tool_run(name=name, widget=ctx.widget, conversation=conversation, arguments=arguments, config=ctx.config)


def function_tool(tool: Tool) -> FunctionTool:
    async def invoke(tool_ctx: ToolContext[AgentContext[RequestContext]], arguments: str) -> str:
        agent_ctx = tool_ctx.context
        ctx = agent_ctx.request_context
        result = await db_step(_run_tool, tool.name, ctx, arguments)
        widget = widget_for_event(result.ui_event)
        if widget is not None:
            ctx.ui_events.append(result.ui_event)
            await agent_ctx.stream_widget(widget, copy_text=result.speak)
        if result.lead_source:
            await agent_ctx.stream(lead_effect(result.lead_source))
        return result.output()

    return FunctionTool(
        name=tool.name,
        description=tool.description,
        params_json_schema=tool.parameters,
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


def chatkit_agent(ctx: RequestContext) -> Agent[AgentContext[RequestContext]]:
    tools = tools_enabled(ctx.config)
    return _agent(
        (ctx.widget.name or "Assistant")[:60],
        chatkit_instructions(ctx.config, page_context=ctx.page_context, identity=ctx.identity),
        tuple(t.name for t in tools),
    )


@lru_cache(maxsize=256)
def _agent(name: str, instructions: str, tool_names: tuple[str, ...]) -> Agent[AgentContext[RequestContext]]:
    """One Agent per (name, instructions, tools): a run never changes its Agent, and building one costs ~1 ms
    of CPU (its model settings are coerced through `typing.get_type_hints`). Everything per request (key,
    widget, visitor) reaches the tools through the run's context, never through the Agent."""
    return Agent(name=name, instructions=instructions, tools=[function_tool(TOOLS[n]) for n in tool_names])


def chatkit_run_config(ctx: RequestContext, *, model: Model | None = None) -> RunConfig:
    """`model` replaces the OpenAI model in tests (agents.testing.ScriptedModel)."""
    effort = settings.CHATKIT_REASONING_EFFORT
    model_settings = ModelSettings(
        store=False,
        include_usage=True,
        reasoning=Reasoning(effort=effort) if effort else None,
        response_include=["reasoning.encrypted_content"] if effort else None,
    )
    if model is not None:
        config = RunConfig(model=model, tracing_disabled=True)
    else:
        config = RunConfig(model=ctx.model, model_provider=model_provider(api_key=ctx.api_key), tracing_disabled=True)
    # Set after construction: RunConfig's __post_init__ would coerce it through `typing.get_type_hints` of the
    # whole class on every request (~2 ms CPU, bench/chatkit_server.py), for a value that is already a ModelSettings.
    config.model_settings = model_settings
    return config


class HistoryConverter(ThreadItemConverter):
    """Thread items → model input. Widgets go back as the one-line summary the visitor saw, not their JSON."""

    async def widget_to_input(self, item: WidgetItem) -> Any:
        text = item.copy_text or "a card"
        return {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"(The visitor was shown on screen: {text})"}],
        }

    async def tag_to_message_content(self, tag: UserMessageTagContent) -> Any:
        return {"type": "input_text", "text": tag.text}

    async def attachment_to_message_content(self, attachment: Attachment) -> Any:
        # The endpoint refuses attachments in server mode; an old item must not break the thread.
        return {"type": "input_text", "text": f"(The visitor attached {attachment.name}, which was not read.)"}
