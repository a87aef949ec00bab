"""Google Calendar connector core without I/O: OAuth, tokens, events, import, export, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import secrets
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from gateway.connectors.retry import header as _header
from gateway.connectors.retry import parse_retry_after
from gateway.timeutil import from_wall, to_wall


class PayloadError(ValueError):
    """A token, userinfo or Calendar answer that does not have the shape Google documents."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clean_text(value: str) -> str:
    """Text without NUL and other C0 controls but tab and newline (PostgreSQL refuses NUL)."""
    return "".join(ch for ch in value if ch >= " " or ch in "\t\n")


def _aware(moment: datetime, name: str) -> datetime:
    """`moment` itself; ValueError when naive (astimezone would read it in the host's zone)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return moment


def _cap(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


ELLIPSIS = "…"

# -- OAuth 2.0 for web server apps -----------------------------------------------------------
# https://developers.google.com/identity/protocols/oauth2/web-server

SCOPES = ("openid", "email", "https://www.googleapis.com/auth/calendar.events")
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.events"
STATE_TTL_SECONDS = 600
# Replicas' clocks may differ a little: a state stamped slightly "in the future" is still fine.
STATE_CLOCK_SKEW = timedelta(seconds=60)

# RFC 7636 §4.1: code_verifier = 43*128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." /
# "_" / "~".
_VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def pkce_challenge(verifier: str) -> str:
    """The S256 code_challenge of `verifier`: BASE64URL(SHA256(ASCII(verifier))), unpadded.

    RFC 7636 §4.2; ValueError for a verifier outside §4.1's alphabet or length.
    """
    if not _VERIFIER_RE.fullmatch(verifier):
        raise ValueError("code_verifier must be 43-128 unreserved characters (RFC 7636 §4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def new_pkce() -> tuple[str, str]:
    """A fresh (code_verifier, code_challenge) pair for the S256 method."""
    # 64 random bytes → 86 base64url characters, all in RFC 7636's unreserved set.
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)


def new_state() -> str:
    """An unguessable `state` value (256 bits) binding the callback to this browser session."""
    return secrets.token_urlsafe(32)


def authorize_url(
    auth_url: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    *,
    login_hint: str | None = None,
) -> str:
    """The consent URL; any query string `auth_url` already has is kept, ours is appended.

    access_type=offline and prompt=consent make Google return a refresh token on every consent
    (without prompt=consent it sends one only the first time the user ever consents).
    https://developers.google.com/identity/protocols/oauth2/web-server#creatingclient
    """
    parts = urlsplit(auth_url)
    ours = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(SCOPES),
        "state": state,
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if login_hint:
        ours["login_hint"] = login_hint
    # Ours win over a same-named parameter already in auth_url; the rest is kept in order.
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query = urlencode([*kept, *ours.items()], quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def authorization_code_body(
    client_id: str, client_secret: str, code: str, redirect_uri: str, code_verifier: str
) -> dict[str, str]:
    """Form fields of the code exchange (Step 5 of Google's web-server flow, with PKCE)."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "client_secret": client_secret,
        "code_verifier": code_verifier,
    }


def refresh_token_body(client_id: str, client_secret: str, refresh_token: str) -> dict[str, str]:
    """Form fields of a refresh ("Refreshing an access token (offline access)")."""
    return {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client_id,
        "client_secret": client_secret,
    }


def revoke_body(token: str) -> dict[str, str]:
    """Form fields of a revocation; revoking the refresh token also revokes its access tokens."""
    return {"token": token}


@dataclass(frozen=True)
class OAuthState:
    """A consent started by a browser session: kept in that session until the callback."""

    state: str
    verifier: str = field(repr=False)
    created_at: datetime  # aware UTC
    user_id: int

    def is_expired(self, now: datetime, ttl: float = STATE_TTL_SECONDS) -> bool:
        age = now - self.created_at
        return age > timedelta(seconds=ttl) or age < -STATE_CLOCK_SKEW

    def to_session(self) -> dict[str, Any]:
        """A JSON-ready dict for the (encrypted) session cookie."""
        return {
            "state": self.state,
            "verifier": self.verifier,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "user_id": self.user_id,
        }

    @classmethod
    def from_session(cls, data: Any) -> OAuthState | None:
        """The state saved by to_session, or None when absent or malformed (a stale cookie)."""
        if not isinstance(data, dict):
            return None
        state, verifier, user_id = data.get("state"), data.get("verifier"), data.get("user_id")
        if not isinstance(state, str) or not isinstance(verifier, str) or not _is_int(user_id):
            return None
        try:
            created_at = datetime.fromisoformat(str(data.get("created_at")))
        except ValueError:
            return None
        if created_at.tzinfo is None:
            return None
        return cls(state=state, verifier=verifier, created_at=created_at, user_id=user_id)


