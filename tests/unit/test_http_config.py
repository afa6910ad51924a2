"""The langgraph.json `http` section as parsed, the headers it passes to runs, and origin matching."""

from __future__ import annotations

import logging

import pytest

from runplane.api.http_config import configurable_headers, parse_http_section
from runplane.api.origins import (
    MAX_LOGGED_ORIGINS,
    OriginPolicy,
    normalize_origin,
    origin_problem,
    same_origin,
)
from runplane.api.settings import HeaderRules
from runplane.core.errors import InvalidInput

# -- origins ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://localhost:3000/", "http://localhost:3000"),
        ("HTTP://LocalHost:3000//", "http://localhost:3000"),
        ("https://app.example:443", "https://app.example"),
        ("http://app.example:80/", "http://app.example"),
        ("https://app.example:80", "https://app.example:80"),
        ("http://[::1]:5173", "http://[::1]:5173"),
        ("http://[::1]:80", "http://[::1]"),
        (" https://App.Example ", "https://app.example"),
        ("*", "*"),
        ("null", "null"),
    ],
)
def test_origins_are_normalized(written: str, normalized: str) -> None:
    assert normalize_origin(written) == normalized


def test_configured_origins_match_what_browsers_send() -> None:
    policy = OriginPolicy(["http://LocalHost:3000/", "https://app.example:443"])
    assert policy.allows("http://localhost:3000")
    assert policy.allows("https://app.example")
    assert not policy.allows("http://localhost:3001")
    assert not policy.allows("http://app.example")  # another scheme is another origin
    assert not policy.allows("https://app.example.evil")


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "https://localhost",
        "http://LOCALHOST:1",
    ],
)
def test_loopback_policy_allows_any_port_of_loopback(origin: str) -> None:
    assert OriginPolicy(allow_loopback=True).allows(origin)
    assert not OriginPolicy().allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost.evil.example",
        "http://evil.example",
        "file://localhost",
        "null",
        "http://127.0.0.1.nip.io",
    ],
)
def test_loopback_policy_refuses_the_rest(origin: str) -> None:
    assert not OriginPolicy(allow_loopback=True).allows(origin)


def test_regex_policy_matches_the_whole_origin() -> None:
    policy = OriginPolicy(regex=r"https://.*\.app\.example")
    assert policy.allows("https://pr-7.app.example")
    assert not policy.allows("https://pr-7.app.example.evil")


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://localhost:8123", "localhost:8123", True),
        ("http://LOCALHOST:8123/", "localhost:8123", True),
        ("https://api.example", "api.example", True),
        ("https://api.example", "api.example:443", True),
        ("http://api.example:80", "api.example", True),
        ("http://[::1]:8123", "[::1]:8123", True),
        ("http://api.example", "api.example:8080", False),
        ("http://evil.example", "api.example", False),
        ("http://localhost:8124", "localhost:8123", False),
        ("http://localhost:8123", None, False),
    ],
)
def test_same_origin(origin: str, host: str | None, same: bool) -> None:
    assert same_origin(origin, host) is same


def test_origin_problems_are_named() -> None:
    assert origin_problem("http://localhost:3000/") is None
    assert origin_problem("*") is None
    assert "without a path" in (origin_problem("https://app.example/app") or "")
    assert "scheme://host" in (origin_problem("localhost:3000") or "")


def test_a_refused_origin_is_logged_once_with_the_setting_that_allows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="runplane.api.origins")
    policy = OriginPolicy(hint="--cors-origins={origin}")
    for written in ("https://evil.example", "https://evil.example/", "HTTPS://EVIL.example:443"):
        policy.refused(written)
    policy.refused("http://other.example")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "--cors-origins=https://evil.example" in messages[0]
    assert "--cors-origins=http://other.example" in messages[1]


def test_refusal_logging_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runplane.api.origins")
    policy = OriginPolicy()
    for i in range(MAX_LOGGED_ORIGINS + 50):
        policy.refused(f"https://x{i}.example")
    assert len(caplog.records) == MAX_LOGGED_ORIGINS


