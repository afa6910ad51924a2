"""`/store/*`: LangGraph's long-term store over HTTP, the same `BaseStore` the graphs get.

Shapes and answers follow LangGraph's server: a missing key is `200 null`; a namespace label that is
empty or holds a period is refused (422). With API keys each user's items live under their own
namespace root (`core.items.owner_root`), invisible to everyone else; custom auth's
`@auth.on.store` handlers rewrite namespaces and filter searches, as on LangGraph's server.
"""

from __future__ import annotations

from typing import Any, Literal

from starlette.responses import Response

from runplane.api import resource_schemas as rs
from runplane.api.render import json_response
from runplane.api.routing import Call, Endpoint, Reply
from runplane.core.items import Item, Namespace, owner_root

TAG = "Store"


def _root(call: Call) -> Namespace:
    """The caller's namespace root: their own with API keys; none when the store is shared."""
    return owner_root(call.owner) if call.settings.api_keys is not None else ()


def item_json(item: Item, *, search: bool = False) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "namespace": list(item.namespace),
        "key": item.key,
        "value": item.value,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }
    if search:
        rendered["score"] = item.score
    return rendered


async def put_item(call: Call) -> Response:
    body: rs.StorePut = call.body
    # `index` is false, a list of fields, or absent (`true` is refused by the wire model).
    index: Literal[False] | list[str] | None = body.index if not isinstance(body.index, bool) else False
    await call.manager.put_item(
        tuple(body.namespace), body.key, body.value, root=_root(call), index=index, ttl=body.ttl
    )
    return Response(status_code=204)


async def get_item(call: Call) -> Response:
    query: rs.StoreGetQuery = call.query
    namespace = tuple(query.namespace.split("."))
    item = await call.manager.get_item(namespace, query.key, root=_root(call), refresh_ttl=query.refresh_ttl)
    return json_response(item_json(item) if item is not None else None)


async def delete_item(call: Call) -> Response:
    body: rs.StoreDelete = call.body
    await call.manager.delete_item(tuple(body.namespace), body.key, root=_root(call))
    return Response(status_code=204)


async def search_items(call: Call) -> Response:
    body: rs.StoreSearch = call.body
    items = await call.manager.search_items(
        tuple(body.namespace_prefix or ()),
        root=_root(call),
        filter=body.filter,
        query=body.query,
        limit=body.limit,
        offset=body.offset,
        refresh_ttl=body.refresh_ttl,
    )
    return json_response({"items": [item_json(item, search=True) for item in items]})


async def list_namespaces(call: Call) -> Response:
    body: rs.StoreNamespaces = call.body
    namespaces = await call.manager.list_namespaces(
        root=_root(call),
        prefix=tuple(body.prefix) if body.prefix else None,
        suffix=tuple(body.suffix) if body.suffix else None,
        max_depth=body.max_depth,
        limit=body.limit,
        offset=body.offset,
    )
    return json_response({"namespaces": [list(namespace) for namespace in namespaces]})


_NO_CONTENT = {204: Reply("Done.")}
_ITEM = {"type": ["object", "null"], "description": "The item, or null when there is none."}

ENDPOINTS = (
    Endpoint("PUT", "/store/items", put_item, "Store or replace an item", TAG, body=rs.StorePut,
             replies=_NO_CONTENT),
    Endpoint("GET", "/store/items", get_item, "Get an item (null when missing)", TAG, query=rs.StoreGetQuery,
             replies={200: Reply("The item or null.", _ITEM)}),
    Endpoint("DELETE", "/store/items", delete_item, "Delete an item", TAG, body=rs.StoreDelete,
             replies=_NO_CONTENT),
    Endpoint("POST", "/store/items/search", search_items, "Search items under a namespace prefix", TAG,
             body=rs.StoreSearch, body_optional=True,
             replies={200: Reply("Matching items.", {"type": "object", "properties": {"items": {
                 "type": "array", "items": {"type": "object"}}}})}),
    Endpoint("POST", "/store/namespaces", list_namespaces, "List namespaces", TAG, body=rs.StoreNamespaces,
             body_optional=True,
             replies={200: Reply("Namespaces.", {"type": "object", "properties": {"namespaces": {
                 "type": "array", "items": {"type": "array", "items": {"type": "string"}}}}})}),
)  # fmt: skip
