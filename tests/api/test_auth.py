"""API keys, CORS, the cross-site guard and the CLI's secure defaults."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from runplane.api import ApiSettings, create_app
from runplane.api.auth import ApiKeyAuth, load_api_keys_file, parse_api_keys, presented_key
from runplane.cli import check_exposure, is_loopback, main
from runplane.core.errors import InvalidInput
from runplane.settings import Settings, settings_from_env
from runplane.testing import memory_manager
from tests.api.conftest import api_runtime

BASE_URL = "http://runplane.test"
KEYS = {"sk-alice-secret": "alice", "sk-bob-secret": "bob"}


def _client(settings: ApiSettings, **kwargs: object) -> httpx.AsyncClient:
    app = create_app(memory_manager(), api_runtime(), settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def keyed() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(ApiSettings(api_keys=KEYS)) as client:
        yield client


# -- API keys ---------------------------------------------------------------------------------------


async def test_missing_or_invalid_key_is_401(keyed: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"x-api-key": ""},
        {"x-api-key": "sk-alice-secreT"},
        {"x-api-key": "sk-alice-secret "[:-2]},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic c2stYWxpY2Utc2VjcmV0"},
        {"Authorization": "sk-alice-secret"},  # no scheme
        {"x-api-key": "x" * 20000},
    ):
        response = await keyed.post("/threads", json={}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"] == "Bearer"
        detail = response.json()["detail"]
        assert "API key" in detail and "secret" not in detail and "nope" not in detail
    assert (await keyed.post("/threads/count", json={}, headers={"x-api-key": "sk-alice-secret"})).json() == 0


async def test_keys_name_users(keyed: httpx.AsyncClient) -> None:
    alice = {"x-api-key": "sk-alice-secret"}
    bob = {"Authorization": "bearer sk-bob-secret"}  # the scheme is case-insensitive
    thread = (await keyed.post("/threads", json={}, headers=alice)).json()
    assert (await keyed.get(f"/threads/{thread['thread_id']}", headers=alice)).status_code == 200
    assert (await keyed.get(f"/threads/{thread['thread_id']}", headers=bob)).status_code == 404
    assert (await keyed.post("/threads/count", json={}, headers=bob)).json() == 0
    # x-api-key wins over Authorization, as the SDK sends x-api-key.
    both = {"x-api-key": "sk-alice-secret", "Authorization": "Bearer sk-bob-secret"}
    assert (await keyed.post("/threads/count", json={}, headers=both)).json() == 1


async def test_public_routes_need_no_key(keyed: httpx.AsyncClient) -> None:
    for path in ("/ok", "/info", "/openapi.json", "/docs", "/ok?check_db=1"):
        assert (await keyed.get(path)).status_code == 200, path
    assert (await keyed.head("/ok")).status_code == 200
    # Even unknown routes are refused before anything else is said about them.
    assert (await keyed.get("/nope")).status_code == 401
    document = (await keyed.get("/openapi.json")).json()
    assert "401" in document["paths"]["/threads"]["post"]["responses"]
    async with _client(ApiSettings()) as open_client:
        document = (await open_client.get("/openapi.json")).json()
        assert "401" not in document["paths"]["/threads"]["post"]["responses"]


def test_key_matching() -> None:
    auth = ApiKeyAuth(KEYS)
    assert auth.identify("sk-alice-secret") == "alice"
    assert auth.identify("sk-bob-secret") == "bob"
    for wrong in (None, "", "sk-alice-secre", "sk-alice-secrett", "SK-ALICE-SECRET"):
        assert auth.identify(wrong) is None
    assert presented_key({"headers": [(b"x-api-key", b" k1 ")]}) == "k1"
    assert presented_key({"headers": [(b"authorization", b"Bearer  k2")]}) == "k2"
    assert presented_key({"headers": [(b"authorization", b"Bearer ")]}) is None
    with pytest.raises(InvalidInput):
        ApiKeyAuth({})


def test_parse_api_keys() -> None:
    assert parse_api_keys("k1:alice, k2:bob,") == {"k1": "alice", "k2": "bob"}
    assert parse_api_keys("a:b:carol") == {"a:b": "carol"}  # the user follows the last colon
    for bad in ("", "k1", "k1:", ":alice", "k 1:alice", "k1:alice,k1:bob"):
        with pytest.raises(InvalidInput) as refused:
            parse_api_keys(bad)
        assert "k1" not in refused.value.message or "twice" in refused.value.message


def test_load_api_keys_file(tmp_path: Path) -> None:
    lines = tmp_path / "keys.txt"
    lines.write_text("# team keys\nk1 alice\n\n  k2   bob  \n")
    assert load_api_keys_file(lines) == {"k1": "alice", "k2": "bob"}
    as_json = tmp_path / "keys.json"
    as_json.write_text(json.dumps({"k1": "alice"}))
    assert load_api_keys_file(as_json) == {"k1": "alice"}
    for text in ("k1 alice extra\n", "k1\n", '{"k1": 5}', "{not json", ""):
        bad = tmp_path / "bad.txt"
        bad.write_text(text)
        with pytest.raises(InvalidInput) as refused:
            load_api_keys_file(bad)
        assert "k1 alice" not in refused.value.message  # a key is never echoed
    with pytest.raises(InvalidInput):
        load_api_keys_file(tmp_path / "missing")


def test_both_schemes_at_once_are_refused() -> None:
    from langgraph_sdk import Auth

    with pytest.raises(ValueError, match="not both"):
        create_app(memory_manager(), api_runtime(), ApiSettings(api_keys=KEYS, custom_auth=Auth()))


async def test_credentials_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with _client(ApiSettings(api_keys=KEYS)) as client:
        alice = {"x-api-key": "sk-alice-secret"}
        await client.post("/threads", json={}, headers={"x-api-key": "sk-guess-secret"})
        await client.post("/threads", json={}, headers=alice)
        await client.post("/threads", content=b"{", headers={**alice, "content-type": "application/json"})
        await client.get("/threads/not-a-uuid", headers=alice)
    assert "secret" not in caplog.text
    assert "secret" not in repr(ApiSettings(api_keys=KEYS))
    assert "secret" not in repr(Settings(api_keys="sk-alice-secret:alice"))


# -- CORS and cross-site requests -------------------------------------------------------------------


async def test_cors_is_closed_by_default() -> None:
    async with _client(ApiSettings()) as client:
        plain = await client.get("/ok", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers
        preflight = await client.options(
            "/threads",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        # A page on another site cannot make the server act, even with a "simple" request.
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/json"):
            forged = await client.post(
                "/runs",
                content=b'{"assistant_id": "echo"}',
                headers={"Origin": "https://evil.example", "content-type": content_type},
            )
            assert forged.status_code == 403, content_type
            assert "RUNPLANE_CORS_ORIGINS" in forged.json()["detail"]
        assert (await client.post("/threads/count", json={})).json() == 0
        # The server's own pages (same origin) and non-browser clients (no Origin) are fine.
        same = await client.post("/threads", json={}, headers={"Origin": BASE_URL})
        assert same.status_code == 200


async def test_cors_when_configured() -> None:
    allowed = "https://studio.example"
    async with _client(ApiSettings(cors_origins=(allowed,), api_keys=KEYS)) as client:
        preflight = await client.options(
            "/threads/search",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, content-type",
            },
        )
        assert preflight.status_code == 200  # answered before authentication: browsers send no key
        assert preflight.headers["access-control-allow-origin"] == allowed
        response = await client.post(
            "/threads", json={}, headers={"Origin": allowed, "x-api-key": "sk-alice-secret"}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == allowed
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "content-location" in exposed and "x-pagination-next" in exposed
        other = await client.post(
            "/threads", json={}, headers={"Origin": "https://evil.example", "x-api-key": "sk-alice-secret"}
        )
        assert other.status_code == 403


async def test_wildcard_cors() -> None:
    async with _client(ApiSettings(cors_origins=("*",))) as client:
        response = await client.post("/threads", json={}, headers={"Origin": "https://anywhere.example"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"


# -- secure defaults of `runplane serve` / `dev` ----------------------------------------------------


def test_is_loopback() -> None:
    for host in ("127.0.0.1", "127.5.5.5", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", "10.0.0.1"):
        assert not is_loopback(host), host


def test_exposure_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_exposure(Settings(host="127.0.0.1"))  # loopback: fine without auth
    with pytest.raises(click.UsageError) as refused:
        check_exposure(Settings(host="0.0.0.0"))
    message = refused.value.message
    assert message.startswith("refusing to listen on 0.0.0.0 without authentication")
    assert "RUNPLANE_API_KEYS" in message and "--insecure-allow-no-auth" in message
    check_exposure(Settings(host="0.0.0.0", api_keys="k:alice"))
    keys = tmp_path / "keys"
    keys.write_text("k alice\n")
    check_exposure(Settings(host="0.0.0.0", api_keys_file=str(keys)))
    check_exposure(Settings(host="0.0.0.0", insecure_allow_no_auth=True))
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"g": "./g.py:g"}, "auth": {"path": "./auth.py:auth"}}))
    check_exposure(Settings(host="0.0.0.0", config=str(config)))
    check_exposure(Settings(host="0.0.0.0"))  # ./langgraph.json is used when present
    assert settings_from_env({"RUNPLANE_INSECURE_ALLOW_NO_AUTH": "1"}).insecure_allow_no_auth


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_cli_refuses_open_non_loopback(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [command, "--host", "0.0.0.0", "--database-url", "memory://"])
    assert result.exit_code == 2, result.output
    assert "refusing to listen on 0.0.0.0 without authentication" in result.output
    bad_keys = CliRunner().invoke(
        main, [command, "--host", "0.0.0.0"], env={"RUNPLANE_API_KEYS": "no-user-here"}
    )
    assert bad_keys.exit_code == 2 and "key:user" in bad_keys.output
    assert "--insecure-allow-no-auth" in CliRunner().invoke(main, [command, "--help"]).output