@dataclass(frozen=True)
class CallbackOk:
    code: str = field(repr=False)
    verifier: str = field(repr=False)


@dataclass(frozen=True)
class CallbackError:
    reason: str  # short, stable: for logs, metrics and tests
    message: str  # one plain sentence for the user
    status: int = 400


CALLBACK_MESSAGES = {
    "access_denied": "You declined access to Google Calendar, so nothing was connected.",
    "provider_error": "Google could not complete the sign-in; please try connecting again.",
    "state_missing": "The answer from Google was incomplete; please try connecting again.",
    "state_unknown": (
        "This sign-in was already used or was started in another browser; "
        "please start again from the Google Calendar card."
    ),
    "state_mismatch": (
        "This sign-in does not match the one started in this browser; please try again."
    ),
    "state_expired": "The sign-in took too long and expired; please try connecting again.",
    "code_missing": "Google did not send an authorization code; please try connecting again.",
}


def _callback_error(reason: str, status: int = 400) -> CallbackError:
    return CallbackError(reason, CALLBACK_MESSAGES[reason], status)


def _query_value(query: Mapping[str, Any], name: str) -> str | None:
    value = query.get(name)
    return value if isinstance(value, str) and value != "" else None


def check_callback(
    query: Mapping[str, Any],
    pending: OAuthState | None,
    now: datetime,
    ttl: float = STATE_TTL_SECONDS,
) -> CallbackOk | CallbackError:
    """The OAuth callback's guard chain: the first failing check names the reason.

    https://developers.google.com/identity/protocols/oauth2/web-server#handlingresponse
    The caller drops `pending` from the session whatever the outcome: a state is single-use.
    """
    error = _query_value(query, "error")
    if error is not None:
        # The user pressed "Cancel" on the consent screen: not a failure of ours.
        if error == "access_denied":
            return _callback_error("access_denied", 403)
        return _callback_error("provider_error", 502)
    state = _query_value(query, "state")
    if state is None:
        return _callback_error("state_missing")
    if pending is None:
        return _callback_error("state_unknown")
    # Bytes: compare_digest raises TypeError on non-ASCII str, and `state` is attacker-chosen.
    if not hmac.compare_digest(state.encode("utf-8"), pending.state.encode("utf-8")):
        return _callback_error("state_mismatch")
    if pending.is_expired(now, ttl):
        return _callback_error("state_expired")
    code = _query_value(query, "code")
    if code is None:
        return _callback_error("code_missing")
    return CallbackOk(code=code, verifier=pending.verifier)


# -- token answers ---------------------------------------------------------------------------
# https://developers.google.com/identity/protocols/oauth2/web-server#exchange-authorization-code
# https://datatracker.ietf.org/doc/html/rfc6749#section-5.1

# Google's access tokens live 3599 s. A longer claim is capped (we refresh early, never late);
# a zero, negative, missing or non-integer one is refused rather than guessed.
EXPIRES_IN_MAX = 24 * 3600
REFRESH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class TokenSet:
    """A token endpoint answer. refresh_token None means "keep the stored one" (refreshes)."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime  # aware UTC
    scope: str | None = None
    id_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_answer(cls, data: Any, now_utc: datetime) -> TokenSet:
        if not isinstance(data, dict):
            raise PayloadError("token answer must be an object")
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token.strip():
            raise PayloadError("token answer has no access_token")
        token_type = data.get("token_type")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() != "bearer"
        ):
            raise PayloadError("token_type must be Bearer")
        expires_in = data.get("expires_in")
        if isinstance(expires_in, str) and expires_in.strip().isascii() and expires_in.strip().isdigit():
            expires_in = int(expires_in.strip())  # RFC 6749 says a number; be lenient on quotes
        if not _is_int(expires_in) or expires_in <= 0:
            raise PayloadError("expires_in must be a positive integer")
        refresh_token = data.get("refresh_token")
        if refresh_token is not None and not isinstance(refresh_token, str):
            raise PayloadError("refresh_token must be a string")
        scope = data.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise PayloadError("scope must be a string")
        id_token = data.get("id_token")
        if id_token is not None and not isinstance(id_token, str):
            raise PayloadError("id_token must be a string")
        lifetime = timedelta(seconds=min(expires_in, EXPIRES_IN_MAX))
        return cls(
            access_token=access_token,
            refresh_token=refresh_token or None,
            expires_at=_aware(now_utc, "now_utc").astimezone(UTC) + lifetime,
            scope=scope,
            id_token=id_token or None,
        )

    def merge(self, stored_refresh_token: str | None) -> TokenSet:
        """This answer with the stored refresh token kept when the answer brings none."""
        if self.refresh_token is not None:
            return self
        return replace(self, refresh_token=stored_refresh_token or None)

    @property
    def has_calendar_scope(self) -> bool:
        """False when the user unticked calendar access on Google's granular consent screen.

        An answer without `scope` grants what was asked (RFC 6749 §5.1).
        https://developers.google.com/identity/protocols/oauth2/resources/granular-permissions
        """
        return self.scope is None or CALENDAR_SCOPE in self.scope.split()


def needs_refresh(
    expires_at: datetime | None, now: datetime, margin: timedelta = REFRESH_MARGIN
) -> bool:
    """True when the access token is unknown, expired, or expires within `margin`."""
    return expires_at is None or now >= expires_at - margin


def format_token_expiry(expires_at: datetime) -> str:
    """config `token_expiry`: ISO 8601 with a UTC offset (DESIGN §10)."""
    return expires_at.astimezone(UTC).isoformat()


def parse_token_expiry(value: Any) -> datetime | None:
    """config `token_expiry` as an aware UTC moment; None when absent or unreadable (refresh)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # written by an older version as naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


