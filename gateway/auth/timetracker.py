"""Read TimeTracker's own login cookies (Flask session, Flask-Login remember) for single sign-on."""

from __future__ import annotations

import hashlib
import hmac
import json
from base64 import b64decode
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from gateway.crypto import same_secret

# Flask's PERMANENT_SESSION_LIFETIME default; TimeTracker's cookies are not older than this.
SESSION_MAX_AGE = 31 * 24 * 3600


class _FlaskTaggedJSON:
    """The read half of Flask's TaggedJSONSerializer (flask/json/tag.py), without Flask."""

    def loads(self, value: str | bytes) -> Any:
        return self._untag(json.loads(value))

    def dumps(self, value: Any) -> str:  # itsdangerous probes it; the gateway never writes these
        return json.dumps(value, separators=(",", ":"))

    def _untag(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._untag(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == " t":
                return tuple(self._untag(v) for v in inner)
            if key == " b":
                return b64decode(inner)
            if key == " di":
                return {k.removesuffix("__"): self._untag(v) for k, v in inner.items()}
            if key in {" u", " m", " d"}:  # uuid, markup, http date: keep their text
                return inner
        return {k: self._untag(v) for k, v in value.items()}


class TimeTrackerCookies:
    """Verifies TimeTracker's cookies with its Flask SECRET_KEY; yields a user id or None."""

    def __init__(self, secret_key: str, max_age: int = SESSION_MAX_AGE) -> None:
        self._secret = secret_key.encode("latin1")
        self._max_age = max_age
        self._serializer = URLSafeTimedSerializer(
            secret_key,
            salt="cookie-session",
            serializer=_FlaskTaggedJSON(),
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
        )

    def user_id_from_session(self, cookie: str | None) -> int | None:
        if not cookie or not cookie.isascii():  # signed cookies are ASCII; others are junk
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self._max_age)
        except (BadSignature, ValueError, TypeError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        return _as_id(data.get("_user_id"))

    def user_id_from_remember(self, cookie: str | None) -> int | None:
        """Flask-Login's `remember_token`: `<user id>|<hex HMAC-SHA512 of it>`."""
        if not cookie or "|" not in cookie or not cookie.isascii():
            return None
        payload, digest = cookie.rsplit("|", 1)
        expected = hmac.new(self._secret, payload.encode(), hashlib.sha512).hexdigest()
        if not same_secret(expected, digest):
            return None
        return _as_id(payload)


def _as_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        return int(value) or None
    return None
