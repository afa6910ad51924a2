"""Who is calling: authentication as an ASGI middleware that names the caller in the scope
(`runplane.owner`, the identity every store call is scoped by, and `runplane.user`).

Two schemes:

- API keys: `x-api-key: <key>` (what `langgraph_sdk.get_client(api_key=...)` sends) or
  `Authorization: Bearer <key>`, each key mapped to a user identity; compared in constant time.
- LangGraph custom auth: a `langgraph_sdk.Auth` object, loaded from the `auth.path` of a
  langgraph.json as LangGraph's server does. Its `@auth.authenticate` handler names the user; its
  `@auth.on` handlers authorize each call (`api.authz`).

Without either, everyone is the single user `""` (the default on loopback).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from langgraph_sdk.auth import Auth
from langgraph_sdk.auth.exceptions import HTTPException as AuthHTTPException
from langgraph_sdk.auth.types import BaseUser
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runplane.api.errors import error_response
from runplane.api.routing import OWNER_SCOPE_KEY
from runplane.core.errors import InvalidInput

logger = logging.getLogger(__name__)

#: The ASGI scope key holding the authenticated user (an object with LangGraph's `BaseUser` shape).
USER_SCOPE_KEY = "runplane.user"
#: Routes anyone may call: health, server info and the API description.
PUBLIC_PATHS = frozenset({"/ok", "/info", "/openapi.json", "/docs"})

# -- users ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthUser:
    """An authenticated caller, shaped like LangGraph's `BaseUser` (attributes and dict access)."""

    identity: str
    permissions: tuple[str, ...] = ()
    display_name: str = ""
    is_authenticated: bool = True
    #: Anything else the authentication handler returned, readable as `user["key"]`.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def _fields(self) -> dict[str, Any]:
        return {
            **self.extra,
            "identity": self.identity,
            "permissions": list(self.permissions),
            "display_name": self.display_name or self.identity,
            "is_authenticated": self.is_authenticated,
        }

    def __getitem__(self, key: str) -> Any:
        return self._fields()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._fields()

    def __iter__(self) -> Any:
        return iter(self._fields())


ANONYMOUS = AuthUser("", is_authenticated=False)


def as_user(result: Any) -> Any:
    """The user an authentication handler returned (a string, a mapping or a user object), with
    LangGraph's `BaseUser` shape.

    Raises:
        TypeError: nothing usable as an identity.
    """
    if isinstance(result, str):
        return AuthUser(result)
    if isinstance(result, Mapping):
        identity = result.get("identity")
        if not isinstance(identity, str):
            raise TypeError("the authentication handler returned a mapping without a string `identity`")
        return AuthUser(
            identity,
            permissions=tuple(result.get("permissions") or ()),
            display_name=str(result.get("display_name") or identity),
            is_authenticated=bool(result.get("is_authenticated", True)),
            extra=dict(result),
        )
    if isinstance(result, BaseUser):
        return result  # the application's own user class, kept for its handlers
    identity = getattr(result, "identity", None)
    if isinstance(identity, str):
        return AuthUser(
            identity,
            permissions=tuple(getattr(result, "permissions", ()) or ()),
            display_name=str(getattr(result, "display_name", identity)),
        )
    raise TypeError(f"the authentication handler returned a {type(result).__name__}, not a user")


class AuthFailure(Exception):
    """A request that may not proceed: answered with `status` and `detail`, nothing else."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


#: Authenticates one request: returns the user and the `receive` to use from then on (a body the
#: authenticator had to read is replayed through it).
Authenticate = Callable[[Scope, Receive], Awaitable[tuple[Any, Receive]]]

# -- API keys ---------------------------------------------------------------------------------------

_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what fits in a header


def parse_api_keys(text: str) -> dict[str, str]:
    """`"key1:alice,key2:bob"` as `{key: identity}` (the form of `RUNPLANE_API_KEYS`).

    Raises:
        InvalidInput: an entry is not `key:user`, or a key is repeated.
    """
    pairs = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, user = entry.rpartition(":")
        if not sep:
            raise InvalidInput("API keys must be given as key:user pairs separated by commas")
        pairs.append((key.strip(), user.strip()))
    return _checked_keys(pairs)


def load_api_keys_file(path: str | Path) -> dict[str, str]:
    """API keys from a file: a JSON object `{key: user}`, or one `key user` pair per line
    (blank lines and `#` comments skipped).

    Raises:
        InvalidInput: the file cannot be read or is malformed.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read the API keys file {str(path)!r}: {exc.strerror}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidInput(f"the API keys file {str(path)!r} is not valid JSON") from None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise InvalidInput(f"the API keys file {str(path)!r} must map key strings to user strings")
        return _checked_keys(list(data.items()))
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            # The line is not echoed: it holds a secret.
            raise InvalidInput(f"line {number} of {str(path)!r} is not `key user`")
        pairs.append((parts[0], parts[1]))
    return _checked_keys(pairs)