TokenErrorKind = Literal["invalid_grant", "invalid_client", "invalid_request", "transient", "other"]

TOKEN_ERROR_MESSAGES: dict[str, str] = {
    "invalid_grant": (
        "Google no longer accepts this connection (access was revoked or expired); "
        "reconnect Google Calendar."
    ),
    "invalid_client": (
        "Google refused the gateway's OAuth client; an administrator should check "
        "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET."
    ),
    "invalid_request": "Google refused the sign-in request; please try connecting again.",
    "transient": "Google's sign-in service is not answering; the next sync will retry.",
    "other": "Google refused to renew access; the next sync will retry.",
}


def classify_token_error(status: int | None, data: Any) -> TokenErrorKind:
    """What a failed token call means.

    invalid_grant: the refresh token or code is dead (revoked, expired, password changed):
    reconnect required, never retried.
    https://developers.google.com/identity/protocols/oauth2#expiration
    """
    error = data.get("error") if isinstance(data, dict) else None
    if error == "invalid_grant":
        return "invalid_grant"
    if error in ("invalid_client", "unauthorized_client"):
        return "invalid_client"
    if status is None or status == 429 or status >= 500:
        return "transient"
    if error in ("invalid_request", "unsupported_grant_type", "invalid_scope"):
        return "invalid_request"
    return "other"


# -- userinfo --------------------------------------------------------------------------------
# https://developers.google.com/identity/openid-connect/openid-connect#obtainuserinfo

EMAIL_MAX = 254  # RFC 5321 path limit
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


def userinfo_email(data: Any) -> str:
    """The account's e-mail address from the userinfo answer; PayloadError if absent or odd."""
    if not isinstance(data, dict):
        raise PayloadError("userinfo answer must be an object")
    email = data.get("email")
    if not isinstance(email, str):
        raise PayloadError("userinfo has no email (was the email scope granted?)")
    email = email.strip()
    if len(email) > EMAIL_MAX or not _EMAIL_RE.fullmatch(email) or _clean_text(email) != email:
        raise PayloadError("userinfo email is not an e-mail address")
    return email


# -- events ----------------------------------------------------------------------------------
# https://developers.google.com/calendar/api/v3/reference/events


def _known_zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _parse_moment(value: Any, time_zone: str | None, where: str) -> datetime:
    """An RFC 3339 `dateTime` as an aware datetime.

    Google requires an offset "unless a time zone is explicitly specified in timeZone"; an
    offset-less value is read in that zone (ZoneInfo), never in the server's zone.
    """
    if not isinstance(value, str):
        raise PayloadError(f"{where}.dateTime must be a string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError(f"{where}.dateTime is not RFC 3339") from exc
    if moment.tzinfo is None:
        tz = _known_zone(time_zone)
        if tz is None:
            raise PayloadError(f"{where}.dateTime has no offset and no known timeZone")
        moment = from_wall(moment, tz)
    return moment


def _parse_date(value: Any, where: str) -> date:
    if not isinstance(value, str):
        raise PayloadError(f"{where}.date must be a string")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise PayloadError(f"{where}.date is not yyyy-mm-dd") from exc


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"{where}.{key} must be a string")
    return value


