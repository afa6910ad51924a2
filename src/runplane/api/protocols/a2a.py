"""A2A (Agent2Agent, JSON-RPC 2.0 binding) at `/a2a/{assistant_id}`, over the runs API's use-cases.

As on LangGraph's server: an A2A context is a thread (created on first use), a task is a run on it
(task id `"{context_id}:{run_id}"`), and a message continuing an interrupted task resumes the graph
with the message's text (or data) as `Command(resume=...)`. A message's text parts become human
messages in the graph's `messages`; its data parts are merged into the input. The reply is the
last AI message of the turn, as an "Assistant Response" artifact; an interrupt is an "Interrupt"
artifact with the task `input-required`.

Methods: `message/send`, `message/stream` (SSE), `tasks/get`, `tasks/cancel`, with the wire shapes
of the A2A 0.3 JSON-RPC binding (the `a2a-sdk` v0.3 compatibility types validate and build them).
Each call is authorized as the runs API route it stands for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from a2a.compat.v0_3 import types as a2a
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from runplane.api import runs
from runplane.api import schemas as s
from runplane.api.assistants import resolve_assistant
from runplane.api.errors import ApiError
from runplane.api.protocols._runs import as_route, status_and_detail
from runplane.api.render import final_output, json_response
from runplane.api.routing import Call, Endpoint, Reply, check_json_depth, read_body
from runplane.api.sse import EventStream
from runplane.core.errors import NotFound
from runplane.core.events import StreamEvent
from runplane.core.graphs import Assistant
from runplane.core.models import Run, Thread

TAG = "A2A"
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700,
    -32600,
    -32601,
    -32602,
    -32603,
)
TASK_NOT_FOUND, TASK_NOT_CANCELABLE, UNSUPPORTED_OPERATION = -32001, -32002, -32004
#: Protocol version of the JSON-RPC binding served (the method names `message/send`, ...).
PROTOCOL_VERSION = "0.3.0"
_MODES = ["application/json", "text/plain"]
_STATE_OF_STATUS = {
    "pending": a2a.TaskState.submitted,
    "running": a2a.TaskState.working,
    "success": a2a.TaskState.completed,
    "interrupted": a2a.TaskState.canceled,  # cancelled from outside; a graph interrupt is `success`
    "error": a2a.TaskState.failed,
    "timeout": a2a.TaskState.failed,
}
_TERMINAL = frozenset(
    {a2a.TaskState.completed, a2a.TaskState.canceled, a2a.TaskState.failed, a2a.TaskState.rejected}
)


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _rpc_result(id_: Any, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": id_, "result": result})


def _rpc_error(id_: Any, code: int, message: str) -> Response:
    # JSON-RPC errors travel in a 200 response, as the binding requires.
    return json_response({"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}})


def task_id_of(context_id: str, run_id: str) -> str:
    return f"{context_id}:{run_id}"


def parse_task_id(task_id: str) -> tuple[str, str]:
    context_id, _, run_id = task_id.partition(":")
    if not run_id:
        raise RpcError(TASK_NOT_FOUND, f"Task not found: {task_id}")
    return context_id, run_id


# -- messages between LangChain and A2A -------------------------------------------------------------


def _message_role(message: Mapping[str, Any]) -> a2a.Role | None:
    kind = str(message.get("type") or message.get("role") or "").lower().removesuffix("messagechunk")
    kind = kind.removesuffix("message")
    if kind in ("human", "user"):
        return a2a.Role.user
    if kind in ("ai", "assistant", "agent"):
        return a2a.Role.agent
    return None  # system and tool messages are not part of the conversation A2A shows


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            block if isinstance(block, str) else str(block.get("text", ""))
            for block in content
            if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text")
        )
    return "" if content is None else str(content)


def _history(values: Any, task_id: str, context_id: str, limit: int | None) -> list[a2a.Message]:
    messages = values.get("messages") if isinstance(values, dict) else None
    history = []
    for message in messages if isinstance(messages, list) else []:
        role = _message_role(message) if isinstance(message, dict) else None
        if role is None:
            continue
        history.append(
            a2a.Message(
                role=role,
                parts=[a2a.Part(root=a2a.TextPart(text=_text_of(message.get("content"))))],
                message_id=str(message.get("id") or uuid.uuid4()),
                task_id=task_id,
                context_id=context_id,
            )
        )
    return history[-limit:] if limit else history


def _reply(values: Any) -> str:
    """The last AI message of the current turn (after the last human message), or ""."""
    messages = values.get("messages") if isinstance(values, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        role = _message_role(message) if isinstance(message, dict) else None
        if role is a2a.Role.user:
            break
        if role is a2a.Role.agent:
            return _text_of(message.get("content"))
    return ""


def graph_input(message: a2a.Message) -> tuple[dict[str, Any], Any]:
    """The graph input for an A2A message, and what it says as a resume value (its text, else data)."""
    texts: list[str] = []
    data: dict[str, Any] = {}
    for part in message.parts:
        inner = part.root
        if isinstance(inner, a2a.TextPart):
            texts.append(inner.text)
        elif isinstance(inner, a2a.DataPart):
            data.update(inner.data)
        else:
            raise RpcError(-32005, "Unsupported part type: A2A agents here take 'text' and 'data' parts")
    role = "human" if message.role is a2a.Role.user else "assistant"
    graph: dict[str, Any] = {
        "messages": [{"role": role, "content": text, "id": message.message_id} for text in texts]
    }
    if not texts:
        del graph["messages"]
    graph.update(data)
    if not graph:
        raise RpcError(INVALID_PARAMS, "Message must contain at least one valid text or data part")
    return graph, ("\n".join(texts) if texts else data)


# -- tasks ----------------------------------------------------------------------------------------


def _artifact(name: str, description: str, parts: list[a2a.Part]) -> a2a.Artifact:
    return a2a.Artifact(artifact_id=str(uuid.uuid4()), name=name, description=description, parts=parts)


def _outcome(run: Run, thread: Thread | None, assistant_id: str) -> tuple[a2a.TaskStatus, list[a2a.Artifact]]:
    """A finished run as a task status and its artifacts."""
    output = final_output(run, thread)
    if isinstance(output, dict) and "__error__" in output:
        error = output["__error__"]
        text = f"Error executing assistant: {error.get('error')}: {error.get('message')}"
        status = a2a.TaskStatus(
            state=a2a.TaskState.failed,
            timestamp=_now(),
            message=a2a.Message(
                role=a2a.Role.agent,
                parts=[a2a.Part(root=a2a.TextPart(text=text))],
                message_id=str(uuid.uuid4()),
            ),
        )
        return status, []
    if run.status in ("interrupted",):
        return a2a.TaskStatus(state=a2a.TaskState.canceled, timestamp=_now()), []
    if isinstance(output, dict) and output.get("__interrupt__"):
        parts = [
            a2a.Part(root=a2a.DataPart(data={"id": i.get("id"), "value": i.get("value")}))
            for i in output["__interrupt__"]
            if isinstance(i, dict)
        ]
        artifact = _artifact("Interrupt", "Agent requires input to continue", parts)
        return a2a.TaskStatus(state=a2a.TaskState.input_required, timestamp=_now()), [artifact]
    reply = a2a.Part(root=a2a.TextPart(text=_reply(output) if "messages" in output else str(output)))
    artifact = _artifact("Assistant Response", f"Response from assistant {assistant_id}", [reply])
    return a2a.TaskStatus(state=a2a.TaskState.completed, timestamp=_now()), [artifact]


async def _thread(call: Call, thread_id: str) -> Thread | None:
    try:
        return await call.manager.get_thread(thread_id, call.owner)
    except NotFound:
        return None


def _task(
    task_id: str,
    context_id: str,
    status: a2a.TaskStatus,
    *,
    thread: Thread | None,
    artifacts: list[a2a.Artifact] | None = None,
    history_length: int | None = None,
) -> a2a.Task:
    if status.message is not None:
        status.message.task_id = task_id
        status.message.context_id = context_id
    history = None
    if history_length != 0:
        history = _history(thread.values if thread else None, task_id, context_id, history_length)
    return a2a.Task(
        id=task_id,
        context_id=context_id,
        status=status,
        history=history,
        artifacts=artifacts or None,
    )


async def _find_run(call: Call, task_id: str) -> tuple[str, Run]:
    """The latest run of a task (a resumed task has several), authorized as reading it."""
    context_id, run_id = parse_task_id(task_id)
    try:
        inner = await as_route(
            call,
            "GET",
            "/threads/{thread_id}/runs/{run_id}",
            path_params={"thread_id": context_id, "run_id": run_id},
        )
        run = await call.manager.get_run(run_id, inner.owner, context_id)
        later = await call.manager.list_runs(context_id, inner.owner)
    except (NotFound, ApiError):
        raise RpcError(TASK_NOT_FOUND, f"Task not found: {task_id}") from None
    for candidate in later:  # newest first
        if (candidate.metadata.get("a2a") or {}).get("task_id") == task_id:
            return context_id, candidate
        if candidate.run_id == run.run_id:
            break
    return context_id, run


async def _state(call: Call, run: Run, thread: Thread | None) -> a2a.TaskState:
    state = _STATE_OF_STATUS.get(run.status, a2a.TaskState.submitted)
    if state is a2a.TaskState.completed and thread is not None and thread.status == "interrupted":
        return a2a.TaskState.input_required
    return state


# -- methods --------------------------------------------------------------------------------------


async def _start(call: Call, assistant: Assistant, params: a2a.MessageSendParams) -> tuple[str, str, Run]:
    """Create the run for a message: a new task, or the next turn of an existing one."""
    message = params.message
    graph, said = graph_input(message)
    command = None
    if message.task_id is not None:
        context_id, run = await _find_run(call, message.task_id)
        thread = await _thread(call, context_id)
        state = await _state(call, run, thread)
        if state in _TERMINAL:
            raise RpcError(UNSUPPORTED_OPERATION, "A terminal task cannot accept another message")
        task_id = message.task_id
        if thread is not None and thread.status == "interrupted":
            command = {"resume": said}
    else:
        context_id = message.context_id or str(uuid.uuid4())
        task_id = None
    try:
        uuid.UUID(context_id)
    except ValueError:
        raise RpcError(INVALID_PARAMS, "contextId must be a UUID") from None
    body: dict[str, Any] = {
        "assistant_id": assistant.assistant_id,
        "if_not_exists": "create",
        "metadata": {"a2a": {"task_id": task_id}} if task_id else {},
    }
    body.update({"command": command} if command is not None else {"input": graph})
    thread_path = {"thread_id": context_id.lower()}
    inner = await as_route(
        call,
        "POST",
        "/threads/{thread_id}/runs",
        path_params=thread_path,
        body=s.RunCreateStateful.model_validate(body),
    )
    created = await runs.create(inner, inner.body)
    run = created.run
    return run.thread_id, task_id or task_id_of(run.thread_id, run.run_id), run


async def message_send(call: Call, assistant: Assistant, params: a2a.MessageSendParams) -> Any:
    context_id, task_id, run = await _start(call, assistant, params)
    finished = await call.manager.wait_for_run(run.run_id, call.owner, thread_id=context_id)
    thread = await _thread(call, context_id)
    status, artifacts = _outcome(finished or run, thread, assistant.assistant_id)
    config = params.configuration
    history_length = config.history_length if config is not None else None
    return _dump(
        _task(task_id, context_id, status, thread=thread, artifacts=artifacts, history_length=history_length)
    )


async def tasks_get(call: Call, assistant: Assistant, params: a2a.TaskQueryParams) -> Any:
    context_id, run = await _find_run(call, params.id)
    thread = await _thread(call, context_id)
    state = await _state(call, run, thread)
    if run.is_terminal:
        status, artifacts = _outcome(run, thread, assistant.assistant_id)
    else:
        status, artifacts = a2a.TaskStatus(state=state, timestamp=run.updated_at.isoformat()), []
    return _dump(
        _task(
            params.id,
            context_id,
            status,
            thread=thread,
            artifacts=artifacts,
            history_length=params.history_length,
        )
    )


async def tasks_cancel(call: Call, assistant: Assistant, params: a2a.TaskIdParams) -> Any:
    context_id, run = await _find_run(call, params.id)
    if run.is_terminal:
        raise RpcError(TASK_NOT_CANCELABLE, "Task is not cancelable in its current state")
    inner = await as_route(
        call,
        "POST",
        "/threads/{thread_id}/runs/{run_id}/cancel",
        path_params={"thread_id": context_id, "run_id": run.run_id},
        query=s.CancelQuery.model_validate({}),
    )
    cancelled = await call.manager.cancel_run(
        run.run_id, inner.owner, action="interrupt", wait=True, thread_id=context_id
    )
    thread = await _thread(call, context_id)
    status = a2a.TaskStatus(state=a2a.TaskState.canceled, timestamp=_now())
    if cancelled is not None and cancelled.status != "interrupted":
        status, _ = _outcome(cancelled, thread, assistant.assistant_id)  # it finished first
    return _dump(_task(params.id, context_id, status, thread=thread))


async def _stream(
    call: Call, assistant: Assistant, params: a2a.MessageSendParams, id_: Any
) -> AsyncIterator[StreamEvent]:
    context_id, task_id, run = await _start(call, assistant, params)
    submitted = a2a.TaskStatus(state=a2a.TaskState.submitted, timestamp=_now())
    thread = await _thread(call, context_id)
    yield StreamEvent(
        "message", _rpc_result(id_, _dump(_task(task_id, context_id, submitted, thread=thread)))
    )
    working = False
    async for _event in call.manager.follow_new_run(run.run_id, call.owner):
        if not working:  # the graph has started
            working = True
            update = a2a.TaskStatusUpdateEvent(
                task_id=task_id,
                context_id=context_id,
                status=a2a.TaskStatus(state=a2a.TaskState.working, timestamp=_now()),
                final=False,
            )
            yield StreamEvent("message", _rpc_result(id_, _dump(update)))
    finished = await call.manager.wait_for_run(run.run_id, call.owner, thread_id=context_id)
    status, artifacts = _outcome(finished or run, await _thread(call, context_id), assistant.assistant_id)
    for artifact in artifacts:
        artifact_update = a2a.TaskArtifactUpdateEvent(
            task_id=task_id, context_id=context_id, artifact=artifact, append=False, last_chunk=True
        )
        yield StreamEvent("message", _rpc_result(id_, _dump(artifact_update)))
    final = a2a.TaskStatusUpdateEvent(task_id=task_id, context_id=context_id, status=status, final=True)
    yield StreamEvent("message", _rpc_result(id_, _dump(final)))


async def _stream_or_error(
    call: Call, assistant: Assistant, params: a2a.MessageSendParams, id_: Any
) -> AsyncIterator[StreamEvent]:
    try:
        async for event in _stream(call, assistant, params, id_):
            yield event
    except Exception as exc:
        code, message = _error_of(exc)
        error = {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}
        yield StreamEvent("message", orjson.dumps(error))


def _error_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    status, detail = status_and_detail(exc)
    return (INVALID_PARAMS if status < 500 else INTERNAL_ERROR), detail


_METHODS: dict[str, tuple[type[BaseModel], Any]] = {
    "message/send": (a2a.MessageSendParams, message_send),
    "tasks/get": (a2a.TaskQueryParams, tasks_get),
    "tasks/cancel": (a2a.TaskIdParams, tasks_cancel),
    "message/stream": (a2a.MessageSendParams, None),
}


# -- routes ---------------------------------------------------------------------------------------


def _accepts(accept: str, media_type: str) -> bool:
    for item in accept.split(","):
        candidate = item.split(";", 1)[0].strip().lower()
        if candidate in ("*/*", media_type) or (
            candidate.endswith("/*") and media_type.startswith(candidate[:-1])
        ):
            return True
    return False


async def a2a_rpc(call: Call) -> Response:
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    raw = await read_body(call.request, call.settings.max_body_bytes)
    check_json_depth(raw, call.settings.max_json_depth)
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _rpc_error(None, PARSE_ERROR, "Invalid JSON payload")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        id_ = message.get("id") if isinstance(message, dict) else None
        return _rpc_error(
            id_, INVALID_REQUEST, "Invalid JSON-RPC message: missing or invalid jsonrpc version"
        )
    id_, method = message.get("id"), message.get("method")
    if id_ is not None and not isinstance(id_, str | int | float):
        return _rpc_error(
            None, INVALID_REQUEST, "Invalid JSON-RPC request: 'id' must be a string, number, or null"
        )
    if not isinstance(method, str):
        return _rpc_error(id_, INVALID_REQUEST, "Invalid JSON-RPC request: missing 'method' field")
    if method not in _METHODS:
        return _rpc_error(id_, METHOD_NOT_FOUND, f"Method not found: {method}")
    streaming = method == "message/stream"
    accept = call.request.headers.get("accept") or ""
    wanted = "text/event-stream" if streaming else "application/json"
    if not _accepts(accept, wanted):
        raise ApiError(400, f"Accept header must include {wanted}")
    model, handler = _METHODS[method]
    try:
        params = model.model_validate(message.get("params") or {})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        return _rpc_error(id_, INVALID_PARAMS, f"Invalid params: {where}: {first['msg']}")
    if streaming:
        assert isinstance(params, a2a.MessageSendParams)
        return EventStream(  # type: ignore[return-value]
            _stream_or_error(call, assistant, params, id_),
            headers={},
            heartbeat_seconds=call.settings.heartbeat_seconds,
        )
    try:
        result = await handler(call, assistant, params)
    except Exception as exc:
        return _rpc_error(id_, *_error_of(exc))
    return Response(_rpc_result(id_, result), media_type="application/json")


def agent_card(call: Call, assistant: Assistant) -> dict[str, Any]:
    """The assistant's agent card. It names protocol version 0.3 (the method names served), so that
    A2A clients pick the matching binding."""
    root = str(call.request.base_url).rstrip("/")
    url = f"{root}/a2a/{assistant.assistant_id}"
    description = assistant.description or f"{assistant.name} assistant"
    card = a2a.AgentCard(
        name=assistant.name,
        description=description,
        url=url,
        preferred_transport="JSONRPC",
        protocol_version=PROTOCOL_VERSION,
        capabilities=a2a.AgentCapabilities(
            streaming=True, push_notifications=False, state_transition_history=False
        ),
        default_input_modes=_MODES,
        default_output_modes=_MODES,
        skills=[
            a2a.AgentSkill(
                id=f"{assistant.assistant_id}-main",
                name=f"{assistant.name} Capabilities",
                description=description,
                tags=["assistant", "langgraph"],
                examples=[],
                input_modes=_MODES,
                output_modes=_MODES,
            )
        ],
        version=call.settings.version,
    )
    return {
        **_dump(card),
        # The A2A 1.0 card field, as LangGraph's server serves it (with the version spoken here).
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"}],
    }


async def a2a_card(call: Call) -> Response:
    return json_response(agent_card(call, await resolve_assistant(call, call.path["assistant_id"])))


async def a2a_well_known_card(call: Call) -> Response:
    return await a2a_card(call)


_RPC_REPLIES = {
    200: Reply("A JSON-RPC response, or for `message/stream` an SSE stream of them.", {"type": "object"}),
    400: Reply("The Accept header does not allow the response.", s.ErrorOut),
    404: Reply("Assistant not found.", s.ErrorOut),
}
_CARD_REPLIES = {
    200: Reply("The agent card.", {"type": "object"}),
    404: Reply("Assistant not found.", s.ErrorOut),
}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/a2a/{assistant_id}", a2a_rpc, "A2A: JSON-RPC 2.0", TAG, replies=_RPC_REPLIES),
    Endpoint("GET", "/a2a/{assistant_id}", a2a_card, "A2A: the agent card", TAG, replies=_CARD_REPLIES),
    Endpoint(
        "GET",
        "/a2a/{assistant_id}/.well-known/agent-card.json",
        a2a_well_known_card,
        "A2A: the agent card (well-known path)",
        TAG,
        replies=_CARD_REPLIES,
    ),
)
