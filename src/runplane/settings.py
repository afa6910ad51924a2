"""One frozen `Settings`: every knob of a runplane process, each read from a `RUNPLANE_*` variable,
the often-set ones also from a CLI flag (a flag wins over the variable).

This is the only module that reads the process environment for runplane's own knobs. The
composition root (`runplane.host`) maps a `Settings` onto the parameter objects of the components
(`ManagerSettings`, `ApiSettings`, the worker's and the dispatcher's arguments), which embedding
applications and tests may also build directly.

`Settings(...)` is the defaults plus what is passed (embedding, tests: nothing is read from the
environment); `settings_from_env(environ)` reads the variables (`os.environ` by default, any
mapping in tests). Either way a bad value raises `InvalidInput` naming the variable.
`docs/settings.md` is generated from the field descriptions below (`scripts/settings_doc.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from runplane.core.errors import InvalidInput
from runplane.core.webhooks import AddressPolicy
from runplane.events import BACKENDS as BUS_BACKENDS
from runplane.stores import BACKENDS as STORE_BACKENDS
from runplane.stores import DEFAULT_DATABASE_URL, scheme_of

ENV_PREFIX = "RUNPLANE_"
#: LangGraph's dev server takes 2024; it is often busy (and is on our own machines), so we don't.
DEFAULT_PORT = 8123
#: The words a boolean variable may take (pydantic's); any other is refused: a typo must not mean False.
BOOLEAN_WORDS = ("1", "true", "yes", "on", "t", "y", "0", "false", "no", "off", "f", "n")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _seconds_list(value: Any) -> Any:
    """`0.01,0.05` (a variable or a flag) -> a tuple of floats; other values pass to pydantic."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


#: Comma-separated seconds in a variable (`NoDecode`: not JSON).
SecondsList = Annotated[tuple[float, ...], NoDecode, BeforeValidator(_seconds_list)]