@dataclass(frozen=True)
class CalendarEvent:
    """The fields of an event the connector uses. Cancelled ones may carry only id and status."""

    id: str
    status: str  # confirmed, tentative, cancelled
    summary: str = ""
    start: datetime | None = None  # aware, timed events only
    end: datetime | None = None
    all_day: bool = False
    start_date: date | None = None  # all-day events only; end_date is exclusive
    end_date: date | None = None
    time_zone: str | None = None
    self_response: str | None = None  # the user's responseStatus when they are an attendee
    organizer_self: bool = False
    private_properties: tuple[tuple[str, str], ...] = ()
    updated: datetime | None = None
    recurring_event_id: str | None = None
    event_type: str = "default"

    @property
    def private(self) -> dict[str, str]:
        return dict(self.private_properties)

    @classmethod
    def from_api(cls, item: Any) -> CalendarEvent:
        if not isinstance(item, dict):
            raise PayloadError("event must be an object")
        event_id = item.get("id")
        if not isinstance(event_id, str) or not event_id:
            raise PayloadError("event.id must be a non-empty string")
        status = item.get("status", "confirmed")
        if not isinstance(status, str):
            raise PayloadError("event.status must be a string")
        summary = _optional_str(item, "summary", "event") or ""
        updated = None
        if isinstance(item.get("updated"), str):
            try:
                updated = datetime.fromisoformat(item["updated"])
            except ValueError:
                updated = None  # informational only: not worth refusing the event for
        if status == "cancelled" and "start" not in item:
            # showDeleted=true: a deleted event or instance is only its id and status.
            return cls(id=event_id, status=status, summary=summary, updated=updated)

        start, end = item.get("start"), item.get("end")
        if not isinstance(start, dict) or not isinstance(end, dict):
            raise PayloadError("event.start and event.end must be objects")
        time_zone = _optional_str(start, "timeZone", "event.start")
        all_day = "date" in start and "dateTime" not in start
        timed: dict[str, Any] = {}
        if all_day:
            timed["start_date"] = _parse_date(start.get("date"), "event.start")
            timed["end_date"] = _parse_date(end.get("date"), "event.end")
        else:
            timed["start"] = _parse_moment(start.get("dateTime"), time_zone, "event.start")
            end_zone = _optional_str(end, "timeZone", "event.end") or time_zone
            timed["end"] = _parse_moment(end.get("dateTime"), end_zone, "event.end")

        self_response = None
        attendees = item.get("attendees")
        if attendees is not None and not isinstance(attendees, list):
            raise PayloadError("event.attendees must be a list")
        for attendee in attendees or ():
            if isinstance(attendee, dict) and attendee.get("self") is True:
                value = attendee.get("responseStatus")
                self_response = value if isinstance(value, str) else None
                break
        organizer = item.get("organizer")
        organizer_self = isinstance(organizer, dict) and organizer.get("self") is True

        private: tuple[tuple[str, str], ...] = ()
        extended = item.get("extendedProperties")
        if isinstance(extended, dict) and isinstance(extended.get("private"), dict):
            private = tuple(
                sorted(
                    (k, v)
                    for k, v in extended["private"].items()
                    if isinstance(k, str) and isinstance(v, str)
                )
            )
        event_type = item.get("eventType")
        return cls(
            id=event_id,
            status=status,
            summary=summary,
            all_day=all_day,
            time_zone=time_zone,
            self_response=self_response,
            organizer_self=organizer_self,
            private_properties=private,
            updated=updated,
            recurring_event_id=_optional_str(item, "recurringEventId", "event"),
            event_type=event_type if isinstance(event_type, str) else "default",
            **timed,
        )


@dataclass(frozen=True)
class InvalidEvent:
    """An item of a page that could not be read: reported, not allowed to sink the page."""

    event_id: str | None
    error: str


@dataclass(frozen=True)
class EventsPage:
    items: tuple[CalendarEvent, ...]
    next_page_token: str | None = None
    invalid: tuple[InvalidEvent, ...] = ()
    time_zone: str | None = None  # the calendar's own zone

    @classmethod
    def from_api(cls, data: Any) -> EventsPage:
        if not isinstance(data, dict):
            raise PayloadError("events answer must be an object")
        raw_items = data.get("items", [])
        if not isinstance(raw_items, list):
            raise PayloadError("events.items must be a list")
        items: list[CalendarEvent] = []
        invalid: list[InvalidEvent] = []
        for raw in raw_items:
            try:
                items.append(CalendarEvent.from_api(raw))
            except PayloadError as exc:
                raw_id = raw.get("id") if isinstance(raw, dict) else None
                invalid.append(InvalidEvent(raw_id if isinstance(raw_id, str) else None, str(exc)))
        token = data.get("nextPageToken")
        if token is not None and (not isinstance(token, str) or not token):
            raise PayloadError("nextPageToken must be a non-empty string")
        return cls(
            items=tuple(items),
            next_page_token=token,
            invalid=tuple(invalid),
            time_zone=_optional_str(data, "timeZone", "events"),
        )


