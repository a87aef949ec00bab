"""Reading JSON bodies strictly and answering in the `ok`/`error` envelope."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


def ok(status: int = 200, **data: Any) -> web.Response:
    return web.json_response({"ok": True, **data}, status=status)


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object; malformed or oversized input is a 4xx, never a 500.

    Forms are accepted too (the cards page may post them): values stay strings.
    """
    if request.content_type in FORM_TYPES:
        form = await read_form(request)
        return _without_nul(
            {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}
        )
    if request.content_type not in {"application/json", "application/octet-stream", ""} and not (
        request.content_type.endswith("+json")
    ):
        raise UnsupportedMediaType("Send a JSON body (Content-Type: application/json)")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("Request body too large") from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("A JSON object body is required")
    try:
        data = orjson.loads(raw)  # strict UTF-8 and depth-limited: no RecursionError
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise BadRequest("The JSON body must be an object")
    return _without_nul(data)


# No request body of ours nests deeper than a few levels; orjson accepts 1,024.
MAX_DEPTH = 32


def _without_nul(data: dict[str, Any]) -> dict[str, Any]:
    """Refuse NUL characters (PostgreSQL cannot store them in text or JSONB) and deep nesting."""
    for key, value in data.items():
        field = key.replace("\x00", "")
        if "\x00" in key:
            raise BadRequest(f"{field!r} contains a NUL character", field=field)
        problem = _scan(value)
        if problem is not None:
            raise BadRequest(f"{field!r} {problem}", field=field)
    return data


def _scan(value: Any) -> str | None:
    """What is wrong with a JSON value (a NUL, too deep), or None; iterative, so no
    RecursionError whatever the depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character"
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep"
            if isinstance(item, dict):
                for k, v in item.items():
                    if "\x00" in k:
                        return "contains a NUL character"
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


async def read_form(request: web.Request) -> Any:
    """The form body; malformed or oversized forms are a 4xx."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("Request body too large") from None
    except ValueError:
        raise BadRequest("Malformed form body") from None
