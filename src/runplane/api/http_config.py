"""The `http` section of a langgraph.json, read as LangGraph's server reads it, and the request
headers it passes into a run's `config["configurable"]` (`http.configurable_headers`).

The section is checked here, once, at start: a wrong type is an error that names the key, and a
key runplane does not know is a warning that names it, never silently ignored.
"""

from __future__ import annotations

import functools
import logging
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import orjson

from runplane.api.origins import origin_problem
from runplane.api.routing import Call
from runplane.api.settings import HeaderRules, HttpConfig, MiddlewareOrder
from runplane.core.errors import InvalidInput
from runplane.core.run_kwargs import RunKwargs

logger = logging.getLogger(__name__)

_FLAGS = (
    "disable_assistants",
    "disable_threads",
    "disable_runs",
    "disable_store",
    "disable_ui",
    "disable_meta",
    "disable_mcp",
    "disable_a2a",
    "disable_event_streaming",
    "enable_custom_route_auth",
)
#: Keys of LangGraph's `http` section for features runplane does not have (webhooks, header
#: logging): what they disable or filter is already absent.
_ABSENT_FEATURES = frozenset({"disable_webhooks", "logging_headers"})
_CORS_LISTS = ("allow_origins", "allow_methods", "allow_headers", "expose_headers")
_CORS_KEYS = frozenset({*_CORS_LISTS, "allow_credentials", "allow_origin_regex", "max_age"})
#: Never passed to a run, whatever the patterns say: they are credentials.
_CREDENTIAL_HEADERS = frozenset({"x-api-key", "x-service-key", "x-tenant-id", "authorization"})


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _mount_prefix(value: Any) -> str | None:
    """LangGraph's rules: starts with `/`, a trailing `/` is dropped, `/noauth` is reserved."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidInput(f"http.mount_prefix must start with '/' (e.g. '/my-api'), got {value!r}")
    prefix = value.rstrip("/")
    if prefix == "/noauth" or prefix.startswith("/noauth/"):
        raise InvalidInput(f"http.mount_prefix {value!r}: '/noauth' is reserved")
    return prefix or None


def _cors(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"http.cors must be an object, got {value!r}")
    unknown = sorted(set(value) - _CORS_KEYS)
    if unknown:
        raise InvalidInput(f"http.cors: unknown keys {unknown}; allowed are {sorted(_CORS_KEYS)}")
    cors = dict(value)
    for key in _CORS_LISTS:
        if key in cors:
            cors[key] = list(_strings(cors[key], f"http.cors.{key}"))
    if not isinstance(cors.get("allow_credentials", False), bool):
        raise InvalidInput("http.cors.allow_credentials must be true or false")
    regex = cors.get("allow_origin_regex")
    if regex is not None:
        try:
            re.compile(regex)
        except (TypeError, re.error) as exc:
            raise InvalidInput(f"http.cors.allow_origin_regex {regex!r} is not a regular expression") from exc
    max_age = cors.get("max_age", 600)
    if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0:
        raise InvalidInput(f"http.cors.max_age must be a number of seconds, got {max_age!r}")
    for origin in cors.get("allow_origins", ()):
        problem = origin_problem(origin)
        if problem is not None:
            # LangGraph's server starts with such an entry (it just never matches): so does runplane.
            logger.warning("http.cors.allow_origins: %s", problem, extra={"action": "config"})
    return cors


def _header_rules(value: Any) -> HeaderRules | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"http.configurable_headers must be an object, got {value!r}")
    unknown = sorted(set(value) - {"includes", "include", "excludes", "exclude"})
    if unknown:
        raise InvalidInput(f"http.configurable_headers: unknown keys {unknown}; use includes and excludes")
    # `include`/`exclude` are LangGraph's aliases; as there, the plural wins when both are given.
    includes = _strings(value.get("includes") or value.get("include"), "http.configurable_headers.includes")
    excludes = _strings(value.get("excludes") or value.get("exclude"), "http.configurable_headers.excludes")
    return HeaderRules(tuple(p.lower() for p in includes), tuple(p.lower() for p in excludes))


def parse_http_section(section: Any, *, app: Any = None, source: str = "langgraph.json") -> HttpConfig:
    """The `http` section of a langgraph.json as an `HttpConfig`.

    Args:
        section: the section (None when absent).
        app: the application `http.app` names, already loaded (the API layer loads no files).
        source: the file, for messages.

    Raises:
        InvalidInput: a key has the wrong type or value.
    """
    if section is None:
        return HttpConfig()
    if not isinstance(section, Mapping):
        raise InvalidInput(f"{source}: 'http' must be an object, got {type(section).__name__}")
    known = {*_FLAGS, "app", "cors", "configurable_headers", "mount_prefix", "middleware_order"}
    unknown = sorted(set(section) - known - _ABSENT_FEATURES)
    if unknown:
        logger.warning(
            "%s: http keys %s are not supported by runplane and are ignored",
            source,
            unknown,
            extra={"action": "config"},
        )
    flags: dict[str, Any] = {}
    for name in _FLAGS:
        value = section.get(name)
        if value is not None and not isinstance(value, bool):
            raise InvalidInput(f"{source}: http.{name} must be true or false, got {value!r}")
        if value is not None:
            flags[name] = value
    order = section.get("middleware_order") or "middleware_first"
    if order not in ("middleware_first", "auth_first"):
        raise InvalidInput(f"{source}: http.middleware_order must be 'middleware_first' or 'auth_first'")
    app_path = section.get("app")
    if app_path is not None and not isinstance(app_path, str):
        raise InvalidInput(f"{source}: http.app must be './file.py:variable', got {app_path!r}")
    return HttpConfig(
        app=app,
        app_path=app_path,
        middleware_order=cast(MiddlewareOrder, order),
        mount_prefix=_mount_prefix(section.get("mount_prefix")),
        cors=_cors(section.get("cors")),
        configurable_headers=_header_rules(section.get("configurable_headers")),
        **flags,
    )


# -- configurable headers ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    """A header pattern as a regex: literal text and `*` only, so no pattern can be slow to match."""
    return re.compile("(?s:" + ".*".join(re.escape(part) for part in pattern.split("*")) + r")\Z")


def _included(name: str, rules: HeaderRules) -> bool:
    if name in _CREDENTIAL_HEADERS:
        return False
    if any(_pattern(p).match(name) for p in rules.excludes):
        return False
    return any(_pattern(p).match(name) for p in rules.includes)


def _tracing(value: str, baggage: str | None) -> dict[str, Any]:
    """LangSmith's distributed tracing headers, passed whatever the rules (as LangGraph does)."""
    found: dict[str, Any] = {"langsmith-trace": value}
    for item in (baggage or "").split(","):
        key, sep, raw = item.strip().partition("=")
        if not sep:
            continue
        if key == "langsmith-metadata" and key not in found:
            try:
                metadata = orjson.loads(urllib.parse.unquote(raw))
            except orjson.JSONDecodeError:
                metadata = None
            if isinstance(metadata, dict):
                found[key] = metadata
        elif key == "langsmith-tags":
            found[key] = urllib.parse.unquote(raw).split(",")
        elif key == "langsmith-project":
            found[key] = urllib.parse.unquote(raw)
    return found


def configurable_headers(headers: Mapping[str, str], rules: HeaderRules | None) -> dict[str, Any]:
    """The request headers (lower-case names) a run gets in `config["configurable"]`.

    None pass without rules, except LangSmith's tracing headers; with rules, those the rules include.
    """
    found: dict[str, Any] = {}
    for name, value in headers.items():
        if name == "langsmith-trace":
            found.update(_tracing(value, headers.get("baggage")))
        elif rules is not None and _included(name, rules):
            found[name] = value
    return found


def with_configurable_headers(call: Call, kwargs: RunKwargs) -> RunKwargs:
    """A run's kwargs with the request headers the project passes to runs in its configurable (they
    override the body's own keys, as on LangGraph's server)."""
    found = configurable_headers(call.request.headers, call.settings.http.configurable_headers)
    if not found:
        return kwargs
    config = dict(kwargs.config)
    config["configurable"] = {**(config.get("configurable") or {}), **found}
    return replace(kwargs, config=config)