# -- import ----------------------------------------------------------------------------------

TT_TAG = "[TT]"
# Event types that are not time worked (the default, focusTime and fromGmail ones may be).
# https://developers.google.com/calendar/api/guides/event-types
NOT_WORK_EVENT_TYPES = frozenset({"outOfOffice", "workingLocation", "birthday"})

SkipReason = Literal[
    "cancelled",
    "exported",
    "tagged",
    "all_day",
    "declined",
    "not_work",
    "no_duration",
    "in_progress",
]


@dataclass(frozen=True)
class Import:
    event: CalendarEvent


@dataclass(frozen=True)
class Skip:
    event_id: str
    reason: SkipReason


def import_decision(
    event: CalendarEvent,
    *,
    now: datetime | None = None,
    is_own: Callable[[str], bool] | None = None,
) -> Import | Skip:
    """Whether an event becomes a time entry, or why not.

    `is_own` recognises the gateway's exported event ids (default: is_export_event_id), so an
    export is never imported back even after its [TT] title was edited. With `now`, events that
    have not ended yet wait for a later sync.
    """
    own = is_own or is_export_event_id
    if event.status == "cancelled":
        return Skip(event.id, "cancelled")
    if own(event.id) or event.private.get(EXPORT_MARKER_KEY) == EXPORT_MARKER_VALUE:
        return Skip(event.id, "exported")
    if TT_TAG in event.summary:
        return Skip(event.id, "tagged")
    if event.all_day or event.start is None or event.end is None:
        return Skip(event.id, "all_day")
    if event.self_response == "declined":
        return Skip(event.id, "declined")
    if event.event_type in NOT_WORK_EVENT_TYPES:
        return Skip(event.id, "not_work")
    if event.end <= event.start:  # aware comparison: real instants, whatever the offsets
        return Skip(event.id, "no_duration")
    if now is not None and event.end > now:
        return Skip(event.id, "in_progress")
    return Import(event)


class EntryTimes(NamedTuple):
    start: datetime  # naive wall time in the app zone
    end: datetime
    duration_seconds: int


def entry_times(event: CalendarEvent, app_tz: tzinfo) -> EntryTimes:
    """An event's start and end as naive app-zone wall times, and its real length in seconds.

    The duration comes from the UTC instants: across a DST change the wall-clock difference is
    an hour off (and Python subtracts two datetimes sharing one tzinfo as wall times).
    """
    if event.start is None or event.end is None:
        raise ValueError("only timed events have entry times")
    start_utc, end_utc = event.start.astimezone(UTC), event.end.astimezone(UTC)
    duration = int((end_utc - start_utc).total_seconds())
    return EntryTimes(to_wall(start_utc, app_tz), to_wall(end_utc, app_tz), duration)


NOTES_SUMMARY_MAX = 500
UNTITLED = "(No title)"  # what Google Calendar shows for an event without a summary


def gcal_marker(event_id: str) -> str:
    return f"[gcal:{event_id}]"


def entry_notes(event: CalendarEvent) -> str:
    """`{summary} [gcal:{id}]`: the marker links the entry to its event (and adopts old ones)."""
    summary = " ".join(_clean_text(event.summary).split()) or UNTITLED
    return f"{_cap(summary, NOTES_SUMMARY_MAX)} {gcal_marker(event.id)}"


# Event ids are base32hex, but recurring instances add "_20261125T083000Z" (upper case) and
# imported calendars may carry other ids; accept the characters an id can plausibly hold.
GCAL_MARKER_RE = re.compile(r"\[gcal:([A-Za-z0-9_\-.@]{1,1024})\]")


def marked_event_ids(notes: str | None) -> tuple[str, ...]:
    """The event ids named by [gcal:…] markers in an entry's notes."""
    return tuple(GCAL_MARKER_RE.findall(notes or ""))


# -- sync window and paths -------------------------------------------------------------------
# https://developers.google.com/calendar/api/v3/reference/events/list

DAYS_BACK_DEFAULT, DAYS_BACK_MIN, DAYS_BACK_MAX = 7, 1, 30
PAGE_SIZE = 250  # Google's default is 250, its maximum 2500
MAX_PAGES = 40  # a guard for the caller's paging loop: 10,000 events in 30 days is plenty


