"""Reading JSON bodies strictly and answering in the `ok`/`error` envelope."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


def ok(status: int = 200, **data: Any) -> web.Response:
    return web.json_response({"ok": True, **data}, status=status)


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object; malformed or oversized input is a 4xx, never a 500.

    Forms are accepted too (the cards page may post them): values stay strings.
    """
    if request.content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        form = await _read_form(request)
        return {k: v for k, v in form.items() if k != "csrf_token" and isinstance(v, str)}
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
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise BadRequest("The JSON body must be an object")
    return data


async def _read_form(request: web.Request) -> Any:
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("Request body too large") from None
    except ValueError:
        raise BadRequest("Malformed form body") from None
