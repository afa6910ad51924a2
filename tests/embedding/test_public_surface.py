"""`runplane.__all__` is a contract (as httpx tests its exported members): adding or removing a
public name is a deliberate change to this list."""

from __future__ import annotations

import subprocess
import sys

import runplane

PUBLIC = [
    "CancelRequested",
    "Conflict",
    "InvalidInput",
    "InvalidTransition",
    "LeaseLost",
    "ManagerSettings",
    "NotFound",
    "Run",
    "RunManager",
    "Runplane",
    "RunplaneError",
    "Runs",
    "StoreUnavailable",
    "StreamEvent",
    "Thread",
    "ThreadBusy",
    "Threads",
    "TokenUsage",
    "__version__",
    "open",
    "sse_response",
]


def test_all_is_exactly_the_public_surface_and_sorted() -> None:
    assert runplane.__all__ == PUBLIC
    assert sorted(runplane.__all__) == runplane.__all__


def test_every_public_name_resolves_and_names_its_home() -> None:
    for name in runplane.__all__:
        member = getattr(runplane, name)
        if name == "__version__":
            assert isinstance(member, str)
            continue
        assert member.__module__.startswith("runplane."), name
        assert set(runplane.__all__) <= set(dir(runplane))


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    try:
        runplane.does_not_exist  # noqa: B018
    except AttributeError as exc:
        assert "does_not_exist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_runplane_stays_light() -> None:
    # `open` and friends pull LangGraph and Starlette in on first use, not at `import runplane`.
    code = (
        "import sys, runplane; "
        "heavy = ('langgraph', 'starlette', 'aiosqlite', 'runplane.embedded'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy); runplane.open; print('runplane.embedded' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]


def test_the_testing_and_sync_helpers_are_public() -> None:
    from runplane import sync, testing

    assert (
        callable(testing.memory_runtime) and callable(testing.FakeClock) and callable(testing.memory_manager)
    )
    assert callable(sync.open)