def clamp_days_back(value: Any) -> int:
    """config `sync_days_back` as an int in 1–30; unreadable values give the default 7."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not _is_int(value):
        return DAYS_BACK_DEFAULT
    return max(DAYS_BACK_MIN, min(DAYS_BACK_MAX, value))


def rfc3339(moment: datetime) -> str:
    """An aware moment as RFC 3339 UTC with a Z and whole seconds."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def list_params(
    now_utc: datetime, days_back: Any = DAYS_BACK_DEFAULT, page_token: str | None = None
) -> dict[str, str]:
    """Query of events.list for the import window: the last `days_back` days up to now.

    singleEvents expands recurring events into instances (orderBy=startTime requires it);
    showDeleted returns cancelled events and instances so linked entries can follow them.
    timeMin bounds the events' end, timeMax their start: events still running are listed.
    """
    _aware(now_utc, "now_utc")
    params = {
        "timeMin": rfc3339(now_utc - timedelta(days=clamp_days_back(days_back))),
        "timeMax": rfc3339(now_utc),
        "singleEvents": "true",
        "orderBy": "startTime",
        "maxResults": str(PAGE_SIZE),
        "showDeleted": "true",
    }
    if page_token:
        params["pageToken"] = page_token
    return params


def _calendar_segment(calendar_id: str) -> str:
    calendar_id = calendar_id.strip()
    if not calendar_id:
        raise ValueError("calendar_id must not be blank")
    # safe="": "@" and "#" (holiday calendars) and "/" must not be read as URL syntax.
    return quote(calendar_id, safe="")


def calendar_path(calendar_id: str) -> str:
    """`/calendars/{calendarId}/events`, the id percent-encoded (append to the API base URL)."""
    return f"/calendars/{_calendar_segment(calendar_id)}/events"


def event_path(calendar_id: str, event_id: str) -> str:
    """`/calendars/{calendarId}/events/{eventId}` for get, update and delete."""
    return f"{calendar_path(calendar_id)}/{quote(event_id, safe='')}"


SYNC_DIRECTIONS = ("import", "export", "both")
CALENDAR_ID_MAX = 1024