class Settings(BaseSettings):
    """Everything a runplane process is configured with. Each field `x` is `RUNPLANE_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        validate_default=True,
        # A variable set to "" means "not set" (the default), as `export RUNPLANE_X=` users expect.
        env_ignore_empty=True,
    )

    # -- the process ------------------------------------------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="The database: `sqlite:///path.db`, `postgresql://user:pass@host/db` or `memory://` "
        "(nothing survives the process). Secret when it holds a password: shown redacted.",
    )
    redis_url: str | None = Field(
        None,
        description="`redis://host:port/db` to share event streams between processes; unset: a "
        "PostgreSQL database doubles as the bus, else the in-process bus.",
    )
    host: str = Field("127.0.0.1", description="Interface the API listens on.")
    port: int = Field(DEFAULT_PORT, description="Port the API listens on.")
    workers: int = Field(
        8, ge=0, description="Runs this process executes at once (0: API only, no in-process workers)."
    )
    config: str | None = Field(
        None, description="A langgraph.json; unset: `./langgraph.json` when present, else the demo graphs."
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` (human-readable) or `json` (one object per line, with the run's ids)."
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="The event loop `serve` and `dev` run on: `auto` is uvloop when installed "
        "(`pip install 'runplane[speed]'`), else asyncio's.",
    )

    # -- runs -------------------------------------------------------------------------------------
    lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a worker's claim on a run lasts without a renewal: a dead worker's runs "
        "are resumed by another about this long after.",
    )
    max_attempts: int = Field(
        3, ge=1, description="Claims of one run before a run whose workers keep dying ends `error`."
    )
    default_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds before a run without its own timeout ends `timeout`; unset: no limit.",
    )
    shutdown_grace: float = Field(
        10.0, ge=0, description="Seconds a stopping worker lets running runs finish before handing them back."
    )
    wait_fallback_seconds: float = Field(
        5.0,
        gt=0,
        description="How often a waiting or streaming request re-reads the database when no hint arrives "
        "(hints can be lost).",
    )

    # -- workers and background loops ---------------------------------------------------------------
    lease_renew_seconds: float | None = Field(
        None, gt=0, description="How often a worker renews its leases; unset: a third of `lease_seconds`."
    )
    recovery_seconds: float | None = Field(
        None,
        gt=0,
        description="How often a worker looks for runs whose lease expired; unset: half of `lease_seconds`, "
        "at most 5.",
    )
    poll_seconds: float = Field(
        1.0, gt=0, description="How often an idle worker polls for queued runs when no wake-up hint arrives."
    )
    claim_retry_seconds: SecondsList = Field(
        (0.002, 0.01, 0.05, 0.25),
        description="Pauses (comma-separated) before claiming again after a wake-up hint found nothing "
        "claimable (the run's thread may be held a moment longer).",
    )
    sweep_seconds: float = Field(
        60.0, gt=0, description="How often expired threads and store items are deleted."
    )
    cron_poll_seconds: float = Field(
        60.0, gt=0, description="Longest the cron scheduler sleeps without a hint (crons of other processes)."
    )

    # -- the HTTP API -----------------------------------------------------------------------------
    max_body_bytes: int = Field(
        10 * 2**20, gt=0, description="Request bodies larger than this are refused with 413 before parsing."
    )
    max_header_bytes: int = Field(
        32 * 1024, gt=0, description="Largest total size of a request's headers (431 beyond)."
    )
    max_json_depth: int = Field(
        64, ge=1, description="Deepest nesting of arrays and objects accepted in a JSON body (422 beyond)."
    )
    heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        description="Idle seconds after which an SSE stream sends `: heartbeat` and a wait or join a "
        "newline, so proxies do not time out a quiet run.",
    )
    default_on_disconnect: Literal["cancel", "continue"] = Field(
        "continue",
        description="What a streaming or waiting request does with its run when the client goes away, "
        "unless the request says (`on_disconnect`).",
    )
    max_wait_seconds: float | None = Field(
        None,
        gt=0,
        description="Longest a wait, join or stream request blocks before it answers; unset: no limit.",
    )
    docs: bool = Field(
        True, description="Serve `/docs` (Swagger UI, loaded from a CDN) beside `/openapi.json`."
    )
    ui: bool = Field(True, description="Serve the dashboard at `/ui`.")
    metrics_public: bool = Field(
        False, description="Serve `/metrics` without authentication (a scraper on a trusted network)."
    )
    metrics_port: int = Field(
        0,
        ge=0,
        lt=65536,
        description="A port for `runplane worker` to serve `/metrics` on (it has no API); 0: none.",
    )
    api_keys: str | None = Field(
        None,
        repr=False,
        description="`key1:alice,key2:bob`: API keys and the user each authenticates. Secret: never shown.",
    )
    api_keys_file: str | None = Field(
        None, description="A file of API keys: a JSON object `{key: user}`, or one `key user` pair per line."
    )
    cors_origins: str | None = Field(
        None,
        description="Browser origins allowed to call the API, comma-separated (`*`: any); unset: none "
        "(`runplane dev` on loopback: pages on localhost, 127.0.0.1 and [::1]).",
    )
    insecure_allow_no_auth: bool = Field(
        False,
        description="Listen beyond loopback without authentication (something in front must authenticate).",
    )

    # -- the HTTP server (uvicorn) ------------------------------------------------------------------
    http_header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to deliver a request's line and headers (slow clients).",
    )
    http_keepalive_timeout: int = Field(
        75,
        gt=0,
        description="Seconds an idle kept-alive connection stays open between requests "
        "(longer than the clients' own, so that they close first).",
    )
    http_max_connections: int = Field(
        1000, gt=0, description="Connections served at once; beyond it, new requests get 503."
    )
    http_parser: Literal["auto", "httptools", "h11"] = Field(
        "auto",
        description="The HTTP/1.1 parser: `auto` is httptools when installed "
        "(`pip install 'runplane[speed]'`), else h11.",
    )

    # -- PostgreSQL pool --------------------------------------------------------------------------
    pool_min_size: int | None = Field(
        None,
        ge=0,
        description="Connections the PostgreSQL pool keeps open; unset: the URL's `pool_min_size`, else 1.",
    )
    pool_max_size: int | None = Field(
        None,
        ge=1,
        description="Most connections of the PostgreSQL pool; unset: the URL's `pool_max_size`, else 10.",
    )
    pool_timeout: float | None = Field(
        None,
        gt=0,
        description="Seconds to wait for a pooled PostgreSQL connection; unset: the URL's `pool_timeout`, "
        "else 30.",
    )

    # -- webhooks ---------------------------------------------------------------------------------
    webhook_secret: str | None = Field(
        None,
        repr=False,
        description="HMAC key signing webhook deliveries (`X-Runplane-Signature`); unset: unsigned. Secret.",
    )
    webhook_allow_hosts: str | None = Field(
        None,
        description="Hosts and CIDRs webhooks may reach although private, loopback or link-local "
        "(comma-separated).",
    )
    webhook_allow_loopback: bool = Field(
        False, description="Let webhooks reach loopback addresses (`runplane dev` sets it)."
    )
    webhook_max_attempts: int = Field(
        8, ge=1, description="Attempts of one webhook delivery before it is marked failed."
    )
    webhook_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="Seconds a claimed delivery stays hidden; a process killed mid-POST is retried after it.",
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, description="Seconds one webhook POST may take.")
    webhook_concurrency: int = Field(16, ge=1, description="Webhook POSTs in flight at once per process.")
    webhook_retry_base_seconds: float = Field(
        1.0, gt=0, description="Backoff before a delivery's second attempt (doubling after)."
    )
    webhook_retry_max_seconds: float = Field(
        300.0, gt=0, description="Longest backoff between two attempts of a delivery."
    )
    webhook_max_redirects: int = Field(
        3, ge=0, description="Redirects a webhook POST follows (each checked)."
    )
    webhook_poll_seconds: float = Field(
        30.0, gt=0, description="Longest the webhook dispatcher sleeps without a hint."
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidInput(explain(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what is passed: the environment is read by `settings_from_env`, explicitly.
        return (init_settings,)

    # -- checks -----------------------------------------------------------------------------------

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        scheme = scheme_of(url)
        if scheme not in STORE_BACKENDS:
            raise ValueError(
                f"database URL scheme {scheme!r} is not supported; use sqlite:///path.db, "
                "postgresql://user@host/db or memory://"
            )
        return url

    @field_validator("redis_url")
    @classmethod
    def _known_bus(cls, url: str | None) -> str | None:
        if url is not None and url.partition(":")[0] not in BUS_BACKENDS:
            raise ValueError(f"redis URL {url!r} must start with redis:// or rediss://")
        return url

    @field_validator("port")
    @classmethod
    def _port_in_range(cls, port: int) -> int:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        return port

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.upper() not in LOG_LEVELS:
            raise ValueError(f"log level {level!r} must be one of {', '.join(LOG_LEVELS)}")
        return level.upper()

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _parsable_hosts(cls, hosts: str | None) -> str | None:
        try:
            AddressPolicy.parse(hosts)  # a malformed entry fails at start, not at the first webhook
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return hosts

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if (
            self.pool_min_size is not None
            and self.pool_max_size is not None
            and self.pool_min_size > self.pool_max_size
        ):
            raise ValueError(
                f"{ENV_PREFIX}POOL_MIN_SIZE={self.pool_min_size} exceeds "
                f"{ENV_PREFIX}POOL_MAX_SIZE={self.pool_max_size}"
            )
        return self

    # -- use --------------------------------------------------------------------------------------

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with every override that is not None applied (CLI flags), checked again.

        Raises:
            InvalidInput: an override is invalid or names no setting.
        """
        given = {name: value for name, value in overrides.items() if value is not None}
        unknown = sorted(set(given) - set(type(self).model_fields))
        if unknown:
            raise InvalidInput(f"unknown settings: {', '.join(unknown)}")
        return type(self)(**{**self.model_dump(), **given})


