"""One frozen `Settings`, from `RUNPLANE_*` environment variables, overridden by CLI flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from runplane.core.errors import InvalidInput
from runplane.core.webhooks import AddressPolicy
from runplane.events import BACKENDS as BUS_BACKENDS
from runplane.stores import BACKENDS as STORE_BACKENDS
from runplane.stores import DEFAULT_DATABASE_URL, scheme_of

ENV_PREFIX = "RUNPLANE_"
#: LangGraph's dev server takes 2024; it is often busy (and is on our own machines), so we don't.
DEFAULT_PORT = 8123


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a runplane process is configured with."""

    database_url: str = DEFAULT_DATABASE_URL
    #: None: in-process event bus (one process). `redis://...` to share streams across processes.
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: Runs executed at once by this process's in-process workers (0: API only).
    workers: int = 8
    #: A langgraph.json; None uses ./langgraph.json when present, else the demo graphs.
    config: str | None = None
    lease_seconds: float = 30.0
    max_attempts: int = 3
    #: Seconds before a run without its own timeout ends `timeout` (None: no limit).
    default_timeout: float | None = None
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    #: `text` (human-readable, the default) or `json` (one object per line, with the run's ids).
    log_format: str = "text"
    #: Serve `/metrics` without authentication (a scraper on a trusted network).
    metrics_public: bool = False
    #: A port for `runplane worker` to serve `/metrics` on (worker processes have no API); 0: none.
    metrics_port: int = 0
    max_body_bytes: int = 10 * 2**20
    #: `key1:alice,key2:bob`: API keys and the user each one authenticates (secret: never shown).
    api_keys: str | None = dataclasses.field(default=None, repr=False)
    #: A file of API keys: a JSON object `{key: user}`, or one `key user` pair per line.
    api_keys_file: str | None = None
    #: Browser origins allowed to call the API (CORS), comma-separated; none by default (`dev` on
    #: loopback: pages on any port of localhost, 127.0.0.1 and [::1]).
    cors_origins: str | None = None
    #: Listen beyond loopback without authentication (something in front of runplane must do it).
    insecure_allow_no_auth: bool = False
    #: HMAC key signing webhook deliveries (`X-Runplane-Signature`); unsigned when unset (secret).
    webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    #: Hosts and CIDRs webhooks may reach although private, loopback or link-local (comma-separated).
    webhook_allow_hosts: str | None = None
    #: Let webhooks reach loopback addresses (`runplane dev` sets it).
    webhook_allow_loopback: bool = False
    #: Attempts of one webhook delivery before it is marked failed.
    webhook_max_attempts: int = 8
    #: Seconds a claimed delivery stays hidden; a process killed mid-POST is retried after it.
    webhook_lease_seconds: float = 60.0

    def validate(self) -> Settings:
        """Check the settings; raise `InvalidInput` with a message a person can act on."""
        scheme = scheme_of(self.database_url)
        if scheme not in STORE_BACKENDS:
            raise InvalidInput(
                f"database URL scheme {scheme!r} is not supported; use sqlite:///path.db, "
                "postgresql://user@host/db or memory://"
            )
        if self.redis_url is not None and self.redis_url.partition(":")[0] not in BUS_BACKENDS:
            raise InvalidInput(f"redis URL {self.redis_url!r} must start with redis:// or rediss://")
        if self.log_format not in ("text", "json"):
            raise InvalidInput(f"log format {self.log_format!r} must be text or json")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"port {self.port} is out of range")
        if self.workers < 0:
            raise InvalidInput("workers must be >= 0")
        if self.lease_seconds <= 0 or self.max_attempts < 1:
            raise InvalidInput("lease_seconds must be > 0 and max_attempts >= 1")
        if self.webhook_max_attempts < 1 or self.webhook_lease_seconds <= 0:
            raise InvalidInput("webhook_max_attempts must be >= 1 and webhook_lease_seconds > 0")
        AddressPolicy.parse(self.webhook_allow_hosts)  # a malformed entry fails at start
        return self

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with every override that is not None applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None}).validate()


#: The words a boolean variable may take; any other is refused (a typo must not silently mean False).
_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _convert(raw: str, default: Any, name: str) -> Any:
    kind = type(default) if default is not None else (float if name == "default_timeout" else str)
    try:
        if kind is bool:
            return _BOOLEANS[raw.strip().lower()]
        return kind(raw)
    except KeyError:
        raise InvalidInput(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean; use one of {', '.join(_BOOLEANS)}"
        ) from None
    except ValueError:
        raise InvalidInput(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from None


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `RUNPLANE_<FIELD>` variables (e.g. `RUNPLANE_DATABASE_URL`, `RUNPLANE_PORT`)."""
    environ = os.environ if environ is None else environ
    base = Settings()
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = environ.get(ENV_PREFIX + field.name.upper())
        if raw is not None and raw != "":
            values[field.name] = _convert(raw, getattr(base, field.name), field.name)
    return replace(base, **values).validate()