def normalize_sync_direction(value: Any) -> str:
    """config `sync_direction`: import, export or both (default import); ValueError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "import"
    if not isinstance(value, str) or value.strip().lower() not in SYNC_DIRECTIONS:
        raise ValueError("sync_direction must be import, export or both")
    return value.strip().lower()


def normalize_calendar_id(value: Any) -> str:
    """config `calendar_id`: stripped, blank → "primary"; ValueError for anything odd."""
    if value is None:
        return "primary"
    if not isinstance(value, str):
        raise ValueError("calendar_id must be a string")
    value = value.strip()
    if not value:
        return "primary"
    if len(value) > CALENDAR_ID_MAX or any(ch < " " for ch in value):
        raise ValueError("calendar_id is not a calendar id")
    return value


# -- export ----------------------------------------------------------------------------------
# https://developers.google.com/calendar/api/v3/reference/events/insert

TITLE_MAX = 200
DESCRIPTION_MAX = 8000
EXPORT_MARKER_KEY = "tt_gateway"
EXPORT_MARKER_VALUE = "1"
EXPORT_ENTRY_KEY = "tt_entry_id"
EM_DASH = "—"


def event_title(project: str, task_or_notes: str | None) -> str:
    """`[TT] {project} — {task or notes}` on one line (DESIGN §10), at most TITLE_MAX chars."""
    project_name = " ".join(_clean_text(project or "").split()) or "No project"
    detail = " ".join(_clean_text(task_or_notes or "").split())
    title = f"{TT_TAG} {project_name} {EM_DASH} {detail}" if detail else f"{TT_TAG} {project_name}"
    return _cap(title, TITLE_MAX)


@dataclass(frozen=True)
class ExportEntry:
    """The fields of a finished time entry that an exported event is made of."""

    id: int
    start_time: datetime  # naive wall time in the app zone, as TimeTracker stores it
    end_time: datetime
    project_name: str
    task_name: str | None = None
    notes: str | None = None


def export_event_body(
    entry: ExportEntry, app_tz: tzinfo, *, event_id: str | None = None
) -> dict[str, Any]:
    """The events.insert body for a finished entry; times as UTC instants, timeZone "UTC".

    A wall time repeated when clocks go back is read as its first occurrence (fold=0): the
    stored naive value cannot tell which one it was.
    """
    start = from_wall(entry.start_time, app_tz).astimezone(UTC)
    end = from_wall(entry.end_time, app_tz).astimezone(UTC)
    if end <= start:
        raise ValueError("an exported entry must end after it starts")
    notes = _clean_text(entry.notes or "").strip()
    footer = f"Exported from TimeTracker (time entry #{entry.id})."
    description = f"{_cap(notes, DESCRIPTION_MAX)}\n\n{footer}" if notes else footer
    body: dict[str, Any] = {
        "summary": event_title(entry.project_name, entry.task_name or entry.notes),
        "description": description,
        "start": {"dateTime": rfc3339(start), "timeZone": "UTC"},
        "end": {"dateTime": rfc3339(end), "timeZone": "UTC"},
        # Private properties are visible to this app only; they mark the event as ours even
        # when the user renames it.
        # https://developers.google.com/calendar/api/guides/extended-properties
        "extendedProperties": {
            "private": {EXPORT_MARKER_KEY: EXPORT_MARKER_VALUE, EXPORT_ENTRY_KEY: str(entry.id)}
        },
    }
    if event_id is not None:
        body["id"] = event_id
    return body


# Client-chosen ids: base32hex characters (a–v, 0–9), 5 to 1024 long, unique per calendar
# (events resource, `id`). Ours: a fixed prefix + base32hex of SHA-256(namespace, ids), so a
# retried or repeated insert of one entry answers 409 duplicate instead of a second event.
EXPORT_ID_PREFIX = "ttg0"
_EXPORT_ID_NAMESPACE = b"timetracker-gateway/google-calendar-export/v1"
_EXPORT_ID_LENGTH = len(EXPORT_ID_PREFIX) + 52  # 256 bits in base32 is 52 characters unpadded
_EVENT_ID_RE = re.compile(r"[a-v0-9]{5,1024}")


def export_event_id(integration_id: int, entry_id: int) -> str:
    """The deterministic Calendar event id of an exported entry."""
    message = b"\x00".join(
        (_EXPORT_ID_NAMESPACE, str(integration_id).encode(), str(entry_id).encode())
    )
    digest = hashlib.sha256(message).digest()
    encoded = base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()
    return EXPORT_ID_PREFIX + encoded


def is_valid_event_id(event_id: str) -> bool:
    """True for an id Google accepts from a client (base32hex, 5–1024 characters)."""
    return _EVENT_ID_RE.fullmatch(event_id) is not None


def is_export_event_id(event_id: str) -> bool:
    """True for ids made by export_event_id (Google's own ids are not this prefix and length)."""
    return (
        len(event_id) == _EXPORT_ID_LENGTH
        and event_id.startswith(EXPORT_ID_PREFIX)
        and is_valid_event_id(event_id)
    )


# Entries' end_time is naive app-zone wall time, so the window must be expressed in it.
EXPORT_OVERLAP = timedelta(minutes=15)
# Longer than any real DST shift (2 h at Troll station): how far ahead to look for a fall-back.
_DST_LOOKAHEAD = timedelta(hours=3)


def export_window(
    connected_at_utc: datetime,
    last_export_utc: datetime | None,
    now_utc: datetime,
    app_tz: tzinfo,
    overlap: timedelta = EXPORT_OVERLAP,
) -> tuple[datetime, datetime]:
    """(lo, hi): export the entries with lo <= end_time <= hi (naive app-zone wall times).

    Why it cannot miss an entry:
    - A timer stopped while a sync runs may commit after the sync read the entries, with an
      end_time just before that sync's `now`. The next window starts `overlap` before the
      previous `now` (the caller stores `now_utc` as last_export only after a full run), so
      such entries, and a few minutes of clock skew between hosts, fall in the next window.
    - Wall time is not monotonic: when clocks go back, the hour after the change has smaller
      wall times than the hour before. lo is lowered by that shift when a fall-back follows
      lo closely, so an entry ending just after the change is not below lo.
    - Entries ending after `now` (skew, entries typed in ahead) are beyond hi; the next lo is
      below this hi, so they are taken once their end has passed.
    Repeats are harmless: event ids are deterministic and Google answers 409 duplicate.
    Never before connected_at (DESIGN §10: no older history), except by the DST shift itself.
    """
    for moment, name in ((connected_at_utc, "connected_at_utc"), (now_utc, "now_utc")):
        _aware(moment, name)
    if last_export_utc is not None:
        _aware(last_export_utc, "last_export_utc")
    lo_utc = connected_at_utc
    if last_export_utc is not None:
        lo_utc = max(connected_at_utc, last_export_utc - overlap)
    lo_utc = lo_utc.astimezone(UTC)
    offset_at_lo = lo_utc.astimezone(app_tz).utcoffset() or timedelta(0)
    offset_after = (lo_utc + _DST_LOOKAHEAD).astimezone(app_tz).utcoffset() or timedelta(0)
    fall_back = max(offset_at_lo - offset_after, timedelta(0))
    return to_wall(lo_utc, app_tz) - fall_back, to_wall(now_utc, app_tz)


# -- API errors and rate limits --------------------------------------------------------------
# https://developers.google.com/calendar/api/guides/errors
# https://developers.google.com/calendar/api/guides/quota

ApiErrorKind = Literal[
    "unauthorized", "rate_limited", "duplicate", "not_found", "gone", "forbidden", "server", "other"
]

RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)