def _checked_keys(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for key, user in pairs:
        if not _KEY_CHARS.match(key) or not user:
            raise InvalidInput("every API key needs a user, and keys are printable ASCII without spaces")
        if key in keys:
            raise InvalidInput(f"an API key is given twice (for {keys[key]!r} and {user!r})")
        keys[key] = user
    if not keys:
        raise InvalidInput("no API keys given")
    return keys


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def presented_key(scope: Scope) -> str | None:
    """The key a request presents: `x-api-key`, else an `Authorization: Bearer` token."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    scheme, _, token = (_header(scope, b"authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class ApiKeyAuth:
    """Authenticates requests by API key. Only digests are kept, and every digest is compared on
    every request, so neither the comparison nor the position of a match leaks through timing."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        if not keys:
            raise InvalidInput("no API keys given")
        self._digests = [(hashlib.sha256(key.encode()).digest(), user) for key, user in keys.items()]

    def identify(self, key: str | None) -> str | None:
        """The user `key` belongs to, or None."""
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for known, user in self._digests:
            if hmac.compare_digest(known, digest):
                found = user
        return found

    async def __call__(self, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        key = presented_key(scope)
        if key is None:
            raise AuthFailure(
                401,
                "Missing API key: send it in the x-api-key header (or as Authorization: Bearer <key>)",
                {"WWW-Authenticate": "Bearer"},
            )
        user = self.identify(key)
        if user is None:
            raise AuthFailure(401, "Invalid API key", {"WWW-Authenticate": "Bearer"})
        return AuthUser(user), receive


# -- LangGraph custom auth: authentication ----------------------------------------------------------

#: Parameters an `@auth.authenticate` handler may declare, as on LangGraph's server.
AUTHENTICATE_PARAMS = frozenset(
    {"request", "body", "path", "method", "path_params", "query_params", "headers", "authorization", "scope"}
)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise AuthFailure(413, f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands out `body` once, then defers to `receive` (for the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class CustomAuthenticator:
    """Runs a `langgraph_sdk.Auth`'s `@auth.authenticate` handler, passing the arguments it names.

    Args:
        auth: the application's `Auth` object.
        path_params: the path parameters of a request path (the route is not matched yet).
        max_body_bytes: largest body read for a handler that asks for `body` or `request`.

    Raises:
        ValueError: the handler asks for an argument LangGraph does not provide.
    """

    def __init__(
        self,
        auth: Auth,
        *,
        path_params: Callable[[str], dict[str, str]],
        max_body_bytes: int,
    ) -> None:
        self.handler = auth._authenticate_handler
        self.path_params = path_params
        self.max_body_bytes = max_body_bytes
        self.params: frozenset[str] = frozenset()
        if self.handler is not None:
            self.params = frozenset(inspect.signature(self.handler).parameters)
            unknown = self.params - AUTHENTICATE_PARAMS
            if unknown:
                raise ValueError(
                    f"@auth.authenticate handler {getattr(self.handler, '__name__', '?')!r} takes "
                    f"{sorted(unknown)}; allowed parameters are {sorted(AUTHENTICATE_PARAMS)}"
                )

    async def __call__(self, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        if self.handler is None:
            return ANONYMOUS, receive
        if self.params & {"body", "request"} and scope["type"] == "http":
            raw = await _read_body(receive, self.max_body_bytes)
            receive = _replaying(raw, receive)
        else:
            raw = b""
        path = scope["path"]
        available: dict[str, Callable[[], Any]] = {
            "scope": lambda: scope,
            "request": lambda: Request(scope, receive),
            "body": lambda: _json_or_none(raw),
            "path": lambda: path,
            "method": lambda: scope.get("method", "GET"),
            "path_params": lambda: self.path_params(path),
            "query_params": lambda: QueryParams(scope.get("query_string", b"")),
            # Raw header names and values (bytes), as LangGraph's server passes them.
            "headers": lambda: dict(scope.get("headers", ())),
            "authorization": lambda: _header(scope, b"authorization"),
        }
        kwargs = {name: available[name]() for name in self.params}
        try:
            result = await self.handler(**kwargs)
        except (AuthHTTPException, StarletteHTTPException) as exc:
            raise AuthFailure(exc.status_code, str(exc.detail), exc.headers) from None
        except Exception as exc:
            # Only the type: the message may quote the credentials the handler choked on.
            logger.warning(
                "@auth.authenticate handler raised %s; answering 401",
                type(exc).__name__,
                extra={"action": "authenticate"},
            )
            raise AuthFailure(401, "Unauthorized") from None
        try:
            return as_user(result), receive
        except TypeError as exc:
            logger.error("%s", exc, extra={"action": "authenticate"})
            raise AuthFailure(500, "Internal Server Error") from None


def _json_or_none(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def path_params_of(paths: Iterable[str]) -> Callable[[str], dict[str, str]]:
    """A function giving the parameters of the first route template (fewest parameters first, so
    `/threads/search` is not read as a thread id) that a request path matches."""
    templates = sorted(set(paths), key=lambda p: (p.count("{"), p))
    patterns = [re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", p) + "$") for p in templates]

    def params(path: str) -> dict[str, str]:
        for pattern in patterns:
            match = pattern.match(path)
            if match:
                return match.groupdict()
        return {}

    return params


class AuthMiddleware:
    """Authenticates every request but those to `public_paths`, and names the caller in the scope.

    A request that fails gets a JSON error (401 unless the authenticator says otherwise) and never
    reaches the application.
    """

    def __init__(
        self, app: ASGIApp, *, authenticate: Authenticate, public_paths: frozenset[str] = PUBLIC_PATHS
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        root = str(scope.get("root_path", ""))
        path = str(scope["path"])
        route_path = path[len(root) :] if root and path.startswith(root) else path
        if route_path in self.public_paths:
            await self.app(scope, receive, send)
            return
        try:
            user, receive = await self.authenticate(scope, receive)
        except AuthFailure as failure:
            response = error_response(failure.status, failure.detail, headers=failure.headers or None)
            await response(scope, receive, send)
            return
        scope[OWNER_SCOPE_KEY] = user.identity
        scope[USER_SCOPE_KEY] = user
        await self.app(scope, receive, send)