# -- configurable headers -------------------------------------------------------------------------------

HEADERS = {
    "x-user-id": "alice",
    "x-user-secret": "s3cret",
    "x-api-key": "sk-key",
    "authorization": "Bearer token",
    "x-tenant-id": "t",
    "user-agent": "ua/1",
    "content-type": "application/json",
}


def test_no_header_reaches_a_run_without_rules() -> None:
    # As LangGraph's server: without `configurable_headers`, not even x-* or user-agent.
    assert configurable_headers(HEADERS, None) == {}


def test_includes_and_excludes() -> None:
    rules = HeaderRules(includes=("x-user-*", "user-agent"), excludes=("x-user-secret",))
    assert configurable_headers(HEADERS, rules) == {"x-user-id": "alice", "user-agent": "ua/1"}


def test_credentials_never_reach_a_run() -> None:
    assert configurable_headers(HEADERS, HeaderRules(includes=("*",))) == {
        "x-user-id": "alice",
        "x-user-secret": "s3cret",
        "user-agent": "ua/1",
        "content-type": "application/json",
    }


def test_langsmith_tracing_headers_always_pass() -> None:
    headers = {
        "langsmith-trace": "20260101T000000000000Zabc",
        "baggage": "langsmith-metadata=%7B%22a%22%3A1%7D,langsmith-tags=t1%2Ct2,langsmith-project=p",
    }
    assert configurable_headers(headers, None) == {
        "langsmith-trace": "20260101T000000000000Zabc",
        "langsmith-metadata": {"a": 1},
        "langsmith-tags": ["t1", "t2"],
        "langsmith-project": "p",
    }


# -- the section ----------------------------------------------------------------------------------------


def test_section_is_parsed() -> None:
    config = parse_http_section(
        {
            "disable_store": True,
            "disable_meta": False,
            "enable_custom_route_auth": True,
            "mount_prefix": "/my-api/",
            "middleware_order": "auth_first",
            "cors": {"allow_origins": ["https://app.example"], "allow_credentials": True},
            "configurable_headers": {"include": ["X-User-*"], "exclude": ["x-user-secret"]},
        }
    )
    assert config.disable_store and not config.disable_meta and not config.disable_runs
    assert config.enable_custom_route_auth is True
    assert config.mount_prefix == "/my-api"
    assert config.middleware_order == "auth_first"
    assert config.cors == {"allow_origins": ["https://app.example"], "allow_credentials": True}
    assert config.configurable_headers == HeaderRules(includes=("x-user-*",), excludes=("x-user-secret",))
    assert parse_http_section(None).app is None
    assert parse_http_section({}).enable_custom_route_auth is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"disable_runs": "yes"}, "http.disable_runs must be true or false"),
        ({"mount_prefix": "api"}, "must start with '/'"),
        ({"mount_prefix": "/noauth"}, "reserved"),
        ({"cors": {"allow_origin": ["x"]}}, "unknown keys ['allow_origin']"),
        ({"cors": {"allow_origins": "https://app.example"}}, "http.cors.allow_origins must be a list"),
        ({"cors": {"allow_origin_regex": "("}}, "not a regular expression"),
        ({"configurable_headers": {"includes": "x-*"}}, "includes must be a list"),
        ({"middleware_order": "sideways"}, "middleware_order"),
        ({"app": 3}, "http.app must be"),
    ],
)
def test_bad_values_are_refused_by_name(section: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_http_section(section)


def test_unknown_keys_are_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runplane.api.http_config")
    parse_http_section(
        {"disable_webhooks": True, "disable_everything": True, "colour": "blue"}, source="lg.json"
    )
    (record,) = caplog.records
    assert "lg.json" in record.getMessage()
    assert "'colour'" in record.getMessage() and "'disable_everything'" in record.getMessage()
    assert "disable_webhooks" not in record.getMessage()  # runplane has no webhooks: nothing to disable
