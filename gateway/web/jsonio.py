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


def _without_nul(data: dict[str, Any]) -> dict[str, Any]:
    """Refuse NUL characters: PostgreSQL cannot store them in text or JSONB."""
    for key, value in data.items():
        if "\x00" in key or _has_nul(value):
            raise BadRequest(f"{key!r} contains a NUL character", field=key.replace("\x00", ""))
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


async def read_form(request: web.Request) -> Any:
    """The form body; malformed or oversized forms are a 4xx."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("Request body too large") from None
    except ValueError:
        raise BadRequest("Malformed form body") from None
