"""Graphs for the multi-process tests (`test_scaleout.py`, `test_chaos.py`, `scaleout_bench.py`).

Every step appends one line to the file named by `$RUNPLANE_TEST_LOG` (one `write` on an `O_APPEND`
descriptor, so lines of concurrent processes never interleave, and a line survives SIGKILL):

    <run_id> <thread_id> <step> <start|done> <attempt> <unix time> <pid>

- `steps`: three steps (`step1`..`step3`). Each emits `events` custom events
  `{"attempt", "step", "i"}` spread over `delay` seconds, then records `"<step>@<attempt>"` in the
  state's `log`. `hold: {"step2": 1}` makes step2 of attempt 1 sleep `hold_seconds` more (a worker
  can be killed, stopped or drained in the middle of the run deterministically); with
  `hold_blocks`, it blocks the worker's event loop instead, until `hold_seconds` pass or the file
  `release` exists.
- `ticker`: `ticks` steps of `delay` seconds; cancel it half-way.
- `sleeper`: one step that awaits `asyncio.sleep(delay)` (I/O-bound throughput benchmark).
"""

from __future__ import annotations

import asyncio
import operator
import os
import time
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

LOG_ENV = "RUNPLANE_TEST_LOG"


def record(config: RunnableConfig, step: str, phase: str) -> None:
    """Append one log line for this run, step and phase (see the module docstring)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    configurable = config.get("configurable") or {}
    attempt = (config.get("metadata") or {}).get("run_attempt", 0)
    line = (
        f"{configurable.get('run_id')} {configurable.get('thread_id')} {step} {phase} {attempt} "
        f"{time.time():.6f} {os.getpid()}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def attempt_of(config: RunnableConfig) -> int:
    return int((config.get("metadata") or {}).get("run_attempt", 0))


# -- steps --------------------------------------------------------------------------------------------


class StepsState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    delay: float
    events: int
    hold: dict[str, int]
    hold_seconds: float
    hold_blocks: bool
    release: str


def block(seconds: float, release: str | None) -> None:
    """Block the whole event loop (as a long GC pause or a CPU-bound node would: no heartbeat runs)
    for `seconds`, or until the file `release` exists."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (release and os.path.exists(release)):
        time.sleep(0.02)


async def _step(name: str, state: StepsState, config: RunnableConfig) -> dict[str, Any]:
    attempt = attempt_of(config)
    record(config, name, "start")
    write = get_stream_writer()
    events = int(state.get("events", 2))
    pause = float(state.get("delay", 0.1)) / max(events, 1)
    for i in range(events):
        write({"attempt": attempt, "step": name, "i": i})
        await asyncio.sleep(pause)
    if (state.get("hold") or {}).get(name) == attempt:
        seconds = float(state.get("hold_seconds", 60.0))
        if state.get("hold_blocks"):
            block(seconds, state.get("release"))
        else:
            await asyncio.sleep(seconds)
    record(config, name, "done")
    return {"log": [f"{name}@{attempt}"]}


async def step1(state: StepsState, config: RunnableConfig) -> dict[str, Any]:
    return await _step("step1", state, config)


async def step2(state: StepsState, config: RunnableConfig) -> dict[str, Any]:
    return await _step("step2", state, config)


async def step3(state: StepsState, config: RunnableConfig) -> dict[str, Any]:
    return await _step("step3", state, config)


_steps = StateGraph(StepsState)
_steps.add_node("step1", step1)
_steps.add_node("step2", step2)
_steps.add_node("step3", step3)
_steps.add_edge(START, "step1")
_steps.add_edge("step1", "step2")
_steps.add_edge("step2", "step3")
_steps.add_edge("step3", END)
steps = _steps.compile(name="steps")


# -- ticker -------------------------------------------------------------------------------------------


class TickerState(TypedDict, total=False):
    ticks: int
    delay: float
    done: Annotated[list[int], operator.add]


async def tick(state: TickerState, config: RunnableConfig) -> dict[str, Any]:
    n = len(state.get("done", []))
    record(config, f"tick{n}", "start")
    get_stream_writer()({"tick": n})
    await asyncio.sleep(float(state.get("delay", 0.1)))
    record(config, f"tick{n}", "done")
    return {"done": [n]}


def _more(state: TickerState) -> str:
    return "tick" if len(state.get("done", [])) < int(state.get("ticks", 10)) else END


_ticker = StateGraph(TickerState)
_ticker.add_node("tick", tick)
_ticker.add_edge(START, "tick")
_ticker.add_conditional_edges("tick", _more, ["tick", END])
ticker = _ticker.compile(name="ticker")


# -- sleeper ------------------------------------------------------------------------------------------


class SleeperState(TypedDict, total=False):
    delay: float
    slept: float


async def nap(state: SleeperState, config: RunnableConfig) -> dict[str, Any]:
    record(config, "nap", "start")
    await asyncio.sleep(float(state.get("delay", 0.2)))
    return {"slept": float(state.get("delay", 0.2))}


_sleeper = StateGraph(SleeperState)
_sleeper.add_node("nap", nap)
_sleeper.add_edge(START, "nap")
_sleeper.add_edge("nap", END)
sleeper = _sleeper.compile(name="sleeper")
