"""Wire pieces of thread lifecycle that `api/schemas.py` uses: a thread's `ttl` and the
`extract` of a thread search (LangGraph's path syntax, `values.messages[-1].content`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

#: Longest TTL accepted: ten years, in minutes (beyond that a TTL means nothing).
MAX_TTL_MINUTES = 10 * 366 * 24 * 60.0
#: LangGraph's limit on extraction paths per search.
MAX_EXTRACT_PATHS = 10
EXTRACTABLE_COLUMNS = frozenset({"values", "metadata", "config", "interrupts"})
_THREAD_FIELDS = frozenset(
    {"thread_id", "created_at", "updated_at", "state_updated_at", "metadata", "config", "status", "values",
     "interrupts", "error"}
)  # fmt: skip
_ALIAS = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SPLIT = re.compile(r"\.|\[")


def _number(value: Any) -> Any:
    # Strict mode refuses an int for a float; JSON has one number type.
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Minutes = Annotated[
    float,
    BeforeValidator(_number),
    Field(ge=0, le=MAX_TTL_MINUTES),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_TTL_MINUTES}),
]


class TtlBody(BaseModel):
    """A thread's TTL in minutes (the SDK turns `ttl=60` into `{"ttl": 60, "strategy": "delete"}`),
    counted from the thread's last update."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    ttl: Minutes
    strategy: Literal["delete"] = "delete"


def _ttl_object(value: Any) -> Any:
    # The SDKs send {"ttl": minutes, "strategy": "delete"}; a bare number of minutes is taken too.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"ttl": value}
    return value


_MINUTES_SCHEMA = {"type": "number", "minimum": 0, "maximum": MAX_TTL_MINUTES}
TtlField = Annotated[
    TtlBody,
    BeforeValidator(_ttl_object),
    WithJsonSchema(
        {
            "anyOf": [
                _MINUTES_SCHEMA,
                {
                    "type": "object",
                    "properties": {
                        "ttl": _MINUTES_SCHEMA,
                        "strategy": {"enum": ["delete"], "default": "delete"},
                    },
                    "required": ["ttl"],
                },
            ],
            "description": "Minutes after the thread's last update when it is deleted (strategy `delete`).",
        }
    ),
]


def check_extract(extract: dict[str, str]) -> dict[str, str]:
    """LangGraph's rules for `extract`: at most 10 aliases, identifiers, not a thread field, each
    path rooted at values, metadata, config or interrupts."""
    if len(extract) > MAX_EXTRACT_PATHS:
        raise ValueError(f"Maximum of {MAX_EXTRACT_PATHS} extract paths allowed, got {len(extract)}")
    reserved = sorted(extract.keys() & _THREAD_FIELDS)
    if reserved:
        raise ValueError(f"Extract keys cannot use reserved field names: {reserved}")
    for alias, path in extract.items():
        if not _ALIAS.match(alias):
            raise ValueError(
                f"Extract key '{alias}' must be a valid identifier (letters, digits, underscores)"
            )
        if not path or _SPLIT.split(path)[0] not in EXTRACTABLE_COLUMNS:
            raise ValueError(
                f"Extract path '{path}' must start with one of: {', '.join(sorted(EXTRACTABLE_COLUMNS))}"
            )
    return extract


Extract = Annotated[
    dict[str, Annotated[str, Field(max_length=1000)]],
    AfterValidator(check_extract),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_EXTRACT_PATHS,
            "propertyNames": {"pattern": _ALIAS.pattern, "not": {"enum": sorted(_THREAD_FIELDS)}},
            "additionalProperties": {
                "type": "string",
                "maxLength": 1000,
                "pattern": "^(values|metadata|config|interrupts)([.\\[].*)?$",
            },
            "description": "Aliases to paths (`values.messages[-1].content`); answered in `extracted`.",
        }
    ),
]


def extract_path_value(data: dict[str, Any], path: str) -> Any:
    """The value at `path` in a rendered thread; None when the path does not resolve."""
    parts = _SPLIT.split(path)
    current: Any = data.get(parts[0]) if parts[0] in EXTRACTABLE_COLUMNS else None
    for part in parts[1:]:
        if current is None:
            return None
        if not part:
            continue
        if part.endswith("]"):
            try:
                index = int(part[:-1])
            except ValueError:
                return None
            if not isinstance(current, list) or not -len(current) <= index < len(current):
                return None
            current = current[index]
        elif isinstance(current, dict):
            current = current.get(part)
        else:
            return None
    return current


def extracted(thread: dict[str, Any], extract: dict[str, str] | None) -> dict[str, Any] | None:
    return {alias: extract_path_value(thread, path) for alias, path in extract.items()} if extract else None
