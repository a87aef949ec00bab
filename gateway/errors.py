"""A small exception hierarchy carrying HTTP meaning; one middleware turns it into answers."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """Invalid configuration; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class GatewayError(Exception):
    """An expected failure with an HTTP status and a message safe to show a user."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class Conflict(GatewayError):
    status = 409


class PayloadTooLarge(GatewayError):
    status = 413


class UnsupportedMediaType(GatewayError):
    status = 415


class ServiceUnavailable(GatewayError):
    """Something the gateway needs (the database) is unavailable: try again later."""

    status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class NotConfigured(Conflict):
    """A connector operation on a missing or inactive integration (DESIGN §7)."""

    MESSAGE = "Integration not configured"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
