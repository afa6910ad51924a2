"""How runs end: success, human in the loop, errors, timeouts, usage, pick-up latency, hand-back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from runplane.core.errors import LeaseLost, NotFound
from runplane.core.events import cancel_channel
from runplane.core.manager import ManagerSettings
from runplane.core.models import Outcome, TokenUsage
from runplane.demo.graphs import DEMO_MODEL_NAME
from runplane.testing import FakeClock
from runplane.worker import attempt as attempt_module
from tests.integration._worker_support import GATE, STOPPED, decode, harness


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    GATE["second"] = asyncio.Event()
    GATE["stopped"] = asyncio.Event()
    STOPPED.clear()


async def test_success_records_values_and_idle_thread() -> None:
    async with harness() as h:
        run = await h.run("echo", input={"n": 5})
        final = await h.done(run)
        assert final is not None and final.status == "success" and final.error is None
        thread = await h.manager.get_thread(run.thread_id)
        assert thread.status == "idle" and thread.values == {"n": 5, "messages": []}
        assert thread.interrupts == {}
        assert h.worker.succeeded == 1 and "succeeded=1" in repr(h.worker)


async def test_human_in_the_loop_interrupt_then_resume() -> None:
    async with harness() as h:
        thread_id = await h.thread()
        asked = await h.done(await h.run("hitl", thread_id, input={"question": "name?"}))
        assert asked is not None and asked.status == "success"
        thread = await h.manager.get_thread(thread_id)
        assert thread.status == "interrupted"
        [(_task_id, [pending])] = thread.interrupts.items()
        assert pending["value"] == {"question": "name?"} and pending["id"]

        resumed = await h.done(await h.run("hitl", thread_id, command={"resume": "Ada"}))
        assert resumed is not None and resumed.status == "success"
        thread = await h.manager.get_thread(thread_id)
        assert thread.status == "idle" and thread.interrupts == {}
        assert thread.values == {"question": "name?", "answer": "Ada", "confirmed": True}


async def test_command_update_and_goto() -> None:
    async with harness() as h:
        # `update` writes the state, `goto` picks the next node: skip the question entirely.
        run = await h.run("hitl", command={"update": {"question": "direct"}, "goto": "confirm"})
        assert (await h.done(run)).status == "success"  # type: ignore[union-attr]
        state = await h.runtime.get_state("hitl", run.thread_id)
        assert state["values"] == {"question": "direct", "confirmed": True}


async def test_interrupt_before_leaves_the_thread_interrupted() -> None:
    async with harness() as h:
        run = await h.run("hitl", input={"question": "q"}, interrupt_before=["confirm"], command=None)
        await h.done(run)
        thread = await h.manager.get_thread(run.thread_id)
        assert thread.status == "interrupted"


async def test_graph_error_ends_error_with_error_event() -> None:
    async with harness() as h:
        run = await h.run("failer", input={"x": 1}, stream_mode=["values"])
        final = await h.done(run)
        events = await h.events(run)
        assert final is not None and final.status == "error" and final.error == "ValueError: boom!"
        assert [e.event for e in events] == ["metadata", "values", "error"]
        assert decode(events[-1]) == {"error": "ValueError", "message": "boom!"}
        assert (await h.manager.get_thread(run.thread_id)).status == "error"
        assert h.worker.failed == 1


async def test_unknown_graph_is_an_error_run() -> None:
    async with harness() as h:
        run = await h.run("nope", input={})
        final = await h.done(run)
        assert final is not None and final.status == "error" and final.error.startswith("NotFound")  # type: ignore[union-attr]


async def test_timeout() -> None:
    # The worker's timeout (`--run-timeout`); LangGraph's API has no per-run one, so neither has RunKwargs.
    async with harness(default_timeout=0.05) as h:
        run = await h.run("slow", input={"steps": 2, "delay": 30})
        final = await h.done(run)
        assert final is not None and final.status == "timeout"
        assert final.error is not None and final.error.startswith("TimeoutError")
        assert (await h.manager.get_thread(run.thread_id)).status == "error"


async def test_token_usage_and_model_name_with_thread_totals() -> None:
    async with harness() as h:
        thread_id = await h.thread()
        first = await h.done(await h.run("chat", thread_id, input={"tokens": 3}))
        second = await h.done(await h.run("chat", thread_id, input={"tokens": 5}))
        assert first is not None and second is not None
        assert first.model_name == DEMO_MODEL_NAME
        assert first.usage.output_tokens == 3 and second.usage.output_tokens == 5
        assert first.usage.total_tokens == first.usage.input_tokens + 3
        total = await h.manager.thread_usage(thread_id)
        assert total == first.usage + second.usage


async def test_usage_is_recorded_while_the_run_is_still_running() -> None:
    async with harness() as h:
        run = await h.run("chat", input={"tokens": 4}, stream_mode=["values"])
        # Recorded during the run: the final `values` event comes after the model call.
        await h.until(run, "values", lambda v: len(v.get("messages", [])) == 1)
        final = await h.done(run)
        assert final is not None and final.usage.output_tokens == 4


async def test_idle_worker_picks_up_a_new_run_within_milliseconds() -> None:
    async with harness(start=False) as h:
        claims: list[float] = []
        claim = h.manager.claim_and_look

        async def timed_claim(worker_id: str):
            claimed = await claim(worker_id)
            if claimed.run is not None:
                claims.append(time.perf_counter())
            return claimed

        h.manager.claim_and_look = timed_claim  # type: ignore[method-assign]
        await h.worker.start()
        # The runs reach it by its wake-up and claim, as runs admitted by another process do (its
        # own manager's admissions would take them for it: `test_claim_at_admission.py`).
        h.manager.take_runs_here(None)
        thread_id = await h.thread()
        to_running, to_first_event = [], []
        for _ in range(20):
            created = time.perf_counter()
            run = await h.run("echo", thread_id, input={"n": 1})
            async for _event in await h.manager.stream_run(run.run_id):
                to_first_event.append(time.perf_counter() - created)
                break
            to_running.append(claims[-1] - created)
            await h.done(run)
        median_running = sorted(to_running)[10] * 1000
        median_event = sorted(to_first_event)[10] * 1000
        print(f"pick-up: create->running {median_running:.2f} ms, create->first event {median_event:.2f} ms")
        assert median_running < 200 and median_event < 200  # sanity only; the real numbers are ~1 ms


async def test_burst_mode_runs_everything_claimable() -> None:
    async with harness(start=False) as h:
        runs = [await h.run("echo", input={"n": i}) for i in range(5)]
        await h.worker.run_until_idle()
        statuses = [(await h.manager.get_run(r.run_id)).status for r in runs]
        assert statuses == ["success"] * 5 and h.worker.claimed == 5


async def test_delayed_run_starts_after_its_delay() -> None:
    async with harness(poll_interval=0.02) as h:
        thread_id = await h.thread()
        created = time.monotonic()
        run = await h.manager.create_run(
            thread_id, "echo", kwargs={"graph_id": "echo", "input": {}}, after_seconds=0.1
        )
        final = await h.done(run)
        assert final is not None and final.status == "success"
        assert time.monotonic() - created >= 0.1


async def test_stop_hands_running_runs_back_and_they_resume_from_their_checkpoint() -> None:
    async with harness(shutdown_grace=0.01) as h:
        run = await h.run("gated", input={"log": ["in"]}, stream_mode=["custom"])
        await h.until(run, "custom")  # `first` is done and checkpointed; `second` is waiting
        await h.worker.stop()
        handed_back = await h.manager.get_run(run.run_id)
        assert handed_back.status == "pending" and handed_back.attempt == 1

        GATE["second"].set()
        await h.worker.run_until_idle()
        final = await h.manager.get_run(run.run_id)
        assert final.status == "success" and final.attempt == 2
        # Resumed, not restarted: the input was not sent again and `first` did not run twice.
        assert (await h.manager.get_thread(run.thread_id)).values == {"log": ["in", "first", "second"]}


async def test_recovered_run_of_a_dead_worker_is_executed() -> None:
    clock = FakeClock()
    async with harness(clock=clock, settings=ManagerSettings(lease_seconds=5), start=False) as h:
        run = await h.run("echo", input={"n": 4})
        dead = await h.manager.claim("dead-worker")
        assert dead is not None and dead.run_id == run.run_id
        clock.advance(6)
        await h.worker.run_until_idle()  # recovers the expired lease, then claims and runs it
        final = await h.manager.get_run(run.run_id)
        assert final.status == "success" and final.attempt == 2 and h.worker.recovered == 1


async def test_claimed_run_with_a_pending_rollback_is_rolled_back_without_running() -> None:
    clock = FakeClock()
    async with harness(clock=clock, start=False) as h:
        thread_id = await h.thread()
        run = await h.run("failer", thread_id, input={"x": 1})
        dead = await h.manager.claim("dead-worker")
        assert dead is not None
        await h.manager.cancel_run(run.run_id, action="rollback")
        clock.advance(h.manager.settings.lease_seconds + 1)
        await h.worker.run_until_idle()
        with pytest.raises(NotFound):
            await h.manager.get_run(run.run_id)
        assert (await h.manager.get_thread(thread_id)).status == "idle"
        assert h.worker.cancelled == 1 and h.worker.failed == 0


async def test_lost_lease_stops_the_attempt_and_it_never_writes_again() -> None:
    clock = FakeClock()
    async with harness(clock=clock, concurrency=1) as h:
        run = await h.run("blocker", input={}, stream_mode=["custom"])
        await h.until(run, "custom")
        # The lease expires (this worker stalled), another worker recovers and claims the run.
        clock.advance(h.manager.settings.lease_seconds + 1)
        assert [r.run_id for r in await h.manager.store.expired_runs()] == [run.run_id]
        await h.manager.store.recover_run(run.run_id, 1, 3)
        other = await h.manager.store.claim_run("worker-b", h.manager.settings.lease_seconds)
        assert other is not None and other.attempt == 2
        # Any hint makes the stalled worker renew: it learns it lost the lease and stops.
        await h.manager.bus.notify(cancel_channel(h.worker.worker_id), run.run_id)
        await GATE["stopped"].wait()  # the stalled attempt's graph was cancelled
        current = await h.manager.get_run(run.run_id)
        assert current.status == "running" and current.attempt == 2 and current.lease_owner == "worker-b"
        with pytest.raises(LeaseLost):
            await h.manager.finish(replace(run, attempt=1), _ok())
        # The new attempt is the one that ends the run.
        finished = await h.manager.finish(other, _ok())
        assert finished.status == "success"
        assert h.worker.succeeded == 0 and h.worker.failed == 0 and h.worker.cancelled == 0


def _ok() -> Outcome:
    return Outcome("success", "idle", usage=TokenUsage())


async def test_temporary_thread_is_deleted_once_its_run_ended() -> None:
    async with harness(start=False) as h:
        kept = await h.run("echo", input={"n": 1})
        temporary = await h.run("echo", input={"n": 2}, temporary=True, stream_mode=["values"])
        await h.worker.run_until_idle()
        with pytest.raises(NotFound):
            await h.manager.get_thread(temporary.thread_id)
        assert await h.checkpoints(temporary.thread_id) == []
        assert (await h.manager.get_thread(kept.thread_id)).values == {"n": 1, "messages": []}
        assert h.worker.succeeded == 2


async def test_a_worker_listens_for_cancels_once_not_once_per_run() -> None:
    """One subscription per worker, entered before it claims: none per run (each was a round trip
    to Redis or PostgreSQL before the run could start, and another after it)."""
    async with harness(start=False) as h:
        listen = h.manager.bus.listen
        channels: list[str] = []

        def counting(channel: str) -> Any:
            channels.append(channel)
            return listen(channel)

        h.manager.bus.listen = counting  # type: ignore[method-assign]
        await h.worker.start()
        runs = [await h.run("echo", input={"messages": ["hi"]}) for _ in range(5)]
        assert [getattr(await h.done(run), "status", None) for run in runs] == ["success"] * 5
    assert [c for c in channels if c.startswith("runplane:cancel:")] == [cancel_channel(h.worker.worker_id)]


async def test_a_cancel_hinted_before_the_run_executes_is_obeyed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel whose hint comes between the claim and the execution (here: while the run's first
    event is being published) is kept, and looked at as soon as the run executes, not at its first
    lease renewal (an hour away here)."""
    monkeypatch.setattr(attempt_module, "FIRST_CHECK_SECONDS", 3600.0)
    async with harness(start=False, heartbeat_seconds=3600) as h:
        publishing, cancelled = asyncio.Event(), asyncio.Event()
        enqueue = h.manager.bus.enqueue

        async def held_metadata(run_id: str, event: str, data: bytes) -> None:
            if event == "metadata":
                publishing.set()
                await cancelled.wait()
            await enqueue(run_id, event, data)

        monkeypatch.setattr(h.manager.bus, "enqueue", held_metadata)
        await h.worker.start()
        run = await h.run("blocker", input={})  # it never ends by itself
        await publishing.wait()
        requested = await h.manager.cancel_run(run.run_id)
        assert requested is not None and requested.status == "running"
        cancelled.set()
        final = await h.done(run)
    assert final is not None and final.status == "interrupted"
