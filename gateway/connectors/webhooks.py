"""One inbound webhook pipeline: capped body, verify, parse, de-duplicate, route, count, answer."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.connectors.base import ConnectionFacts
from gateway.crypto import SecretBox, SecretError
from gateway.db.database import Database
from gateway.db.models import WebhookDelivery
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, Unauthorized
from gateway.metrics import Metrics
from gateway.timeutil import utcnow_naive

log = logging.getLogger(__name__)

OFFLOAD_HMAC_BYTES = 1024 * 1024  # above this much HMAC work, verification leaves the loop
SECRET_CACHE_SIZE = 256
DELIVERY_KEY_MAX = 100  # gateway_webhook_deliveries.delivery_id
# GitHub redelivers for days at most, Slack for minutes: two weeks is long past both.
DELIVERY_RETENTION = timedelta(days=14)


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: HTTP status, JSON body, and the outcome the pipeline counts."""

    status: int
    body: Mapping[str, Any]
    outcome: str  # processed, ignored, duplicate, ping, ...
    # False when the answer belongs to none of the verified integrations (e.g. a Slack user
    # linked to nobody, in an app several users share): no connection fact is written for it.
    attributed: bool = True


DUPLICATE = Answer(200, {"ok": True, "duplicate": True}, "duplicate")


@dataclass(frozen=True)
class Candidate:
    """An active integration a delivery may be signed for, with its stored secret (ciphertext)."""

    id: int
    user_id: int
    config: Mapping[str, Any]
    stored_secret: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Delivery:
    """One verified delivery on its way through a handler."""

    candidate: Candidate
    event: Any  # the receiver's parsed event
    key: str | None  # de-duplication key, None when the provider sent no id
    session: AsyncSession | None = None  # the transaction the handler writes in
    conn: Any = None  # or an autocommit driver connection, when the handler claims itself
    prepared: Any = None  # what receiver.prepare() read before any connection was taken
    duplicate: bool = False  # set by a handler that found its claim taken
    answer: dict[str, Any] = field(default_factory=dict)
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


Handler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Routed:
    """A delivery that has work to do: the integration, the handler and how to run it."""

    candidate: Candidate
    handler: Handler
    key: str | None
    # The handler runs on the fast path's autocommit connection (Delivery.conn) and records
    # the key, if any, in its own single write (or only reads, e.g. Slack's /tt status).
    claims_itself: bool = False
    # False: the handler writes nothing itself (it only schedules after-commit work, e.g. a
    # Slack command run by the timer service): no transaction is opened for it.
    writes: bool = True


