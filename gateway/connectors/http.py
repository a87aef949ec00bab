"""Outbound HTTP through the app's one ClientSession: 10 s timeout, bounded retries, no raising."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.connectors.retry import parse_retry_after
from gateway.logs import redact
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 16 * 1024 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})

# (status, headers, now) -> seconds to wait before a retry, or None for "not a rate limit".
RetryPolicy = Callable[[int, Mapping[str, str], float], float | None]
Sleep = Callable[[float], Awaitable[None]]


def retry_after_seconds(status: int, headers: Mapping[str, str], now: float) -> float | None:
    """Retry-After as seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = headers.get("Retry-After")
    return None if value is None else parse_retry_after(value, now)


@dataclass
class HttpResult:
    """A provider's answer or the reason there is none; never an exception."""

    status: int | None
    data: Any = None
    text: str = ""
    headers: CIMultiDictProxy[str] = field(default_factory=lambda: CIMultiDictProxy(CIMultiDict()))
    error: str | None = None
    malformed: bool = False  # said it was JSON, but was not: counted apart in the metrics

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


class HttpClient:
    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        metrics: Metrics | None = None,
        *,
        max_retries: int = 2,
        max_wait: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        # Built with the app, the ClientSession attached when the app starts (`attach`): one
        # session per app, opened inside the running loop.
        self._session = session
        self.metrics = metrics
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout  # seconds per attempt, the whole answer read included

    def attach(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient used before the app started")
        return self._session

    async def request(
        self,
        service: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: Any = None,
        retry_policy: RetryPolicy = retry_after_seconds,
        retry_unsafe: bool = False,
        retries: int | None = None,
    ) -> HttpResult:
        """One logical call with up to `max_retries` retries on 429/5xx and network errors.

        Waits what the provider asks (Retry-After, rate-limit reset) but never longer than
        `max_wait`; a longer wait is returned as an error so the caller records it and moves on.
        Non-idempotent methods are retried only on answers that say the call was not done.
        `retries` overrides `max_retries` for callers that retry later themselves (0: one try).
        """
        max_retries = self.max_retries if retries is None else max(retries, 0)
        method = method.upper()
        may_retry_network = method in IDEMPOTENT or retry_unsafe
        attempt = 0
        while True:
            attempt += 1
            result = await self._once(method, url, headers, params, json_body, data)
            wait: float | None = None
            if result.status is None:
                if not may_retry_network:
                    break
                wait = min(2.0 ** (attempt - 1), self.max_wait)
            else:
                asked = retry_policy(result.status, result.headers, self.clock())
                if asked is not None:
                    if asked > self.max_wait:
                        result.error = f"rate limited by {service}: retry after {int(asked)} s"
                        break
                    wait = asked
                elif result.status in RETRY_STATUSES:
                    wait = min(2.0 ** (attempt - 1), self.max_wait)
            if wait is None or attempt > max_retries:
                break
            log.info("%s %s: retrying in %.1f s (attempt %d)", service, method, wait, attempt + 1)
            await self.sleep(wait)
        if self.metrics is not None:
            if result.ok:
                outcome = "invalid_answer" if result.malformed else "ok"
            else:
                outcome = "network_error" if result.status is None else "http_error"
            self.metrics.outbound_requests.labels(service, outcome).inc()
        if result.error is None and not result.ok:
            result.error = _describe_failure(service, result)
        return result

    async def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        json_body: Any,
        data: Any,
    ) -> HttpResult:
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                params=params,
                json=json_body,
                data=data,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                raw = await _read_capped(response, MAX_BODY_BYTES)
                text = raw.decode(response.charset or "utf-8", errors="replace")
                payload: Any = None
                malformed = False
                if text and "json" in (response.content_type or ""):
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload, malformed = None, True
                return HttpResult(
                    status=response.status,
                    data=payload,
                    text=text,
                    headers=response.headers,
                    malformed=malformed,
                )
        except TimeoutError:
            return HttpResult(status=None, error=f"timed out after {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            # The exception text can carry the URL: never a secret (secrets travel in headers).
            return HttpResult(status=None, error=f"network error: {redact(type(exc).__name__)}")


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, but never more than `limit` bytes (a runaway answer is cut, not buffered)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) >= limit:
            return bytes(body[:limit])
    return bytes(body)


def _describe_failure(service: str, result: HttpResult) -> str:
    detail = ""
    if isinstance(result.data, dict):
        for key in ("message", "error_description", "error"):
            value = result.data.get(key)
            if isinstance(value, str) and value:
                detail = value
                break
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                detail = value["message"]
                break
    base = f"{service} answered HTTP {result.status}"
    return redact(f"{base}: {detail[:300]}") if detail else base
