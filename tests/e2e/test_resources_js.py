"""The same resources through `@langchain/langgraph-sdk` (the JS SDK) under node, against a real
`runplane serve` on SQLite. Skipped unless `RUNPLANE_TEST_JS_SDK` names a directory whose
`node_modules` holds the SDK (`npm install @langchain/langgraph-sdk` there): tests download nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e._procs import Proc, free_port

APP = Path(__file__).with_name("memory_app") / "langgraph.json"
SCRIPT = Path(__file__).with_name("js") / "resources.cjs"


@pytest.fixture
def js_sdk() -> Path:
    folder = os.environ.get("RUNPLANE_TEST_JS_SDK")
    if not folder or shutil.which("node") is None:
        pytest.skip("RUNPLANE_TEST_JS_SDK (a directory with node_modules/@langchain/langgraph-sdk) and node")
    modules = Path(folder) / "node_modules"
    if not (modules / "@langchain" / "langgraph-sdk").is_dir():
        pytest.skip(f"{modules} has no @langchain/langgraph-sdk")
    return modules


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Proc]:
    port = free_port()
    argv = [sys.executable, "-m", "runplane.cli", "serve", "--port", str(port), "--config", str(APP)]
    argv += ["--database-url", f"sqlite:///{tmp_path / 'runplane.db'}"]
    proc = Proc("server", "api", argv, {**os.environ, "RUNPLANE_SWEEP_SECONDS": "0.2"}, tmp_path, port)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()


def test_js_sdk(server: Proc, js_sdk: Path) -> None:
    result = subprocess.run(
        ["node", str(SCRIPT), server.url],
        env={**os.environ, "NODE_PATH": str(js_sdk)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    checked = json.loads(result.stdout.strip().splitlines()[-1])["checked"]
    assert len(checked) == 22, checked