def variable(name: str) -> str:
    """The environment variable of a setting: `lease_seconds` -> `RUNPLANE_LEASE_SECONDS`."""
    return ENV_PREFIX + name.upper()


def redact(url: str) -> str:
    """The URL without its password, for logs and banners."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    credentials, _, rest = tail.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{head}://{user}:***@{rest}" if ":" in credentials else url


def explain(exc: ValidationError) -> str:
    """A pydantic error as one line per bad setting, each naming its variable."""
    return "; ".join(_explain_one(error) for error in exc.errors(include_url=False))


def _explain_one(error: ErrorDetails) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings names its variables itself
        return message
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r}"
    shown = f"{variable(name)}={error['input']!r}"
    if error["type"] == "bool_parsing":
        return f"{shown} is not a boolean; use one of {', '.join(BOOLEAN_WORDS)}"
    if error["type"] == "value_error":
        return f"{shown}: {message}"
    return f"{shown}: {name.replace('_', ' ')}: {message[:1].lower()}{message[1:]}"


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `RUNPLANE_<FIELD>` variables (e.g. `RUNPLANE_DATABASE_URL`, `RUNPLANE_PORT`), read
    by pydantic-settings from `environ` (`os.environ` when None); unset and empty variables keep
    their defaults.

    Raises:
        InvalidInput: a variable's value is invalid (the message names it).
    """
    source = EnvSettingsSource(Settings)
    environ = os.environ if environ is None else environ
    # Its own `env_vars` (lower-cased: names are case-insensitive), so tests pass a mapping and never
    # touch the process's environment.
    source.env_vars = {key.lower(): value for key, value in environ.items() if value != ""}
    try:
        values = source()
    except Exception as exc:  # pydantic-settings' SettingsError: a value it could not decode
        raise InvalidInput(str(exc)) from None
    return Settings(**values)