API_ERROR_MESSAGES: dict[str, str] = {
    "unauthorized": "Google no longer accepts the saved sign-in; reconnect Google Calendar.",
    "rate_limited": "Google asked us to slow down; the next sync will retry.",
    "duplicate": "This entry is already in Google Calendar.",
    "not_found": "Google Calendar could not find the calendar; check the calendar ID.",
    "gone": "Google Calendar no longer has this item; the next sync starts afresh.",
    "forbidden": (
        "Google refused access to this calendar; check the calendar ID, "
        "or reconnect and allow calendar access."
    ),
    "server": "Google Calendar is having trouble; the next sync will retry.",
    "other": "Google Calendar refused the request.",
}


@dataclass(frozen=True)
class ApiError:
    kind: ApiErrorKind
    message: str  # plain, for the user (last_error)
    status: int | None = None
    reason: str | None = None  # Google's errors[0].reason, for logs

    @property
    def retry_later(self) -> bool:
        """Worth trying again at the next sync (or after a wait)."""
        return self.kind in ("rate_limited", "server")


def error_reason(data: Any) -> str | None:
    """Google's `error.errors[0].reason` (e.g. rateLimitExceeded), or None."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    errors = error.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict) and isinstance(item.get("reason"), str):
                return item["reason"]
    return None


def _error_detail(data: Any) -> str | None:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return " ".join(_clean_text(error["message"]).split())[:200] or None
    return None


def classify_api_error(status: int | None, data: Any) -> ApiError:
    """What a failed Calendar API call means for the sync.

    unauthorized: refresh the token once and retry; if that fails, reconnect.
    rate_limited (429, or 403 with a usageLimits reason): stop this user's sync for now.
    duplicate (409 on insert with our id): the entry was exported already (or its event was
    deleted by the user, whose id Google keeps: not re-created, on purpose).
    """
    reason = error_reason(data)

    def make(kind: ApiErrorKind, message: str | None = None) -> ApiError:
        return ApiError(kind, message or API_ERROR_MESSAGES[kind], status, reason)

    if status is None or status >= 500:
        return make("server")
    if status == 401:
        return make("unauthorized")
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        return make("rate_limited")
    if status == 403:
        return make("forbidden")
    if status == 404:
        return make("not_found")
    if status == 409 and reason in (None, "duplicate"):
        return make("duplicate")
    if status == 410:
        return make("gone")
    detail = _error_detail(data)
    base = f"Google Calendar refused the request (HTTP {status})"
    return make("other", f"{base}: {detail}" if detail else f"{base}.")


BACKOFF_BASE = 1.0
BACKOFF_CAP = 32.0  # Google's examples back off to at most 32-64 s
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})



def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = _header(headers, "retry-after")
    return None if value is None else parse_retry_after(value, now)


def retry_delay(
    status: int,
    headers: Mapping[str, str],
    now: float,
    attempt: int,
    data: Any = None,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before retry number `attempt` (1, 2, …), or None: do not retry.

    Retried: 429, 5xx, and 403 whose body says usageLimits (so this needs the body). Google's
    Retry-After counts when given (uncapped here: the caller gives up if it is too long); else
    exponential backoff 1, 2, 4 … s plus up to 1 s of jitter, capped at BACKOFF_CAP.
    https://developers.google.com/calendar/api/guides/quota#backoff
    """
    rate_limited_403 = status == 403 and error_reason(data) in RATE_LIMIT_REASONS
    if status not in RETRY_STATUSES and not rate_limited_403:
        return None
    asked = _retry_after(headers, now)
    if asked is not None:
        return asked
    return min(BACKOFF_BASE * 2 ** max(attempt - 1, 0) + rng(), BACKOFF_CAP)


def retry_policy(status: int, headers: Mapping[str, str], now: float) -> float | None:
    """gateway.connectors.http.RetryPolicy for Google calls: Retry-After on 403/429/5xx.

    The HTTP client cannot show the body to a policy, so a 403 is waited on only when Google
    sent Retry-After; a 403 without it comes back to the caller, whose classify_api_error
    reads the body (rate_limited → the next sync retries). Without Retry-After, None lets
    the client apply its own backoff to 429/502/503/504.
    """
    if status not in RETRY_STATUSES and status != 403:
        return None
    return _retry_after(headers, now)