class Receiver(Protocol):
    """What a connector gives the pipeline; the logic lives in its sans-I/O core."""

    slug: str  # metrics label and gateway_webhook_deliveries.provider ("github", "slack")
    max_body: int
    facts: ConnectionFacts

    @property
    def autocommit_fast_path(self) -> bool: ...

    async def prepare(self) -> Any:
        """Reads a handler may need, done before the pipeline holds a connection (a request
        never waits for a second pooled connection while it holds one)."""

    def precheck(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Any:
        """Cheap refusals before the body is read; returns a hint for `candidates`."""

    async def candidates(self, hint: Any, conn: Any) -> Sequence[Candidate]: ...

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> bool: ...

    def parse(self, headers: Mapping[str, str], body: bytes) -> Any: ...

    async def route(self, event: Any, verified: Sequence[Candidate]) -> Routed | Answer: ...

    def answer(self, delivery: Delivery) -> Answer: ...


class DeliveryLog:
    """gateway_webhook_deliveries: a (provider, key) is handled once."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self, session: AsyncSession, provider: str, key: str, integration_id: int
    ) -> bool:
        """Record the key in the caller's transaction; False when it was recorded before.

        A concurrent insert of the same key makes the caller's commit fail instead, which the
        pipeline answers as a duplicate too.
        """
        statement = (
            self.db.insert(WebhookDelivery)
            .values(
                provider=provider,
                delivery_id=key,
                integration_id=integration_id,
                received_at=utcnow_naive(),
            )
            .on_conflict_do_nothing(index_elements=["provider", "delivery_id"])
        )
        result = await session.execute(statement)
        return bool(result.rowcount)

    async def prune(self, older_than: timedelta = DELIVERY_RETENTION) -> int:
        """Forget keys (of every provider) long after any redelivery could come."""
        cutoff = utcnow_naive() - older_than
        async with self.db.write_transaction() as session:
            result = await session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.received_at < cutoff)
            )
            await session.commit()
        return int(result.rowcount or 0)


def delivery_key(delivery_id: str | None, integration_id: int) -> str | None:
    """What the deliveries table records: a redelivery is per integration."""
    if not delivery_id:
        return None
    suffix = f":{integration_id}"
    return delivery_id[: DELIVERY_KEY_MAX - len(suffix)] + suffix


class WebhookPipeline:
    """Shared by every signed receiver (GitHub, Slack)."""

    def __init__(
        self,
        db: Database,
        secrets: SecretBox,
        metrics: Metrics,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.secrets = secrets
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.deliveries = DeliveryLog(db)
        self._plain: dict[str, str] = {}

    async def handle(self, request: web.Request, receiver: Receiver) -> web.Response:
        counter = self.metrics.webhook_deliveries
        try:
            answer, integration_id = await self._handle(request, receiver)
        except GatewayError as exc:
            counter.labels(receiver.slug, "rejected" if exc.status == 401 else "invalid").inc()
            raise
        counter.labels(receiver.slug, answer.outcome).inc()
        if integration_id is not None:
            try:
                await receiver.facts.record_event(integration_id, answer.outcome)
            except Exception:  # a fact is informational: never fail a handled delivery for it
                log.warning("%s: could not record the last event", receiver.slug)
        return web.json_response(dict(answer.body), status=answer.status)

    async def _handle(self, request: web.Request, receiver: Receiver) -> tuple[Answer, int | None]:
        headers = request.headers
        hint = receiver.precheck(headers, request.query)
        body = await read_body(request, receiver.max_body)
        if receiver.autocommit_fast_path:
            prepared = await receiver.prepare()
            # One pooled connection in autocommit for the candidate read and, when the
            # handler claims the delivery in its own single write, for that write too.
            async with self.db.driver_connection() as conn:
                verified, event = await self._verify(receiver, hint, headers, body, conn)
                routed = await receiver.route(event, verified)
                if isinstance(routed, Answer):
                    return routed, verified[0].id if routed.attributed else None
                if routed.claims_itself:
                    delivery = Delivery(
                        routed.candidate, event, routed.key, conn=conn, prepared=prepared
                    )
                    await routed.handler(delivery)
                    if delivery.duplicate:
                        return DUPLICATE, routed.candidate.id
                    return await self._finish(receiver, delivery), routed.candidate.id
            # Released before the session below: a request never holds two connections.
        else:
            verified, event = await self._verify(receiver, hint, headers, body, None)
            routed = await receiver.route(event, verified)
            if isinstance(routed, Answer):
                return routed, verified[0].id if routed.attributed else None
        delivery = Delivery(routed.candidate, event, routed.key)
        if not routed.writes and routed.key is None:
            await routed.handler(delivery)
            return await self._finish(receiver, delivery), routed.candidate.id
        async with self.db.write_transaction() as session:
            delivery.session = session
            if routed.key is not None and not await self.deliveries.claim(
                session, receiver.slug, routed.key, routed.candidate.id
            ):
                return DUPLICATE, routed.candidate.id
            await routed.handler(delivery)
            try:
                await session.commit()
            except IntegrityError:
                # A concurrent redelivery of the same key committed first: its work stands.
                await session.rollback()
                return DUPLICATE, routed.candidate.id
        return await self._finish(receiver, delivery), routed.candidate.id

    async def _finish(self, receiver: Receiver, delivery: Delivery) -> Answer:
        # The delivery is committed: a failure now must not answer 500, or the provider's
        # redelivery would only meet "duplicate". The action says what it did in the answer.
        for action in delivery.after_commit:
            try:
                await action()
            except Exception:
                log.warning("%s: an action after the commit failed", receiver.slug, exc_info=True)
                delivery.answer.setdefault("after_commit", "failed; see the gateway's log")
        return receiver.answer(delivery)

    async def _verify(
        self,
        receiver: Receiver,
        hint: Any,
        headers: Mapping[str, str],
        body: bytes,
        conn: Any,
    ) -> tuple[list[Candidate], Any]:
        """The candidates the body is signed for (at least one), then the parsed event."""
        candidates = await receiver.candidates(hint, conn)
        pairs = [(c, self.plain_secret(c.stored_secret)) for c in candidates]
        now = self.wall_clock()

        def check() -> list[Candidate]:
            results: dict[str, bool] = {}  # one HMAC per distinct secret (shared Slack apps)
            verified = []
            for candidate, secret in pairs:
                if secret not in results:
                    results[secret] = bool(secret) and receiver.verify(secret, headers, body, now)
                if results[secret]:
                    verified.append(candidate)
            return verified

        distinct = len({s for _, s in pairs}) or 1
        big = len(body) * distinct > OFFLOAD_HMAC_BYTES
        verified = await asyncio.to_thread(check) if big else check()
        if not verified:
            raise Unauthorized("Signature does not match" if candidates else "Unknown integration")
        try:
            event = receiver.parse(headers, body)
        except ValueError as exc:  # the cores' PayloadError is a ValueError
            raise BadRequest(f"Malformed payload: {exc}") from None
        return verified, event

    def plain_secret(self, stored: str | None) -> str:
        """A stored secret in plain text, decrypted once per ciphertext.

        Rows are read on every delivery, so a regenerated secret (a new ciphertext) or a
        removed one takes effect at once; only repeated Fernet decryptions are skipped.
        """
        if not stored:
            return ""
        plain = self._plain.get(stored)
        if plain is None:
            try:
                plain = self.secrets.decrypt(stored) or ""
            except SecretError:
                # E.g. encrypted with a key since dropped: this integration cannot verify,
                # the others still do. Remembered, so it is logged once per value.
                log.warning("a stored webhook secret cannot be decrypted (an old key?)")
                plain = ""
            if len(self._plain) >= SECRET_CACHE_SIZE:
                self._plain.clear()
            self._plain[stored] = plain
        return plain


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, read from the stream under the receiver's own cap."""
    too_large = f"Payload larger than {limit // (1024 * 1024)} MB"
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(too_large)
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(256 * 1024):
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(too_large)
    except (HttpProcessingError, zlib.error, ValueError) as exc:
        raise BadRequest(f"Body could not be read: {type(exc).__name__}") from None
    return bytes(body)


__all__ = [
    "DUPLICATE",
    "Answer",
    "Candidate",
    "Delivery",
    "DeliveryLog",
    "Receiver",
    "Routed",
    "WebhookPipeline",
    "delivery_key",
    "read_body",
]
