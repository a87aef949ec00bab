"""Google Calendar connector: OAuth tokens under a row lock, import and export of time entries."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import asyncpg
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from gateway.connectors import fields as f
from gateway.connectors.base import CheckResult, Config, Connector, ConnectorDeps, SaveContext
from gateway.connectors.catalog import GOOGLE
from gateway.connectors.google import core
from gateway.connectors.http import HttpResult
from gateway.connectors.jobs import IntegrationJobRunner, SyncOutcome
from gateway.db.models import (
    CalendarLink,
    Integration,
    Project,
    Task,
    TimeEntry,
    User,
    WebhookDelivery,
)
from gateway.timeutil import to_wall, utcnow_naive

log = logging.getLogger(__name__)

SERVICE = "Google"
JOB = "google_calendar_sync"
JOB_SPEC = "*/30 * * * *"
# A concurrent sync linked an event first: raised by SQLAlchemy, or by asyncpg on PostgreSQL's
# fast path.
_UNIQUE_VIOLATIONS = (IntegrityError, asyncpg.UniqueViolationError)
IMPORT_SOURCE = "auto"  # DESIGN §10: entries the gateway writes have source 'auto'
RATE_LIMIT_TRIES = 3  # one call and two backed-off retries; then the next sync goes on
MAX_RATE_LIMIT_WAIT = 30.0  # seconds; a longer Retry-After is left to the next sync
EXPORT_BATCH = 500  # entries exported per sync at most; the next sync goes on
# Failures that hold for every entry of this sync: stop, the rest waits for the next one.
EXPORT_STOPS = frozenset({"unauthorized", "rate_limited", "server", "not_found", "forbidden"})
STATE_PROVIDER = "google_oauth_state"  # used OAuth states, in gateway_webhook_deliveries
STATE_RETENTION = timedelta(days=1)

# Keys the gateway writes itself; a config save never sets them (tokens come from the OAuth
# callback only, the rest from the sync).
MANAGED = frozenset({"access_token", "refresh_token", "token_expiry", "email", "last_sync_at"})
# Internal keys, not in the field table (so no save can set them either).
CONNECTED_AT = "connected_at"
LAST_EXPORT_AT = "last_export_at"
RECONNECT = "reconnect_required"


def _managed(value: Any) -> Any:
    return value  # never stored from a save: validate() drops these keys


FIELDS = f.FieldTable(
    [
        f.Field("access_token", f.secret(), secret=True),
        f.Field(
            "refresh_token", f.secret(), secret=True, required=True
        ),
        f.Field("token_expiry", _managed),
        f.Field("email", _managed),
        f.Field("calendar_id", core.normalize_calendar_id, default="primary"),
        f.Field("default_project_id", f.optional_id, project=True),
        f.Field(
            "sync_direction", core.normalize_sync_direction, default="import"
        ),
        f.Field(
            "sync_days_back",
            f.bounded_int(core.DAYS_BACK_MIN, core.DAYS_BACK_MAX),
            default=core.DAYS_BACK_DEFAULT,
        ),
        f.Field("last_sync_at", _managed),
    ]
)

# Reasons the callback may end with besides core.CALLBACK_MESSAGES (shown on the cards page).
CONNECT_MESSAGES = {
    "oauth_not_configured": (
        "Google sign-in is not set up on this gateway: an administrator must set "
        "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET."
    ),
    "token_exchange_failed": "Google did not accept the sign-in; please try connecting again.",
    "token_answer_invalid": "Google answered the sign-in in an unexpected way; please try again.",
    "refresh_token_missing": (
        "Google did not grant offline access (no refresh token); remove the app's access in "
        "your Google account settings and connect again."
    ),
    "calendar_scope_missing": (
        "Calendar access was not granted; connect again and allow access to your calendar."
    ),
    "userinfo_failed": "Google did not tell us which account was connected; please try again.",
    "state_reused": core.CALLBACK_MESSAGES["state_unknown"],
    "storage_failed": (
        "Google connected, but the gateway could not store the tokens (its database did not "
        "answer); it is safe to connect again in a moment."
    ),
}


def callback_message(reason: str | None) -> str | None:
    if not reason:
        return None
    return core.CALLBACK_MESSAGES.get(reason) or CONNECT_MESSAGES.get(reason) or (
        "Connecting Google Calendar failed; please try again."
    )


class TokenUnavailable(Exception):
    """No usable access token: `reconnect` when only a new consent can help."""

    def __init__(self, message: str, *, reconnect: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.reconnect = reconnect


@dataclass
class _Refresh:
    token: str | None = None
    error: str | None = None
    reconnect: bool = False
    refreshed: bool = False
    tokens: core.TokenSet | None = None  # what to store


def _counts() -> dict[str, Any]:
    return {"imported": 0, "updated": 0, "deleted": 0, "exported": 0, "skipped": 0, "errors": []}


def _aware_utc(value: Any) -> datetime | None:
    return core.parse_token_expiry(value)  # the same ISO 8601 reading: aware UTC or None


def _naive_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- the import's statements: Core, compiled once, one transaction per page of events ---------

_LINKS = CalendarLink.__table__
_ENTRIES = TimeEntry.__table__
# The links of a batch's events, each with its entry's values (NULL: the entry is gone).
_SELECT_LINKS = (
    select(
        _LINKS.c.id,
        _LINKS.c.event_id,
        _LINKS.c.entry_id,
        _LINKS.c.direction,
        _LINKS.c.entry_updated_at,
        _ENTRIES.c.id.label("entry_found"),
        _ENTRIES.c.start_time,
        _ENTRIES.c.end_time,
        _ENTRIES.c.notes,
        _ENTRIES.c.updated_at,
    )
    .select_from(_LINKS.outerjoin(_ENTRIES, _ENTRIES.c.id == _LINKS.c.entry_id))
    .where(
        _LINKS.c.integration_id == bindparam("integration_id"),
        _LINKS.c.event_id.in_(bindparam("event_ids", expanding=True)),
    )
)
_DELETE_LINKS = delete(_LINKS).where(_LINKS.c.id.in_(bindparam("ids", expanding=True)))
_DELETE_ENTRIES = delete(_ENTRIES).where(_ENTRIES.c.id.in_(bindparam("ids", expanding=True)))
_MOVE_ENTRY = (
    update(_ENTRIES)
    # Only while nobody has edited it since the sync read it.
    .where(_ENTRIES.c.id == bindparam("b_entry"), _ENTRIES.c.updated_at == bindparam("b_was"))
    .values(
        start_time=bindparam("b_start"),
        end_time=bindparam("b_end"),
        duration_seconds=bindparam("b_duration"),
        notes=bindparam("b_notes"),
        updated_at=bindparam("b_now"),
    )
)
_MOVE_LINK = (
    update(_LINKS)
    .where(_LINKS.c.id == bindparam("b_link"))
    .values(entry_updated_at=bindparam("b_now"), event_updated=bindparam("b_event_updated"))
)
_INSERT_ENTRY = insert(_ENTRIES).returning(_ENTRIES.c.id, sort_by_parameter_order=True)
_INSERT_LINK = insert(_LINKS)
_INTEGRATIONS = Integration.__table__
_PROJECTS = Project.__table__
# The integration's row and the status of its import project (NULL when there is none).
_SYNC_READ = select(
    _INTEGRATIONS,
    select(_PROJECTS.c.status)
    .where(_PROJECTS.c.id == _INTEGRATIONS.c.config["default_project_id"].as_integer())
    .scalar_subquery()
    .label("import_project_status"),
).where(_INTEGRATIONS.c.id == bindparam("id"))
_MARKER_CHUNK = 100  # [gcal:…] patterns per adoption query


@dataclass(frozen=True)
class _Candidate:
    """An event the import writes for: an importable one (with its entry's values) or a
    cancelled one (its entry goes, if the gateway made it and nobody edited it)."""

    event: core.CalendarEvent
    times: core.EntryTimes | None = None
    notes: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.times is None

    @classmethod
    def of(
        cls, event: core.CalendarEvent, decision: core.Import | core.Skip, app_tz: tzinfo
    ) -> _Candidate:
        if isinstance(decision, core.Skip):  # cancelled
            return cls(event)
        return cls(event, core.entry_times(event, app_tz), core.entry_notes(event))


def _link_values(
    integration_id: int,
    event: core.CalendarEvent,
    entry_id: int,
    entry_updated_at: datetime,
    created_at: datetime,
) -> dict[str, Any]:
    return {
        "integration_id": integration_id,
        "event_id": event.id,
        "entry_id": entry_id,
        "direction": "import",
        "event_updated": _naive_utc(event.updated),
        "entry_updated_at": entry_updated_at,
        "created_at": created_at,
    }


@functools.lru_cache(maxsize=32)
def _marked_query(patterns: int) -> Any:
    """Entries of a user whose notes match any of `patterns` LIKE patterns (p0, p1, …)."""
    return select(_ENTRIES.c.id, _ENTRIES.c.notes, _ENTRIES.c.updated_at).where(
        _ENTRIES.c.user_id == bindparam("user_id"),
        or_(*(_ENTRIES.c.notes.like(bindparam(f"p{i}"), escape="\\") for i in range(patterns))),
    )


def _marker_patterns(event_ids: list[str]) -> list[str]:
    """LIKE patterns for notes that carry an event's [gcal:{id}] marker."""
    return [f"%{_like_escape(core.gcal_marker(event_id))}%" for event_id in event_ids]


def _pick_marked(rows: Any, event_ids: list[str]) -> dict[str, Any]:
    """Per event id, the oldest of `rows` (entries: id, notes, updated_at) that carries its
    [gcal:{id}] marker."""
    wanted = set(event_ids)
    found = {r["id"]: _Row(r) for r in rows}
    marked: dict[str, Any] = {}
    for entry_id in sorted(found):
        for event_id in core.marked_event_ids(found[entry_id].notes):
            if event_id in wanted:
                marked.setdefault(event_id, found[entry_id])
    return marked


async def _marked_entries(conn: Any, user_id: int, event_ids: list[str]) -> dict[str, Any]:
    """Per event id, the user's oldest entry whose notes carry [gcal:{id}] (made by
    TimeTracker's own importer, or by an older gateway): adopted rather than imported again.

    `conn`: a Core connection, or the pool's asyncpg connection on PostgreSQL's fast path.
    """
    if not isinstance(conn, AsyncConnection):
        return _pick_marked(
            await conn.fetch(_PG_MARKED, user_id, _marker_patterns(event_ids)), event_ids
        )
    rows: list[Any] = []
    for i in range(0, len(event_ids), _MARKER_CHUNK):
        patterns = _marker_patterns(event_ids[i : i + _MARKER_CHUNK])
        params: dict[str, Any] = {f"p{n}": p for n, p in enumerate(patterns)}
        params["user_id"] = user_id
        rows += [r._mapping for r in await conn.execute(_marked_query(len(patterns)), params)]
    return _pick_marked(rows, event_ids)


class _Row:
    """A row's columns as attributes, from a Core row mapping or an asyncpg record (whose
    json columns arrive as text: `json_columns` are decoded)."""

    def __init__(self, record: Any, json_columns: tuple[str, ...] = ()) -> None:
        self.__dict__.update(dict(record))
        for name in json_columns:
            value = self.__dict__.get(name)
            if isinstance(value, str | bytes):
                self.__dict__[name] = json.loads(value)


def _unlinked(batch: list[_Candidate], links: dict[str, Any]) -> list[str]:
    """The batch's importable events with no link yet (adoption candidates)."""
    return [c.event.id for c in batch if not c.cancelled and c.event.id not in links]


@dataclass
class _Plan:
    """What a batch writes, decided from the links and marked entries read before."""

    tally: dict[str, int]
    drop_links: list[int] = field(default_factory=list)
    drop_link_entries: list[int | None] = field(default_factory=list)  # None: entry gone
    drop_entries: list[int] = field(default_factory=list)
    drop_entry_was: list[datetime] = field(default_factory=list)  # updated_at as read
    moves: list[dict[str, Any]] = field(default_factory=list)
    adoptions: list[dict[str, Any]] = field(default_factory=list)  # link rows
    new_entries: list[_Candidate] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return bool(
            self.drop_links or self.drop_entries or self.moves or self.adoptions
            or self.new_entries
        )

    @staticmethod
    def entry_values(
        row: Any, project_id: int, c: _Candidate, now_wall: datetime
    ) -> dict[str, Any]:
        assert c.times is not None
        return {
            "user_id": row.user_id,
            "project_id": project_id,
            "task_id": None,
            "start_time": c.times.start,
            "end_time": c.times.end,
            "duration_seconds": c.times.duration_seconds,
            "break_seconds": 0,
            "notes": c.notes,
            "source": IMPORT_SOURCE,
            "billable": False,
            "paid": False,
            "created_at": now_wall,
            "updated_at": now_wall,
        }

    def pg_args(
        self, row: Any, project_id: int, now_wall: datetime, created: datetime
    ) -> list[Any]:
        """The parameters of _PG_WRITE, in order."""
        new = [(c, c.times) for c in self.new_entries if c.times is not None]

        def moves(key: str) -> list[Any]:
            return [m[key] for m in self.moves]

        return [
            self.drop_links,
            self.drop_entries,
            now_wall,
            *map(moves, ("b_entry", "b_start", "b_end", "b_duration", "b_notes")),
            *map(moves, ("b_link", "b_event_updated")),
            [c.event.id for c, _t in new],
            [t.start for _c, t in new],
            [t.end for _c, t in new],
            [t.duration_seconds for _c, t in new],
            [c.notes for c, _t in new],
            [_naive_utc(c.event.updated) for c, _t in new],
            row.user_id,
            project_id,
            IMPORT_SOURCE,
            row.id,
            created,
            [a["event_id"] for a in self.adoptions],
            [a["entry_id"] for a in self.adoptions],
            [a["event_updated"] for a in self.adoptions],
            [a["entry_updated_at"] for a in self.adoptions],
            self.drop_entry_was,
            self.drop_link_entries,
            moves("b_was"),
        ]


def _plan(
    row: Any,
    project_id: int,
    batch: list[_Candidate],
    links: dict[str, Any],
    marked: dict[str, Any],
    now_wall: datetime,
    created: datetime,
) -> _Plan:
    """Decide each event of a batch: skip, remove, move, adopt or import."""
    plan = _Plan({"imported": 0, "updated": 0, "deleted": 0, "skipped": 0})
    tally = plan.tally
    for c in batch:
        event = c.event
        link = links.get(event.id)
        entry = link if link is not None and link.entry_found is not None else None
        if link is not None and (
            link.direction != "import"
            or (entry is not None and entry.updated_at != link.entry_updated_at)
        ):
            tally["skipped"] += 1  # exported, or edited in TimeTracker: left alone
        elif c.cancelled:  # follow it if it is ours
            if link is None:
                tally["skipped"] += 1
                continue
            plan.drop_links.append(link.id)
            plan.drop_link_entries.append(entry.entry_id if entry is not None else None)
            if entry is not None:
                plan.drop_entries.append(entry.entry_id)
                plan.drop_entry_was.append(link.entry_updated_at)
            tally["deleted" if entry is not None else "skipped"] += 1
        elif link is not None:
            assert c.times is not None
            if entry is None or (entry.start_time, entry.end_time, entry.notes) == (
                c.times.start, c.times.end, c.notes
            ):
                tally["skipped"] += 1  # deleted in TimeTracker, or unchanged
                continue
            plan.moves.append(
                {
                    "b_entry": entry.entry_id,
                    "b_link": link.id,
                    "b_start": c.times.start,
                    "b_end": c.times.end,
                    "b_duration": c.times.duration_seconds,
                    "b_notes": c.notes,
                    "b_now": now_wall,
                    "b_event_updated": _naive_utc(event.updated),
                    "b_was": link.entry_updated_at,
                }
            )
            tally["updated"] += 1
        elif event.id in marked:  # imported by TimeTracker itself: adopted
            adopted = marked[event.id]
            plan.adoptions.append(
                _link_values(row.id, event, adopted.id, adopted.updated_at, created)
            )
            tally["skipped"] += 1
        else:
            plan.new_entries.append(c)
            tally["imported"] += 1
    return plan


# PostgreSQL, on the pool's asyncpg connection: the same reads and writes as the Core
# statements above, the writes as one statement (atomic on its own: no BEGIN, no COMMIT).
_PG_SYNC_READ = (
    "SELECT i.*, (SELECT p.status FROM projects AS p WHERE p.id = CASE WHEN "
    "(i.config->>'default_project_id') ~ '^[0-9]{1,9}$' THEN "
    "(i.config->>'default_project_id')::integer END) AS import_project_status "
    "FROM integrations AS i WHERE i.id = $1"
)
_PG_LINKS = (
    "SELECT l.id, l.event_id, l.entry_id, l.direction, l.entry_updated_at, "
    "e.id AS entry_found, e.start_time, e.end_time, e.notes, e.updated_at "
    "FROM gateway_calendar_links AS l LEFT JOIN time_entries AS e ON e.id = l.entry_id "
    "WHERE l.integration_id = $1 AND l.event_id = ANY($2::varchar[])"
)
_PG_MARKED = (
    "SELECT id, notes, updated_at FROM time_entries "
    "WHERE user_id = $1 AND notes LIKE ANY($2::text[])"
)
# New entries and their links are matched on the notes, which end in the event's own
# [gcal:{id}] marker and so differ between the events of a batch. A move or a removal checks
# again, as it writes, that the entry's updated_at is still the one its link remembers: an
# edit made in TimeTracker between this page's read and its write is never overwritten.
_PG_WRITE = """
WITH drop_entries AS (
    DELETE FROM time_entries AS t
    USING unnest($2::int[], $26::timestamp[]) AS d(id, was)
    WHERE t.id = d.id AND t.updated_at = d.was
    RETURNING t.id
), drop_links AS (
    DELETE FROM gateway_calendar_links AS l
    USING unnest($1::int[], $27::int[]) AS d(id, entry)
    WHERE l.id = d.id AND (d.entry IS NULL OR d.entry IN (SELECT id FROM drop_entries))
), move_entries AS (
    UPDATE time_entries AS t
    SET start_time = m.s, end_time = m.e, duration_seconds = m.d, notes = m.n,
        updated_at = $3::timestamp
    FROM unnest($4::int[], $5::timestamp[], $6::timestamp[], $7::int[], $8::text[],
        $28::timestamp[]) AS m(id, s, e, d, n, was)
    WHERE t.id = m.id AND t.updated_at = m.was
    RETURNING t.id
), move_links AS (
    UPDATE gateway_calendar_links AS l SET entry_updated_at = $3::timestamp, event_updated = m.u
    FROM unnest($9::int[], $10::timestamp[], $4::int[]) AS m(id, u, entry)
    WHERE l.id = m.id AND m.entry IN (SELECT id FROM move_entries)
), v AS (
    SELECT * FROM unnest(
        $11::varchar[], $12::timestamp[], $13::timestamp[], $14::int[], $15::text[],
        $16::timestamp[]
    ) AS v(event_id, s, e, d, n, u)
), new_entries AS (
    INSERT INTO time_entries (user_id, project_id, task_id, start_time, end_time,
        duration_seconds, break_seconds, notes, source, billable, paid, created_at, updated_at)
    SELECT $17::int, $18::int, NULL, v.s, v.e, v.d, 0, v.n, $19::varchar, false, false,
        $3::timestamp, $3::timestamp FROM v
    RETURNING id, notes
)
INSERT INTO gateway_calendar_links (integration_id, event_id, entry_id, direction,
    event_updated, entry_updated_at, created_at)
SELECT $20::int, v.event_id, ne.id, 'import', v.u, $3::timestamp, $21::timestamp
FROM new_entries AS ne JOIN v ON v.n = ne.notes
UNION ALL
SELECT $20::int, a.event_id, a.entry_id, 'import', a.u, a.at, $21::timestamp
FROM unnest($22::varchar[], $23::int[], $24::timestamp[], $25::timestamp[])
    AS a(event_id, entry_id, u, at)
"""


class GoogleCalendarConnector(Connector):
    slug = "google"
    provider = GOOGLE
    name = "Google Calendar"
    fields = FIELDS

    def __init__(self, deps: ConnectorDeps, runner: IntegrationJobRunner) -> None:
        super().__init__(deps)
        self.runner = runner

    # -- settings -----------------------------------------------------------------------------

    @property
    def oauth_configured(self) -> bool:
        return bool(self.settings.google_client_id and self.settings.google_client_secret)

    @property
    def redirect_uri(self) -> str:
        return self.settings.public("/integrations/google/callback")

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    # -- status -------------------------------------------------------------------------------

    def is_connected(self, row: Integration, config: Config) -> bool:
        return bool(row.is_active and config.has("refresh_token") and not config.get(RECONNECT))

    def activation_missing(self, config: Config) -> list[str]:
        return self.table.missing(config.raw, config.has)

    async def status_extra(
        self, user: User, row: Integration | None, config: Config
    ) -> dict[str, Any]:
        missing = self.table.missing(config.raw, config.has)
        direction = config.get("sync_direction") or "import"
        if direction in ("import", "both") and config.get("default_project_id") is None:
            missing.append("default_project_id")
        extra: dict[str, Any] = {
            "email": config.get("email"),
            "reconnect_required": bool(config.get(RECONNECT)),
            "oauth_configured": self.oauth_configured,
            "connect_url": self.settings.public("/integrations/google/connect"),
            "disconnect_url": self.settings.public("/integrations/google/disconnect"),
            "redirect_uri": self.redirect_uri,
            "missing": missing,
        }
        return extra

    # -- config -------------------------------------------------------------------------------

    async def validate(self, ctx: SaveContext, session: AsyncSession) -> None:
        for key in MANAGED:
            ctx.plain.pop(key, None)
            ctx.secrets.pop(key, None)

    def on_disconnect(self, config: Config) -> None:
        for key in ("token_expiry", "email", CONNECTED_AT, LAST_EXPORT_AT, RECONNECT):
            config.raw.pop(key, None)

    # -- OAuth --------------------------------------------------------------------------------

    def consent_url(self, state: str, challenge: str, login_hint: str | None = None) -> str:
        assert self.settings.google_client_id
        return core.authorize_url(
            self.settings.google_auth_url,
            self.settings.google_client_id,
            self.redirect_uri,
            state,
            challenge,
            login_hint=login_hint,
        )

    async def stored_email(self, user_id: int) -> str | None:
        row = await self.store.find(user_id)
        email = self.store.config(row).get("email") if row is not None else None
        return email if isinstance(email, str) else None

    async def claim_state(self, state: str) -> bool:
        """A state is used once, whatever the cookie a browser replays (across replicas)."""
        digest = hashlib.sha256(state.encode()).hexdigest()
        now = utcnow_naive()
        async with self.db.write_transaction() as session:
            await session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.provider == STATE_PROVIDER,
                    WebhookDelivery.received_at < now - STATE_RETENTION,
                )
            )
            inserted = await session.execute(
                self.db.insert(WebhookDelivery.__table__)
                .values(provider=STATE_PROVIDER, delivery_id=digest, received_at=now)
                .on_conflict_do_nothing()
            )
            await session.commit()
        return bool(inserted.rowcount)

    async def complete(self, user: User, code: str, verifier: str) -> str | None:
        """Exchange the code, store the tokens and activate; None, or the failure's reason."""
        if not self.oauth_configured:
            return "oauth_not_configured"
        settings = self.settings
        assert settings.google_client_id and settings.google_client_secret
        answer = await self.http.request(
            SERVICE,
            "POST",
            settings.google_token_url,
            data=core.authorization_code_body(
                settings.google_client_id, settings.google_client_secret, code,
                self.redirect_uri, verifier,
            ),
            retry_policy=core.retry_policy,
        )
        if not answer.ok:
            kind = core.classify_token_error(answer.status, answer.data)
            log.warning("google: code exchange failed for user %s (%s)", user.id, kind)
            return "token_exchange_failed"
        try:
            tokens = core.TokenSet.from_answer(answer.data, self.now())
        except core.PayloadError as exc:
            log.warning("google: token answer for user %s not usable: %s", user.id, exc)
            return "token_answer_invalid"
        if not tokens.has_calendar_scope:
            return "calendar_scope_missing"
        if tokens.refresh_token is None:
            return "refresh_token_missing"
        info = await self.http.request(
            SERVICE,
            "GET",
            settings.google_userinfo_url,
            headers=_bearer(tokens.access_token),
            retry_policy=core.retry_policy,
        )
        try:
            if not info.ok:
                raise core.PayloadError(info.error or "userinfo failed")
            email = core.userinfo_email(info.data)
        except core.PayloadError as exc:
            log.warning("google: userinfo for user %s failed: %s", user.id, exc)
            return "userinfo_failed"

        async def mutate(row: Integration, config: Config, _session: AsyncSession) -> None:
            config.set_secret("access_token", tokens.access_token)
            config.set_secret("refresh_token", tokens.refresh_token)
            config.set("token_expiry", core.format_token_expiry(tokens.expires_at))
            config.set("email", email)
            config.raw.pop(RECONNECT, None)
            if not config.get(CONNECTED_AT):
                config.set(CONNECTED_AT, self.now().isoformat())
            config.set("enabled", True)
            row.is_active = True
            row.last_error = None

        try:
            await self.store.change(user.id, mutate)
        except (SQLAlchemyError, OSError):
            log.warning("google: storing the tokens of user %s failed", user.id, exc_info=True)
            return "storage_failed"
        log.info("google: user %s connected Google Calendar", user.id)
        return None

    # -- tokens -------------------------------------------------------------------------------

    async def access_token(
        self, integration_id: int, failed: str | None = None, *, row: Any = None
    ) -> str:
        """A usable access token, refreshed once when it is (nearly) expired.

        `failed` is a token the Calendar API just refused (401): it is replaced, unless another
        caller replaced it already. Concurrent callers, on any replica, refresh once: they
        queue on an exclusive lock of the integration and re-read it after taking it. The call
        to Google happens outside any write transaction; only its result is then written onto
        the row read under its lock (never a config read before the refresh). `row`, when the
        caller has just read it, saves reading it again for the first look.
        """
        token = await self._usable_token(integration_id, failed, row)
        if token is not None:
            return token
        async with self.db.exclusive("google-refresh", integration_id):
            token = await self._usable_token(integration_id, failed)  # refreshed meanwhile?
            if token is not None:
                return token
            row = await self.store.get(integration_id)
            if row is None:
                raise TokenUnavailable("The Google Calendar integration is gone")
            outcome = await self._refresh(row.id, self.store.config(row))

            async def store(r: Integration, cfg: Config, _session: AsyncSession) -> None:
                if outcome.reconnect:
                    # Dead for good (revoked, expired, password changed): never retried in a
                    # loop; the job skips the integration until the user reconnects.
                    cfg.set(RECONNECT, True)
                    cfg.set_secret("access_token", None)
                    r.last_error = core.TOKEN_ERROR_MESSAGES["invalid_grant"]
                elif outcome.tokens is not None:
                    cfg.set_secret("access_token", outcome.tokens.access_token)
                    cfg.set_secret("refresh_token", outcome.tokens.refresh_token)
                    cfg.set("token_expiry", core.format_token_expiry(outcome.tokens.expires_at))

            if outcome.reconnect or outcome.tokens is not None:
                await self.store.update(integration_id, store)
        if outcome.token is None:
            message = outcome.error or "No Google access token"
            raise TokenUnavailable(message, reconnect=outcome.reconnect)
        return outcome.token

    async def _usable_token(
        self, integration_id: int, failed: str | None, row: Any = None
    ) -> str | None:
        """The stored access token if it is good for 5 more minutes (and not `failed`)."""
        if row is None:
            row = await self.store.read(integration_id)
        if row is None:
            raise TokenUnavailable("The Google Calendar integration is gone")
        config = self.store.config(row)
        if config.get(RECONNECT):
            raise TokenUnavailable(core.TOKEN_ERROR_MESSAGES["invalid_grant"], reconnect=True)
        current = config.secret("access_token")
        expiry = core.parse_token_expiry(config.get("token_expiry"))
        if current and current != failed and not core.needs_refresh(expiry, self.now()):
            return current
        return None

    async def _refresh(self, integration_id: int, config: Config) -> _Refresh:
        """One refresh call to Google; the caller stores what it returns."""
        refresh_token = config.secret("refresh_token")
        if not refresh_token:
            return _Refresh(error=core.TOKEN_ERROR_MESSAGES["invalid_grant"], reconnect=True)
        if not self.oauth_configured:
            return _Refresh(error=CONNECT_MESSAGES["oauth_not_configured"])
        settings = self.settings
        assert settings.google_client_id and settings.google_client_secret
        answer = await self.http.request(
            SERVICE,
            "POST",
            settings.google_token_url,
            data=core.refresh_token_body(
                settings.google_client_id, settings.google_client_secret, refresh_token
            ),
            retry_policy=core.retry_policy,
        )
        if not answer.ok:
            kind = core.classify_token_error(answer.status, answer.data)
            log.warning("google: token refresh for integration %s failed (%s)", integration_id, kind)
            reconnect = kind == "invalid_grant"
            return _Refresh(error=core.TOKEN_ERROR_MESSAGES[kind], reconnect=reconnect)
        try:
            tokens = core.TokenSet.from_answer(answer.data, self.now()).merge(refresh_token)
        except core.PayloadError as exc:
            return _Refresh(error=f"Google's token answer was not usable: {exc}")
        return _Refresh(token=tokens.access_token, refreshed=True, tokens=tokens)

    async def api(
        self,
        integration_id: int,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        retry_unsafe: bool = False,
        row: Any = None,
    ) -> HttpResult:
        """A Calendar/userinfo call with a fresh token; a 401 refreshes once and retries once.

        Rate limits (429, 5xx, and 403 rateLimitExceeded/userRateLimitExceeded, which only the
        body tells apart from other 403s) back off with jitter, RATE_LIMIT_TRIES at most:
        https://developers.google.com/calendar/api/guides/errors#backoff

        `row`: the integration as just read, if the caller has it (see access_token).
        """
        token = await self.access_token(integration_id, row=row)
        attempt = 0
        while True:
            attempt += 1
            result = await self._call(token, method, url, params, json_body, retry_unsafe)
            if result.status == 401 and attempt == 1:
                token = await self.access_token(integration_id, failed=token)
                result = await self._call(token, method, url, params, json_body, retry_unsafe)
            if result.ok or attempt >= RATE_LIMIT_TRIES:
                return result
            if method not in {"GET", "PUT", "PATCH", "DELETE"} and not retry_unsafe:
                return result
            # No answer at all (network, timeout) backs off like a 503.
            status = 503 if result.status is None else result.status
            wait = core.retry_delay(status, result.headers, time.time(), attempt, result.data)
            if wait is None or wait > MAX_RATE_LIMIT_WAIT:
                return result
            await self.http.sleep(wait)

    async def _call(
        self,
        token: str,
        method: str,
        url: str,
        params: dict[str, str] | None,
        json_body: Any,
        retry_unsafe: bool,
    ) -> HttpResult:
        return await self.http.request(
            "Google Calendar",
            method,
            url,
            headers=_bearer(token),
            params=params,
            json_body=json_body,
            retry_policy=core.retry_policy,
            retry_unsafe=retry_unsafe,
            retries=0,  # api() backs off itself, with jitter and the body in view
        )

    # -- test ---------------------------------------------------------------------------------

    async def check_connection(self, row: Integration, config: Config) -> CheckResult:
        try:
            info = await self.api(row.id, "GET", self.settings.google_userinfo_url)
        except TokenUnavailable as exc:
            code = "reconnect_required" if exc.reconnect else "token"
            return CheckResult(False, error=exc.message, code=code)
        if not info.ok:
            error = core.classify_api_error(info.status, info.data)
            return CheckResult(False, error=error.message, code=error.kind)
        try:
            email = core.userinfo_email(info.data)
        except core.PayloadError as exc:
            error = f"Google's answer was not usable: {exc}"
            return CheckResult(False, error=error, code="payload")
        calendar_id = config.get("calendar_id") or "primary"
        probe = await self.api(
            row.id,
            "GET",
            self.settings.google_calendar_api_url + core.calendar_path(calendar_id),
            params={"maxResults": "1"},
        )
        if not probe.ok:
            error = core.classify_api_error(probe.status, probe.data)
            return CheckResult(False, error=error.message, code=error.kind)
        return CheckResult(True, connected_as=email, extra={"email": email})

    # -- disconnect ---------------------------------------------------------------------------

    async def revoke(self, row: Integration, config: Config) -> None:
        """Revoke at Google (the refresh token also ends its access tokens); any answer goes."""
        token = config.secret("refresh_token") or config.secret("access_token")
        if not token:
            return
        answer = await self.http.request(
            SERVICE, "POST", self.settings.google_revoke_url, data=core.revoke_body(token)
        )
        if answer.ok:
            log.info("google: token of integration %s revoked", row.id)
        else:
            log.info("google: revocation for integration %s answered %s", row.id, answer.status)

    # -- sync ---------------------------------------------------------------------------------

    async def calendars(self, user: User) -> tuple[int, dict[str, Any]]:
        """The user's calendars they may write to, for the card's picker (calendarList)."""
        row = await self.store.require_active(user.id)
        try:
            answer = await self.api(
                row.id,
                "GET",
                self.settings.google_calendar_api_url + "/users/me/calendarList",
                params={"minAccessRole": "writer", "maxResults": "250"},
            )
        except TokenUnavailable as exc:
            return 409, {"ok": False, "error": exc.message, "reconnect_required": exc.reconnect}
        if not answer.ok or not isinstance(answer.data, dict):
            error = core.classify_api_error(answer.status, answer.data)
            return 502, {"ok": False, "error": error.message}
        calendars = []
        for item in answer.data.get("items") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                summary = item.get("summaryOverride") or item.get("summary") or item["id"]
                calendars.append(
                    {
                        "id": item["id"],
                        "summary": str(summary)[:200],
                        "primary": item.get("primary") is True,
                    }
                )
        calendars.sort(key=lambda c: (not c["primary"], c["summary"].lower()))
        return 200, {"ok": True, "calendars": calendars}

    def eligible(self, row: Integration) -> bool:
        """Scheduled runs skip integrations that need a new consent (never retried in a loop)."""
        config = row.config or {}
        return bool(config.get("refresh_token")) and not config.get(RECONNECT)

    async def sync(self, user: User) -> tuple[int, dict[str, Any]]:
        """Sync now; (HTTP status, answer)."""
        row = await self.store.require_active(user.id)
        config = self.store.config(row)
        if config.get(RECONNECT) or not config.has("refresh_token"):
            return 409, {
                "ok": False,
                "error": core.TOKEN_ERROR_MESSAGES["invalid_grant"],
                "reconnect_required": True,
                **_counts(),
            }
        outcome = await self.runner.run_one(self, row, self.sync_work)
        counts = outcome.detail.get("counts") or _counts()
        if outcome.detail.get("reconnect_required"):
            return 409, {"ok": False, "error": outcome.error, "reconnect_required": True, **counts}
        if outcome.status == "error":
            return 502, {"ok": False, "error": outcome.error, **counts}
        return 200, {"ok": True, **counts}

    async def sync_work(self, row: Integration) -> SyncOutcome:
        """Import and/or export for one integration (the job's work and the manual sync's)."""
        # One read: the freshest config, and the state of the project imported events go to.
        if self.db.is_postgres:  # on the pool's asyncpg connection: a job's hot path
            async with self.db.driver_connection() as raw:
                record = await raw.fetchrow(_PG_SYNC_READ, row.id)
            fresh = _Row(record, json_columns=("config",)) if record is not None else None
        else:
            async with self.db.reads() as conn:
                fresh = (await conn.execute(_SYNC_READ, {"id": row.id})).first()
        if fresh is not None and fresh.provider == self.provider:
            row = fresh
        config = self.store.config(row)
        direction = config.get("sync_direction") or "import"
        project_status = getattr(row, "import_project_status", None)
        now = self.now()
        app_tz, _ = await self.db.app_settings()
        counts = _counts()
        fetch_error: str | None = None
        export_complete = False
        try:
            if direction in ("import", "both"):
                fetch_error = await self._import(
                    row, config, project_status, now, app_tz, counts
                )
            if direction in ("export", "both") and fetch_error is None:
                fetch_error, export_complete = await self._export(
                    row, config, now, app_tz, counts
                )
        except TokenUnavailable as exc:
            touched = counts["imported"] + counts["updated"] + counts["deleted"]
            outcome = SyncOutcome.from_counts(touched, [], exc.message, counts=counts)
            if exc.reconnect:
                outcome.status = "error"
                outcome.detail["reconnect_required"] = True
            return outcome

        touched = (
            counts["imported"] + counts["updated"] + counts["deleted"] + counts["exported"]
        )
        outcome = SyncOutcome.from_counts(
            touched, list(counts["errors"]), fetch_error, counts=counts
        )
        # Written with the outcome, in one statement if the config is still the one read here.
        outcome.config["last_sync_at"] = now.isoformat()
        if export_complete:
            outcome.config[LAST_EXPORT_AT] = now.isoformat()
        outcome.seen_config = row.config
        return outcome

    # -- import -------------------------------------------------------------------------------

    async def _import(
        self,
        row: Any,
        config: Config,
        project_status: str | None,
        now: datetime,
        app_tz: tzinfo,
        counts: dict[str, Any],
    ) -> str | None:
        """Events of the last sync_days_back days, every page; a fetch error or None."""
        project_id = config.get("default_project_id")
        if project_id is None:
            counts["errors"].append("Choose a project for imported events")
            return None
        if project_status != "active":  # None: the project is gone
            state = project_status or "missing"
            counts["errors"].append(f"The project for imported events is {state}; choose another")
            return None
        calendar_id = config.get("calendar_id") or "primary"
        url = self.settings.google_calendar_api_url + core.calendar_path(calendar_id)
        page_token: str | None = None
        fresh = row  # just read: the first call's token check needs no read of its own
        for _ in range(core.MAX_PAGES):
            params = core.list_params(now, config.get("sync_days_back"), page_token)
            answer = await self.api(row.id, "GET", url, params=params, row=fresh)
            fresh = None
            if not answer.ok:
                return core.classify_api_error(answer.status, answer.data).message
            try:
                page = core.EventsPage.from_api(answer.data)
            except core.PayloadError as exc:
                return f"Google Calendar answered in an unexpected way: {exc}"
            for bad in page.invalid:
                counts["errors"].append(f"event {bad.event_id or '?'}: {bad.error}")
            await self._import_page(row, project_id, page.items, now, app_tz, counts)
            page_token = page.next_page_token
            if not page_token:
                return None
        counts["errors"].append(f"stopped after {core.MAX_PAGES} pages of events")
        return None

    async def _import_page(
        self,
        row: Any,
        project_id: int,
        events: tuple[core.CalendarEvent, ...],
        now: datetime,
        app_tz: tzinfo,
        counts: dict[str, Any],
    ) -> None:
        """One page of events: decided in Python, then written in one transaction."""
        batch: dict[str, _Candidate] = {}  # by event id; a repeated id keeps its last version
        for event in events:
            decision = core.import_decision(event, now=now)
            if isinstance(decision, core.Skip) and decision.reason != "cancelled":
                counts["skipped"] += 1
                continue
            try:
                candidate = _Candidate.of(event, decision, app_tz)
            except Exception as exc:  # one bad event must not sink the others
                log.warning("google import: event %s failed", event.id, exc_info=True)
                counts["errors"].append(f"event {event.id}: {type(exc).__name__}")
                continue
            if batch.pop(event.id, None) is not None:
                counts["skipped"] += 1
            batch[event.id] = candidate
        if not batch:
            return
        if all(c.cancelled for c in batch.values()) and not await self._any_linked(
            row.id, list(batch)
        ):
            counts["skipped"] += len(batch)  # cancelled events we never imported: no write
            return
        now_wall = to_wall(now, app_tz)
        # In event id order, so two syncs of one calendar lock rows in the same order.
        ordered = sorted(batch.values(), key=lambda c: c.event.id)
        await self._import_batch(row, project_id, ordered, now_wall, counts)

    async def _import_batch(
        self,
        row: Any,
        project_id: int,
        batch: list[_Candidate],
        now_wall: datetime,
        counts: dict[str, Any],
    ) -> None:
        """Write a batch in one transaction; if it fails, each event alone, so one bad event
        does not sink the others."""
        failure: Exception | None = None
        try:
            try:
                tally = await self._write_batch(row, project_id, batch, now_wall)
            except _UNIQUE_VIOLATIONS:
                # Someone linked one of these events first (the unique key held): once more,
                # now reading what they wrote, so nothing is created twice.
                tally = await self._write_batch(row, project_id, batch, now_wall)
        except Exception as exc:
            failure = exc
        if failure is None:
            for key, value in tally.items():
                counts[key] += value
            return
        if len(batch) > 1:
            for candidate in batch:
                await self._import_batch(row, project_id, [candidate], now_wall, counts)
            return
        event_id = batch[0].event.id
        log.warning("google import: event %s failed", event_id, exc_info=failure)
        counts["errors"].append(f"event {event_id}: {type(failure).__name__}")

    async def _any_linked(self, integration_id: int, event_ids: list[str]) -> bool:
        async with self.db.reads() as conn:
            found = await conn.execute(
                _SELECT_LINKS, {"integration_id": integration_id, "event_ids": event_ids}
            )
            return found.first() is not None

    async def _write_batch(
        self, row: Any, project_id: int, batch: list[_Candidate], now_wall: datetime
    ) -> dict[str, int]:
        """Import, update or remove a batch's entries, all or nothing.

        The unique key on (integration, event id) is what keeps two syncs of one integration
        from creating anything twice: the one that links an event second fails on it, its whole
        write (entries included) is rolled back, and _import_batch plans the batch again from
        what the first one wrote. An entry nobody edited (its updated_at is the one its link
        remembers) follows its event; an edited one stays.

        On PostgreSQL: two reads and one statement on the pool's asyncpg connection (every
        round trip counts when many users sync at once); elsewhere a Core transaction.
        """
        event_ids = [c.event.id for c in batch]
        created = utcnow_naive()
        if self.db.is_postgres:
            async with self.db.driver_connection() as raw:
                links = {
                    r["event_id"]: _Row(r) for r in await raw.fetch(_PG_LINKS, row.id, event_ids)
                }
                unlinked = _unlinked(batch, links)
                marked = await _marked_entries(raw, row.user_id, unlinked) if unlinked else {}
                plan = _plan(row, project_id, batch, links, marked, now_wall, created)
                if plan.writes:
                    await raw.execute(_PG_WRITE, *plan.pg_args(row, project_id, now_wall, created))
            return plan.tally
        async with self.db.write_connection() as conn:  # committed at the end
            links = {
                link.event_id: link
                for link in await conn.execute(
                    _SELECT_LINKS, {"integration_id": row.id, "event_ids": event_ids}
                )
            }
            unlinked = _unlinked(batch, links)
            marked = await _marked_entries(conn, row.user_id, unlinked) if unlinked else {}
            plan = _plan(row, project_id, batch, links, marked, now_wall, created)
            if plan.drop_links:
                await conn.execute(_DELETE_LINKS, {"ids": plan.drop_links})
            if plan.drop_entries:
                await conn.execute(_DELETE_ENTRIES, {"ids": plan.drop_entries})
            if plan.moves:
                await conn.execute(_MOVE_ENTRY, plan.moves)
                await conn.execute(_MOVE_LINK, plan.moves)
            new_links = list(plan.adoptions)
            if plan.new_entries:
                ids = (
                    await conn.execute(
                        _INSERT_ENTRY, [plan.entry_values(row, project_id, c, now_wall)
                                        for c in plan.new_entries]
                    )
                ).scalars().all()
                for c, entry_id in zip(plan.new_entries, ids, strict=True):
                    new_links.append(_link_values(row.id, c.event, entry_id, now_wall, created))
            if new_links:
                await conn.execute(_INSERT_LINK, new_links)
        return plan.tally

    # -- export -------------------------------------------------------------------------------

    async def _export(
        self,
        row: Integration,
        config: Config,
        now: datetime,
        app_tz: tzinfo,
        counts: dict[str, Any],
    ) -> tuple[str | None, bool]:
        """Finished entries since the connection; (fetch error, whole window done)."""
        connected_at = _aware_utc(config.get(CONNECTED_AT))
        if connected_at is None:
            return None, True
        last_export = _aware_utc(config.get(LAST_EXPORT_AT))
        lo, hi = core.export_window(connected_at, last_export, now, app_tz)
        since = to_wall(connected_at, app_tz)  # never history from before the connection
        linked = select(CalendarLink.entry_id).where(CalendarLink.integration_id == row.id)
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    select(TimeEntry, Project.name, Task.name)
                    .outerjoin(Project, Project.id == TimeEntry.project_id)
                    .outerjoin(Task, Task.id == TimeEntry.task_id)
                    .where(
                        TimeEntry.user_id == row.user_id,
                        TimeEntry.end_time.is_not(None),
                        TimeEntry.end_time <= hi,
                        # Ended inside the window, or written since it opened with an earlier
                        # end (an entry typed in afterwards for the past): both are new here.
                        or_(
                            TimeEntry.end_time >= lo,
                            and_(TimeEntry.updated_at >= lo, TimeEntry.end_time >= since),
                        ),
                        TimeEntry.id.not_in(linked),
                    )
                    .order_by(TimeEntry.end_time, TimeEntry.id)
                    .limit(EXPORT_BATCH + 1)
                )
            ).all()
        complete = len(rows) <= EXPORT_BATCH
        calendar_id = config.get("calendar_id") or "primary"
        url = self.settings.google_calendar_api_url + core.calendar_path(calendar_id)
        for entry, project_name, task_name in rows[:EXPORT_BATCH]:
            if core.marked_event_ids(entry.notes):  # imported from a calendar: never sent back
                counts["skipped"] += 1
                continue
            event_id = core.export_event_id(row.id, entry.id)
            try:
                body = _event_body(entry, project_name, task_name, app_tz, event_id)
            except ValueError as exc:
                counts["skipped"] += 1
                log.info("google export: entry %s not exported: %s", entry.id, exc)
                continue
            # A deterministic id makes a retried insert answer 409 instead of a second event.
            answer = await self.api(row.id, "POST", url, json_body=body, retry_unsafe=True)
            if answer.ok and not _is_event(answer.data, event_id):
                # A 2xx that is not the event (a proxy's page, a cut answer) proves nothing:
                # not linked, so the next sync inserts again (a 409 if it was in fact done).
                counts["errors"].append(f"entry {entry.id}: Google's answer was not the event")
                complete = False
                continue
            if answer.ok:
                counts["exported"] += 1
            else:
                error = core.classify_api_error(answer.status, answer.data)
                if error.kind == "duplicate":
                    counts["skipped"] += 1
                elif error.kind in EXPORT_STOPS:
                    return error.message, False  # the rest waits for the next sync
                else:
                    counts["errors"].append(f"entry {entry.id}: {error.message}")
                    complete = False
                    continue
            await self._link_export(row.id, event_id, entry)
        stop = await self._export_edits(row, config, app_tz, counts)
        return stop, complete and stop is None

    async def _export_edits(
        self, row: Integration, config: Config, app_tz: tzinfo, counts: dict[str, Any]
    ) -> str | None:
        """Exported entries edited in TimeTracker since: their events follow (PUT).

        An event the user deleted in Google (404/410) is not brought back; its link remembers
        the edit so it is not tried again.
        """
        async with self.db.sessions() as session:
            rows = (
                await session.execute(
                    select(CalendarLink, TimeEntry, Project.name, Task.name)
                    .join(TimeEntry, TimeEntry.id == CalendarLink.entry_id)
                    .outerjoin(Project, Project.id == TimeEntry.project_id)
                    .outerjoin(Task, Task.id == TimeEntry.task_id)
                    .where(
                        CalendarLink.integration_id == row.id,
                        CalendarLink.direction == "export",
                        TimeEntry.end_time.is_not(None),
                        CalendarLink.entry_updated_at.is_not(None),
                        TimeEntry.updated_at > CalendarLink.entry_updated_at,
                    )
                    .order_by(TimeEntry.updated_at)
                    .limit(EXPORT_BATCH)
                )
            ).all()
        calendar_id = config.get("calendar_id") or "primary"
        for link, entry, project_name, task_name in rows:
            try:
                body = _event_body(entry, project_name, task_name, app_tz)
            except ValueError:
                continue
            url = self.settings.google_calendar_api_url + core.event_path(
                calendar_id, link.event_id
            )
            # PATCH: the fields the gateway writes follow the entry; what the user added to the
            # event in Google (a description, guests) stays.
            answer = await self.api(row.id, "PATCH", url, json_body=body)
            if answer.ok:
                counts["updated"] += 1
            else:
                error = core.classify_api_error(answer.status, answer.data)
                if error.kind not in {"not_found", "gone"}:
                    if error.kind in EXPORT_STOPS:
                        return error.message
                    counts["errors"].append(f"entry {entry.id}: {error.message}")
                    continue
            async with self.db.write_transaction() as session:
                await session.execute(
                    update(CalendarLink)
                    .where(CalendarLink.id == link.id)
                    .values(entry_updated_at=entry.updated_at)
                )
                await session.commit()
        return None

    async def _link_export(self, integration_id: int, event_id: str, entry: TimeEntry) -> None:
        async with self.db.write_transaction() as session:
            await session.execute(
                self.db.insert(CalendarLink.__table__)
                .values(
                    integration_id=integration_id,
                    event_id=event_id,
                    entry_id=entry.id,
                    direction="export",
                    entry_updated_at=entry.updated_at,
                    created_at=utcnow_naive(),
                )
                .on_conflict_do_nothing()
            )
            await session.commit()


def _is_event(data: Any, event_id: str) -> bool:
    return isinstance(data, dict) and data.get("id") == event_id


def _event_body(
    entry: TimeEntry,
    project_name: str | None,
    task_name: str | None,
    app_tz: tzinfo,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The Calendar event of an entry, for an export (with its id) or an update (without)."""
    return core.export_event_body(
        core.ExportEntry(
            id=entry.id,
            start_time=entry.start_time,
            end_time=entry.end_time,
            project_name=project_name or "",
            task_name=task_name,
            notes=entry.notes,
        ),
        app_tz,
        event_id=event_id,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
