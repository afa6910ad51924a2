"""Demo graphs, offline and deterministic (no LLM, no network).

- `echo`: returns its input (`messages`, `n`).
- `chat`: a one-node agent whose fake chat model streams its reply token by token and reports token
  usage and a model name, like a real provider. The reply repeats the last human message, or is
  `tokens` words long when the input asks for that.
- `slow`: `steps` steps of `delay` seconds each, one checkpoint per step; cancel it half-way.
- `hitl`: asks a question with `interrupt()`; resume it with `Command(resume=answer)`.
"""

from __future__ import annotations

import asyncio
import operator
import re
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt
from typing_extensions import TypedDict

DEMO_MODEL_NAME = "runplane-demo-1"


def _words(text: str) -> int:
    return len(text.split())


class DemoChatModel(GenericFakeChatModel):
    """`GenericFakeChatModel` that also reports what real providers do: usage and a model name.

    The last streamed chunk carries `usage_metadata` and `response_metadata["model_name"]`, so the
    aggregated message (and `on_llm_end`) has them, as with OpenAI or Anthropic streaming.
    """

    model_name: str = DEMO_MODEL_NAME

    def _usage(self, messages: list[BaseMessage], reply: str) -> UsageMetadata:
        prompt = sum(_words(str(m.content)) for m in messages)
        output = _words(reply)
        return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        message = result.generations[0].message
        reply = str(message.content)
        final = AIMessage(
            content=reply,
            id=message.id,
            usage_metadata=self._usage(messages, reply),
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=final)])

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages).generations[0].message
        tokens = [t for t in re.split(r"(\s)", str(message.content)) if t] or [""]
        for index, token in enumerate(tokens):
            last = index == len(tokens) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=token,
                    id=message.id,
                    chunk_position="last" if last else None,
                    usage_metadata=message.usage_metadata if last else None,  # type: ignore[attr-defined]
                    response_metadata={"model_name": self.model_name} if last else {},
                )
            )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if run_manager:
                run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # Native async streaming: the default runs `_stream` in a thread, one hop per token.
        for chunk in self._chunks(messages):
            if run_manager:
                await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
            yield chunk


# -- echo ----------------------------------------------------------------------------------------


class EchoState(TypedDict, total=False):
    messages: list[Any]
    n: int


async def echo_node(state: EchoState) -> dict[str, Any]:
    return {"messages": state.get("messages", []), "n": state.get("n", 0)}


_echo = StateGraph(EchoState)
_echo.add_node("echo", echo_node)
_echo.add_edge(START, "echo")
_echo.add_edge("echo", END)
echo = _echo.compile(name="echo")


# -- chat ----------------------------------------------------------------------------------------


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    #: When set, the reply is this many words ("tok0 tok1 ...") instead of an echo.
    tokens: int


def _reply_to(state: ChatState) -> str:
    if tokens := state.get("tokens"):
        return " ".join(f"tok{i}" for i in range(int(tokens)))
    last = next((m for m in reversed(state.get("messages", [])) if isinstance(m, HumanMessage)), None)
    return f"You said: {last.content}" if last is not None else "Hello! Say something."


async def chat_node(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
    model = DemoChatModel(messages=iter([AIMessage(content=_reply_to(state))]))
    reply = await model.ainvoke(state.get("messages", []), config)
    return {"messages": [reply]}


_chat = StateGraph(ChatState)
_chat.add_node("agent", chat_node)
_chat.add_edge(START, "agent")
_chat.add_edge("agent", END)
chat = _chat.compile(name="chat")


# -- slow ----------------------------------------------------------------------------------------


class SlowState(TypedDict, total=False):
    steps: int
    delay: float
    done: Annotated[list[int], operator.add]


async def slow_step(state: SlowState) -> dict[str, Any]:
    step = len(state.get("done", []))
    get_stream_writer()({"step": step, "of": int(state.get("steps", 3))})
    await asyncio.sleep(float(state.get("delay", 1.0)))
    return {"done": [step]}


def _more_steps(state: SlowState) -> str:
    return "step" if len(state.get("done", [])) < int(state.get("steps", 3)) else END


_slow = StateGraph(SlowState)
_slow.add_node("step", slow_step)
_slow.add_edge(START, "step")
_slow.add_conditional_edges("step", _more_steps, ["step", END])
slow = _slow.compile(name="slow")


# -- hitl ----------------------------------------------------------------------------------------


class HitlState(TypedDict, total=False):
    question: str
    answer: Any
    confirmed: bool


async def ask(state: HitlState) -> dict[str, Any]:
    answer = interrupt({"question": state.get("question", "Proceed?")})
    return {"answer": answer}


async def confirm(state: HitlState) -> dict[str, Any]:
    return {"confirmed": True}


_hitl = StateGraph(HitlState)
_hitl.add_node("ask", ask)
_hitl.add_node("confirm", confirm)
_hitl.add_edge(START, "ask")
_hitl.add_edge("ask", "confirm")
_hitl.add_edge("confirm", END)
hitl = _hitl.compile(name="hitl")
