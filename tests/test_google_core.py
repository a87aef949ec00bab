"""Google Calendar connector core: recorded answers, RFC 7636's PKCE vector, DST edges, no I/O."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from multidict import CIMultiDict, MultiDict

from gateway.connectors.google import core
from tests.conftest import FIXTURES

GOOGLE = FIXTURES / "google"
ROME = ZoneInfo("Europe/Rome")
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def load(name: str) -> Any:
    return json.loads((GOOGLE / f"{name}.json").read_text())


def test_fixtures_are_there() -> None:
    names = {p.stem for p in GOOGLE.glob("*.json")}
    assert {
        "token.authorization_code",
        "token.refresh",
        "token.invalid_grant",
        "userinfo",
        "events.list.page1",
        "events.list.page2",
        "events.insert.ok",
        "error.401",
        "error.409.duplicate",
        "error.429",
    } <= names


# -- PKCE, state, consent URL ----------------------------------------------------------------

# RFC 7636 Appendix B.
RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_challenge_reproduces_rfc7636_appendix_b() -> None:
    assert core.pkce_challenge(RFC7636_VERIFIER) == RFC7636_CHALLENGE


def test_new_pkce_is_s256_of_an_unreserved_verifier() -> None:
    verifier, challenge = core.new_pkce()
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert "=" not in challenge
    assert core.new_pkce()[0] != verifier


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + " ", "é" * 43])
def test_pkce_refuses_bad_verifiers(verifier: str) -> None:
    with pytest.raises(ValueError):
        core.pkce_challenge(verifier)


def test_new_state_is_random_and_long() -> None:
    first, second = core.new_state(), core.new_state()
    assert first != second
    assert len(first) >= 43


def test_authorize_url_carries_every_parameter() -> None:
    url = core.authorize_url(
        "https://accounts.google.com/o/oauth2/v2/auth",
        "client-123.apps.googleusercontent.com",
        "https://tt.example.com/gateway/integrations/google/callback",
        "state-abc",
        RFC7636_CHALLENGE,
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "accounts.google.com",
        "/o/oauth2/v2/auth",
    )
    query = parse_qs(parts.query)
    assert {k: v[0] for k, v in query.items()} == {
        "response_type": "code",
        "client_id": "client-123.apps.googleusercontent.com",
        "redirect_uri": "https://tt.example.com/gateway/integrations/google/callback",
        "scope": "openid email https://www.googleapis.com/auth/calendar.events",
        "state": "state-abc",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "code_challenge": RFC7636_CHALLENGE,
        "code_challenge_method": "S256",
    }
    assert all(len(v) == 1 for v in query.values())
    assert "%20" in parts.query  # spaces in scope encoded as %20, not left raw


def test_authorize_url_keeps_an_existing_query() -> None:
    url = core.authorize_url(
        "http://127.0.0.1:9999/auth?hd=example.com&state=stale", "cid", "http://x/cb", "st", "ch"
    )
    query = parse_qs(urlsplit(url).query)
    assert query["hd"] == ["example.com"]
    assert query["state"] == ["st"]  # ours wins, and only once
    assert urlsplit(url).path == "/auth"


def test_token_request_bodies() -> None:
    body = core.authorization_code_body("cid", "csecret", "4/0code", "http://x/cb", "verif")
    assert body == {
        "grant_type": "authorization_code",
        "code": "4/0code",
        "redirect_uri": "http://x/cb",
        "client_id": "cid",
        "client_secret": "csecret",
        "code_verifier": "verif",
    }
    assert core.refresh_token_body("cid", "csecret", "1//r") == {
        "grant_type": "refresh_token",
        "refresh_token": "1//r",
        "client_id": "cid",
        "client_secret": "csecret",
    }
    assert core.revoke_body("1//r") == {"token": "1//r"}


# -- callback guards -------------------------------------------------------------------------

PENDING = core.OAuthState(state="state-abc", verifier=RFC7636_VERIFIER, created_at=NOW, user_id=7)
LATER = NOW + timedelta(seconds=30)


def test_callback_ok_returns_code_and_verifier() -> None:
    result = core.check_callback({"state": "state-abc", "code": "4/0code"}, PENDING, LATER)
    assert result == core.CallbackOk(code="4/0code", verifier=RFC7636_VERIFIER)
    assert "4/0code" not in repr(result)


def test_callback_reads_an_aiohttp_multidict() -> None:
    query = MultiDict([("state", "state-abc"), ("code", "4/0code"), ("scope", "email")])
    assert isinstance(core.check_callback(query, PENDING, LATER), core.CallbackOk)


@pytest.mark.parametrize(
    ("query", "pending", "now", "reason"),
    [
        ({"error": "access_denied", "state": "state-abc"}, PENDING, LATER, "access_denied"),
        ({"error": "server_error", "state": "state-abc"}, PENDING, LATER, "provider_error"),
        ({"code": "4/0code"}, PENDING, LATER, "state_missing"),
        ({"state": "", "code": "4/0code"}, PENDING, LATER, "state_missing"),
        ({"state": "state-abc", "code": "4/0code"}, None, LATER, "state_unknown"),
        ({"state": "state-xyz", "code": "4/0code"}, PENDING, LATER, "state_mismatch"),
        ({"state": "stäte-abc", "code": "4/0code"}, PENDING, LATER, "state_mismatch"),
        (
            {"state": "state-abc", "code": "4/0code"},
            PENDING,
            NOW + timedelta(seconds=601),
            "state_expired",
        ),
        ({"state": "state-abc"}, PENDING, LATER, "code_missing"),
        ({"state": "state-abc", "code": ""}, PENDING, LATER, "code_missing"),
    ],
)
def test_callback_guards(
    query: dict[str, str], pending: core.OAuthState | None, now: datetime, reason: str
) -> None:
    result = core.check_callback(query, pending, now)
    assert isinstance(result, core.CallbackError)
    assert result.reason == reason
    assert result.message.endswith(".")
    assert "_" not in result.message  # a sentence, not a code


def test_access_denied_reads_as_a_choice() -> None:
    result = core.check_callback({"error": "access_denied"}, PENDING, LATER)
    assert isinstance(result, core.CallbackError)
    assert result.message == "You declined access to Google Calendar, so nothing was connected."


def test_state_expiry_edges() -> None:
    assert not PENDING.is_expired(NOW + timedelta(seconds=600))
    assert PENDING.is_expired(NOW + timedelta(seconds=600, microseconds=1))
    assert PENDING.is_expired(NOW + timedelta(seconds=61), ttl=60)
    assert not PENDING.is_expired(NOW - timedelta(seconds=30))  # another replica's clock
    assert PENDING.is_expired(NOW - timedelta(hours=1))


def test_oauth_state_round_trips_through_the_session() -> None:
    saved = json.loads(json.dumps(PENDING.to_session()))
    assert core.OAuthState.from_session(saved) == PENDING
    assert RFC7636_VERIFIER not in repr(PENDING)
    assert core.OAuthState.from_session(None) is None
    assert core.OAuthState.from_session({**saved, "user_id": "7"}) is None
    assert core.OAuthState.from_session({**saved, "created_at": "yesterday"}) is None
    assert core.OAuthState.from_session({**saved, "created_at": "2026-11-27T10:00:00"}) is None


# -- token answers ---------------------------------------------------------------------------


def test_code_exchange_answer() -> None:
    tokens = core.TokenSet.from_answer(load("token.authorization_code"), NOW)
    assert tokens.access_token == "ya29.a0AfH6SMBx-example-access"
    assert tokens.refresh_token == "1//0gexample-refresh-token"
    assert tokens.expires_at == NOW + timedelta(seconds=3599)
    assert tokens.expires_at.tzinfo is not None
    assert tokens.id_token == "eyJhbGciOiJSUzI1NiJ9.e30.sig"
    assert tokens.has_calendar_scope
    assert "ya29" not in repr(tokens) and "1//0g" not in repr(tokens)


def test_refresh_answer_keeps_the_stored_refresh_token() -> None:
    tokens = core.TokenSet.from_answer(load("token.refresh"), NOW)
    assert tokens.refresh_token is None
    merged = tokens.merge("1//stored")
    assert merged.refresh_token == "1//stored"
    assert merged.access_token == "ya29.a0AfH6SMBx-example-refreshed"
    # A rotated refresh token in the answer replaces the stored one.
    rotated = core.TokenSet.from_answer({**load("token.refresh"), "refresh_token": "1//new"}, NOW)
    assert rotated.merge("1//stored").refresh_token == "1//new"


def test_expires_in_is_read_never_assumed() -> None:
    answer = load("token.refresh")
    short = core.TokenSet.from_answer({**answer, "expires_in": 120}, NOW)
    assert short.expires_at == NOW + timedelta(seconds=120)
    huge = core.TokenSet.from_answer({**answer, "expires_in": 10**9}, NOW)
    assert huge.expires_at == NOW + timedelta(seconds=core.EXPIRES_IN_MAX)


@pytest.mark.parametrize(
    "changes",
    [
        {"expires_in": None},
        {"expires_in": 0},
        {"expires_in": -5},
        {"expires_in": 3599.5},
        {"expires_in": True},
        {"expires_in": "soon"},
        {"access_token": ""},
        {"access_token": None},
        {"token_type": "MAC"},
        {"refresh_token": 42},
        {"scope": ["email"]},
    ],
)
def test_malformed_token_answers_are_refused(changes: dict[str, Any]) -> None:
    answer = {**load("token.authorization_code"), **changes}
    answer = {k: v for k, v in answer.items() if v is not None}
    with pytest.raises(core.PayloadError):
        core.TokenSet.from_answer(answer, NOW)


def test_token_answer_that_is_not_an_object() -> None:
    with pytest.raises(core.PayloadError):
        core.TokenSet.from_answer(["access_token"], NOW)


def test_unticked_calendar_scope_is_seen() -> None:
    answer = {**load("token.authorization_code"), "scope": "openid email"}
    assert not core.TokenSet.from_answer(answer, NOW).has_calendar_scope


def test_needs_refresh_within_five_minutes() -> None:
    expires = NOW + timedelta(minutes=10)
    assert not core.needs_refresh(expires, NOW)
    assert not core.needs_refresh(expires, NOW + timedelta(minutes=4, seconds=59))
    assert core.needs_refresh(expires, NOW + timedelta(minutes=5))
    assert core.needs_refresh(expires, NOW + timedelta(hours=1))
    assert core.needs_refresh(None, NOW)


def test_token_expiry_round_trip() -> None:
    expires = datetime(2026, 11, 27, 11, 0, tzinfo=ROME)
    text = core.format_token_expiry(expires)
    assert text == "2026-11-27T10:00:00+00:00"
    assert core.parse_token_expiry(text) == expires
    assert core.parse_token_expiry("2026-11-27T10:00:00") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert core.parse_token_expiry("garbage") is None
    assert core.parse_token_expiry(None) is None


@pytest.mark.parametrize(
    ("status", "data", "kind"),
    [
        (400, load("token.invalid_grant"), "invalid_grant"),
        (401, {"error": "invalid_client", "error_description": "Unauthorized"}, "invalid_client"),
        (400, {"error": "unauthorized_client"}, "invalid_client"),
        (400, {"error": "invalid_request"}, "invalid_request"),
        (503, None, "transient"),
        (429, {"error": "rate_limit_exceeded"}, "transient"),
        (None, None, "transient"),
        (400, {"error": "something_new"}, "other"),
    ],
)
def test_classify_token_error(status: int | None, data: Any, kind: str) -> None:
    assert core.classify_token_error(status, data) == kind
    assert core.TOKEN_ERROR_MESSAGES[kind]


def test_invalid_grant_asks_to_reconnect() -> None:
    assert "reconnect" in core.TOKEN_ERROR_MESSAGES["invalid_grant"]


# -- userinfo --------------------------------------------------------------------------------


def test_userinfo_email() -> None:
    assert core.userinfo_email(load("userinfo")) == "alice@example.com"


@pytest.mark.parametrize(
    "data",
    [
        {"sub": "1"},
        {"email": 7},
        {"email": "not-an-address"},
        {"email": "a@b@c"},
        {"email": "a\x00@example.com"},
        {"email": "x" * 250 + "@example.com"},
        "alice@example.com",
    ],
)
def test_userinfo_email_refuses_odd_answers(data: Any) -> None:
    with pytest.raises(core.PayloadError):
        core.userinfo_email(data)


# -- events pages ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events() -> dict[str, core.CalendarEvent]:
    page1 = core.EventsPage.from_api(load("events.list.page1"))
    page2 = core.EventsPage.from_api(load("events.list.page2"))
    assert page1.next_page_token == "CigKGjRhbmN0ZXN0cGFnZXRva2Vu"
    assert page2.next_page_token is None
    assert page1.invalid == () and page2.invalid == ()
    assert page1.time_zone == "Europe/Rome"
    items = [*page1.items, *page2.items]
    assert [e.id for e in items] == [
        "evt001abc",
        "evt002abc",
        "evt003abc",
        "evt004abc",
        "evt005abc",
        "evt099abc",
        "evt006abc",
    ]
    return {e.id: e for e in items}


def test_timed_event_in_rome(events: dict[str, core.CalendarEvent]) -> None:
    event = events["evt001abc"]
    assert event.summary == "Client call"
    assert event.status == "confirmed"
    assert event.time_zone == "Europe/Rome"
    assert event.start == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert event.organizer_self
    assert event.updated == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert core.import_decision(event, now=NOW) == core.Import(event)
    assert core.entry_times(event, ROME) == (
        datetime(2026, 11, 24, 10, 0),
        datetime(2026, 11, 24, 11, 30),
        5400,
    )
    assert core.entry_notes(event) == "Client call [gcal:evt001abc]"


def test_all_day_event_is_skipped(events: dict[str, core.CalendarEvent]) -> None:
    event = events["evt002abc"]
    assert event.all_day and event.start is None
    assert (event.start_date, event.end_date) == (date(2026, 11, 25), date(2026, 11, 26))
    assert core.import_decision(event) == core.Skip("evt002abc", "all_day")
    with pytest.raises(ValueError):
        core.entry_times(event, ROME)


def test_tt_tagged_event_is_skipped(events: dict[str, core.CalendarEvent]) -> None:
    assert core.import_decision(events["evt003abc"]) == core.Skip("evt003abc", "tagged")


def test_recurring_instance_is_imported(events: dict[str, core.CalendarEvent]) -> None:
    event = events["evt004abc"]
    assert event.recurring_event_id == "standup001"
    assert isinstance(core.import_decision(event, now=NOW), core.Import)
    assert core.entry_times(event, ROME) == (
        datetime(2026, 11, 25, 9, 30),
        datetime(2026, 11, 25, 9, 45),
        900,
    )


def test_event_across_midnight(events: dict[str, core.CalendarEvent]) -> None:
    event = events["evt005abc"]
    assert event.time_zone is None  # offsets only, no timeZone field
    assert isinstance(core.import_decision(event, now=NOW), core.Import)
    assert core.entry_times(event, ROME) == (
        datetime(2026, 11, 26, 23, 0),
        datetime(2026, 11, 27, 1, 0),
        7200,
    )


def test_cancelled_event_with_only_id_and_status(events: dict[str, core.CalendarEvent]) -> None:
    event = events["evt099abc"]
    assert event.status == "cancelled"
    assert event.start is None and event.summary == ""
    assert core.import_decision(event) == core.Skip("evt099abc", "cancelled")


def test_new_york_event_lands_at_rome_wall_time(events: dict[str, core.CalendarEvent]) -> None:
    event = events["evt006abc"]
    assert event.time_zone == "America/New_York"
    assert isinstance(core.import_decision(event, now=NOW), core.Import)
    assert core.entry_times(event, ROME) == (
        datetime(2026, 11, 26, 15, 0),
        datetime(2026, 11, 26, 16, 0),
        3600,
    )


def test_insert_answer_parses_as_our_own_kind_of_event() -> None:
    event = core.CalendarEvent.from_api(load("events.insert.ok"))
    assert event.summary.startswith("[TT] Website — ")
    assert core.import_decision(event) == core.Skip("evt500abc", "tagged")


def event_item(**changes: Any) -> dict[str, Any]:
    item = dict(load("events.list.page1")["items"][0])
    item.update(changes)
    return item


def test_declined_invitation_is_skipped() -> None:
    item = event_item(
        organizer={"email": "bob@example.com"},
        attendees=[
            {"email": "bob@example.com", "organizer": True, "responseStatus": "accepted"},
            {"email": "alice@example.com", "self": True, "responseStatus": "declined"},
        ],
    )
    event = core.CalendarEvent.from_api(item)
    assert event.self_response == "declined" and not event.organizer_self
    assert core.import_decision(event) == core.Skip("evt001abc", "declined")
    accepted = core.CalendarEvent.from_api(
        event_item(attendees=[{"email": "a@x", "self": True, "responseStatus": "accepted"}])
    )
    assert isinstance(core.import_decision(accepted), core.Import)


def test_event_ending_before_it_starts_is_skipped() -> None:
    same = event_item(end={"dateTime": "2026-11-24T10:00:00+01:00"})
    backwards = event_item(end={"dateTime": "2026-11-24T09:00:00+01:00"})
    for item in (same, backwards):
        decision = core.import_decision(core.CalendarEvent.from_api(item))
        assert decision == core.Skip("evt001abc", "no_duration")


def test_our_export_is_skipped_even_when_renamed() -> None:
    own_id = core.export_event_id(3, 41)
    by_id = core.CalendarEvent.from_api(event_item(id=own_id, summary="Renamed"))
    assert core.import_decision(by_id) == core.Skip(own_id, "exported")
    by_property = core.CalendarEvent.from_api(
        event_item(extendedProperties={"private": {"tt_gateway": "1", "tt_entry_id": "41"}})
    )
    assert by_property.private == {"tt_gateway": "1", "tt_entry_id": "41"}
    assert core.import_decision(by_property) == core.Skip("evt001abc", "exported")
    custom = core.import_decision(by_id, is_own=lambda event_id: False)
    assert custom == core.Import(by_id)


def test_event_still_running_waits_and_other_kinds_are_skipped() -> None:
    event = core.CalendarEvent.from_api(event_item())
    during = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # 11:00 in Rome, ends 11:30
    assert core.import_decision(event, now=during) == core.Skip("evt001abc", "in_progress")
    ooo = core.CalendarEvent.from_api(event_item(eventType="outOfOffice"))
    assert core.import_decision(ooo) == core.Skip("evt001abc", "not_work")


def test_offset_less_datetime_is_read_in_its_time_zone() -> None:
    item = event_item(
        start={"dateTime": "2026-11-24T10:00:00", "timeZone": "America/New_York"},
        end={"dateTime": "2026-11-24T11:00:00", "timeZone": "America/New_York"},
    )
    event = core.CalendarEvent.from_api(item)
    assert event.start == datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    with pytest.raises(core.PayloadError):
        core.CalendarEvent.from_api(
            event_item(start={"dateTime": "2026-11-24T10:00:00"}, end={"dateTime": "x"})
        )


def test_a_malformed_item_does_not_sink_the_page() -> None:
    data = load("events.list.page2")
    data["items"].insert(0, {"id": "bad1", "status": "confirmed", "start": {"dateTime": "noon"}})
    data["items"].insert(0, "not an event")
    page = core.EventsPage.from_api(data)
    assert [e.id for e in page.items] == ["evt005abc", "evt099abc", "evt006abc"]
    assert [i.event_id for i in page.invalid] == [None, "bad1"]
    with pytest.raises(core.PayloadError):
        core.EventsPage.from_api({"items": {}})
    with pytest.raises(core.PayloadError):
        core.EventsPage.from_api([])
    assert core.EventsPage.from_api({}).items == ()


# -- daylight saving -------------------------------------------------------------------------


def test_event_across_the_october_dst_change() -> None:
    # Rome goes from +02:00 to +01:00 at 03:00 on 2026-10-25: 01:30 → 03:30 is three hours.
    item = event_item(
        start={"dateTime": "2026-10-25T01:30:00+02:00", "timeZone": "Europe/Rome"},
        end={"dateTime": "2026-10-25T03:30:00+01:00", "timeZone": "Europe/Rome"},
    )
    times = core.entry_times(core.CalendarEvent.from_api(item), ROME)
    assert times == (datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 3, 30), 3 * 3600)


def test_dst_duration_with_zone_names_not_offsets() -> None:
    # Two datetimes sharing one ZoneInfo subtract as wall times (2 h): the core must not.
    item = event_item(
        start={"dateTime": "2026-10-25T01:30:00", "timeZone": "Europe/Rome"},
        end={"dateTime": "2026-10-25T03:30:00", "timeZone": "Europe/Rome"},
    )
    assert core.entry_times(core.CalendarEvent.from_api(item), ROME).duration_seconds == 10800


# -- notes and markers -----------------------------------------------------------------------


def test_entry_notes_are_capped_and_cleaned() -> None:
    event = core.CalendarEvent.from_api(event_item(summary="Plan\x00ning\n  call " + "x" * 900))
    notes = core.entry_notes(event)
    assert "\x00" not in notes and "\n" not in notes
    assert notes.endswith(" [gcal:evt001abc]")
    assert len(notes) <= core.NOTES_SUMMARY_MAX + len(" [gcal:evt001abc]")
    untitled = core.CalendarEvent.from_api(event_item(summary="  "))
    assert core.entry_notes(untitled) == "(No title) [gcal:evt001abc]"


def test_gcal_markers_are_found_in_notes() -> None:
    notes = "Daily stand-up [gcal:standup001_20261125T083000Z] and [gcal:evt001abc]"
    assert core.marked_event_ids(notes) == ("standup001_20261125T083000Z", "evt001abc")
    assert core.marked_event_ids("[gcal:] [gcal:a b] nothing") == ()
    assert core.marked_event_ids(None) == ()
    event = core.CalendarEvent.from_api(event_item())
    assert core.marked_event_ids(core.entry_notes(event)) == ("evt001abc",)


# -- window, paths, config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days"),
    [
        (7, 7),
        (1, 1),
        (30, 30),
        (0, 1),
        (-3, 1),
        (31, 30),
        (365, 30),
        ("14", 14),
        (" 40 ", 30),
        ("-2", 1),
        (None, 7),
        ("", 7),
        ("week", 7),
        (True, 7),
        (7.5, 7),
    ],
)
def test_clamp_days_back(value: Any, days: int) -> None:
    assert core.clamp_days_back(value) == days


def test_list_params() -> None:
    now = datetime(2026, 11, 27, 10, 0, 12, 345678, tzinfo=UTC)
    assert core.list_params(now, 60) == {
        "timeMin": "2026-10-28T10:00:12Z",
        "timeMax": "2026-11-27T10:00:12Z",
        "singleEvents": "true",
        "orderBy": "startTime",
        "maxResults": "250",
        "showDeleted": "true",
    }
    params = core.list_params(now.astimezone(ROME), 7, "CigKGjRhbmN0ZXN0cGFnZXRva2Vu")
    assert params["timeMin"] == "2026-11-20T10:00:12Z"
    assert params["pageToken"] == "CigKGjRhbmN0ZXN0cGFnZXRva2Vu"


@pytest.mark.parametrize(
    ("calendar_id", "path"),
    [
        ("primary", "/calendars/primary/events"),
        ("a@b.com", "/calendars/a%40b.com/events"),
        (
            "en.italian#holiday@group.v.calendar.google.com",
            "/calendars/en.italian%23holiday%40group.v.calendar.google.com/events",
        ),
        ("x/../y?z", "/calendars/x%2F..%2Fy%3Fz/events"),
        (" primary ", "/calendars/primary/events"),
    ],
)
def test_calendar_path_encodes_the_id(calendar_id: str, path: str) -> None:
    assert core.calendar_path(calendar_id) == path


def test_calendar_path_refuses_blank_and_event_path() -> None:
    with pytest.raises(ValueError):
        core.calendar_path("  ")
    assert core.event_path("a@b.com", "ev/1") == "/calendars/a%40b.com/events/ev%2F1"


def test_config_normalisers() -> None:
    assert core.normalize_sync_direction(None) == "import"
    assert core.normalize_sync_direction(" Both ") == "both"
    with pytest.raises(ValueError):
        core.normalize_sync_direction("sideways")
    assert core.normalize_calendar_id("") == "primary"
    assert core.normalize_calendar_id(" a@b.com ") == "a@b.com"
    with pytest.raises(ValueError):
        core.normalize_calendar_id("a\nb")
    with pytest.raises(ValueError):
        core.normalize_calendar_id(5)


# -- export ----------------------------------------------------------------------------------


def test_event_title() -> None:
    assert core.event_title("Website", "Homepage layout") == "[TT] Website — Homepage layout"
    assert core.event_title("Website", "line one\nline two") == "[TT] Website — line one line two"
    assert core.event_title("Website", None) == "[TT] Website"
    assert core.event_title("Website", "   ") == "[TT] Website"
    long = core.event_title("Website", "x" * 500)
    assert len(long) == core.TITLE_MAX and long.endswith("…")


ENTRY = core.ExportEntry(
    id=41,
    start_time=datetime(2026, 11, 27, 9, 0),
    end_time=datetime(2026, 11, 27, 10, 30),
    project_name="Website",
    task_name="Homepage layout",
    notes="Hero section\x00 and footer",
)


def test_export_event_body() -> None:
    event_id = core.export_event_id(3, 41)
    body = core.export_event_body(ENTRY, ROME, event_id=event_id)
    assert body == {
        "id": event_id,
        "summary": "[TT] Website — Homepage layout",
        "description": "Hero section and footer\n\nExported from TimeTracker (time entry #41).",
        "start": {"dateTime": "2026-11-27T08:00:00Z", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-27T09:30:00Z", "timeZone": "UTC"},
        "extendedProperties": {"private": {"tt_gateway": "1", "tt_entry_id": "41"}},
    }
    # What Google answers for that insert (fixture) has the same times and title.
    answer = load("events.insert.ok")
    assert (answer["start"], answer["end"]) == (body["start"], body["end"])
    assert answer["summary"] == body["summary"]


def test_export_body_falls_back_to_notes_and_refuses_unfinished_entries() -> None:
    entry = core.ExportEntry(
        id=42,
        start_time=datetime(2026, 11, 27, 9, 0),
        end_time=datetime(2026, 11, 27, 9, 5),
        project_name="Website",
        notes="Call with Bob",
    )
    body = core.export_event_body(entry, ROME)
    assert body["summary"] == "[TT] Website — Call with Bob"
    assert "id" not in body
    bad = core.ExportEntry(42, entry.start_time, entry.start_time, "Website")
    with pytest.raises(ValueError):
        core.export_event_body(bad, ROME)


def test_export_body_across_the_october_dst_change() -> None:
    entry = core.ExportEntry(
        43, datetime(2026, 10, 24, 23, 30), datetime(2026, 10, 25, 4, 0), "Website"
    )
    body = core.export_event_body(entry, ROME)
    assert body["start"]["dateTime"] == "2026-10-24T21:30:00Z"  # +02:00
    assert body["end"]["dateTime"] == "2026-10-25T03:00:00Z"  # +01:00


def test_export_event_id_is_deterministic_and_valid() -> None:
    first = core.export_event_id(3, 41)
    assert first == core.export_event_id(3, 41)
    # Pinned: a change of the scheme would export every entry a second time.
    assert (
        first
        == "ttg0"
        + base64.b32hexencode(
            hashlib.sha256(b"timetracker-gateway/google-calendar-export/v1\x003\x0041").digest()
        )
        .decode()
        .rstrip("=")
        .lower()
    )
    assert re.fullmatch(r"[a-v0-9]{5,1024}", first)
    assert len(first) == 56
    ids = {core.export_event_id(i, e) for i in range(1, 4) for e in range(1, 200)}
    assert len(ids) == 3 * 199
    assert core.export_event_id(1, 23) != core.export_event_id(12, 3)


def test_is_export_event_id() -> None:
    assert core.is_export_event_id(core.export_event_id(9, 1234))
    for other in ("evt001abc", "ttg0", "ttg0" + "w" * 52, "TTG0" + "a" * 52, "ttg0" + "a" * 53):
        assert not core.is_export_event_id(other)
    assert core.is_valid_event_id("evt001abc")
    assert not core.is_valid_event_id("abcd")
    assert not core.is_valid_event_id("standup001_20261125T083000Z")


def test_export_window_bounds() -> None:
    connected = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    lo, hi = core.export_window(connected, None, NOW, ROME)
    assert (lo, hi) == (datetime(2026, 11, 20, 9, 0), datetime(2026, 11, 27, 11, 0))
    lo, _ = core.export_window(connected, NOW - timedelta(minutes=30), NOW, ROME)
    assert lo == datetime(2026, 11, 27, 10, 15)  # 09:30 UTC = 10:30 Rome, minus the overlap
    # Never before the connection, however recent the last export claims to be.
    lo, _ = core.export_window(connected, connected + timedelta(minutes=5), NOW, ROME)
    assert lo == datetime(2026, 11, 20, 9, 0)


def test_export_window_misses_nothing_across_the_dst_change() -> None:
    # Entries end every minute of a night that includes the fall-back; each becomes visible
    # up to 5 minutes after it ends (a late commit). Syncs run every 30 minutes.
    connected = datetime(2026, 10, 24, 21, 0, tzinfo=UTC)
    first_end = connected + timedelta(minutes=1)
    ends = [first_end + timedelta(minutes=m) for m in range(6 * 60)]
    syncs = [connected + timedelta(minutes=7 + 30 * k) for k in range(15)]
    exported: set[datetime] = set()
    last: datetime | None = None
    for sync in syncs:
        lo, hi = core.export_window(connected, last, sync, ROME)
        for end in ends:
            visible = end + timedelta(minutes=5) <= sync
            wall = end.astimezone(ROME).replace(tzinfo=None)
            if visible and lo <= wall <= hi:
                exported.add(end)
        last = sync
    assert syncs[-1] > ends[-1] + timedelta(minutes=5)
    missed = [e.isoformat() for e in ends if e not in exported]
    assert missed == []


def test_export_window_without_the_fall_back_slack_would_miss() -> None:
    # The last export at 00:50 UTC (02:50 CEST), the next sync after the change: an entry
    # ending at 01:05 UTC has wall time 02:05 (CET), below 02:50 minus the overlap.
    connected = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    last = datetime(2026, 10, 25, 0, 50, tzinfo=UTC)
    lo, hi = core.export_window(connected, last, datetime(2026, 10, 25, 1, 20, tzinfo=UTC), ROME)
    entry_wall = datetime(2026, 10, 25, 1, 5, tzinfo=UTC).astimezone(ROME).replace(tzinfo=None)
    assert entry_wall == datetime(2026, 10, 25, 2, 5)
    assert lo <= entry_wall <= hi
    naive_lo = (last - core.EXPORT_OVERLAP).astimezone(ROME).replace(tzinfo=None)
    assert entry_wall < naive_lo


# -- API errors and retries ------------------------------------------------------------------


def test_401_means_refresh_and_retry() -> None:
    error = core.classify_api_error(401, load("error.401"))
    assert error.kind == "unauthorized"
    assert error.reason == "authError"
    assert "reconnect" in error.message.lower()
    assert not error.retry_later


def test_409_duplicate_means_already_exported() -> None:
    error = core.classify_api_error(409, load("error.409.duplicate"))
    assert error.kind == "duplicate"
    assert error.reason == "duplicate"


def test_429_means_rate_limited() -> None:
    error = core.classify_api_error(429, load("error.429"))
    assert error.kind == "rate_limited"
    assert error.message == "Google asked us to slow down; the next sync will retry."
    assert error.retry_later


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (403, "rateLimitExceeded", "rate_limited"),
        (403, "userRateLimitExceeded", "rate_limited"),
        (403, "quotaExceeded", "rate_limited"),
        (403, "forbiddenForNonOrganizer", "forbidden"),
        (403, "insufficientPermissions", "forbidden"),
        (404, "notFound", "not_found"),
        (410, "fullSyncRequired", "gone"),
        (500, "backendError", "server"),
        (503, None, "server"),
        (400, "timeRangeEmpty", "other"),
        (409, "conflict", "other"),
    ],
)
def test_classify_api_error(status: int, reason: str | None, kind: str) -> None:
    body = load("error.429")
    body["error"]["code"] = status
    body["error"]["message"] = "The specified time range is empty."
    if reason is None:
        body = {}
    else:
        body["error"]["errors"][0]["reason"] = reason
    error = core.classify_api_error(status, body)
    assert error.kind == kind
    assert error.status == status
    assert error.message


def test_other_errors_name_the_status_and_googles_words() -> None:
    body = {"error": {"code": 400, "message": "The specified time range is empty.", "errors": []}}
    error = core.classify_api_error(400, body)
    assert error.message == (
        "Google Calendar refused the request (HTTP 400): The specified time range is empty."
    )
    assert core.classify_api_error(400, "<html>").message.endswith("(HTTP 400).")
    assert core.classify_api_error(None, None).kind == "server"


def test_every_kind_has_a_plain_message() -> None:
    for kind, message in core.API_ERROR_MESSAGES.items():
        assert message[0].isupper() and message.endswith("."), kind


def half() -> float:
    return 0.5


def test_retry_delay_prefers_retry_after() -> None:
    assert core.retry_delay(429, {"Retry-After": "7"}, 0.0, 1, rng=half) == 7.0
    headers = CIMultiDict({"retry-after": "Fri, 27 Nov 2026 10:00:30 GMT"})
    assert core.retry_delay(503, headers, NOW.timestamp(), 1, rng=half) == 30.0


def test_retry_delay_backs_off_exponentially_with_jitter() -> None:
    delays = [core.retry_delay(429, {}, 0.0, n, rng=half) for n in range(1, 9)]
    assert delays == [1.5, 2.5, 4.5, 8.5, 16.5, 32.0, 32.0, 32.0]
    assert core.retry_delay(500, {}, 0.0, 1, rng=lambda: 0.0) == 1.0


def test_retry_delay_403_needs_the_body() -> None:
    limited = load("error.429")
    assert core.retry_delay(403, {}, 0.0, 1, data=limited, rng=half) == 1.5
    assert core.retry_delay(403, {}, 0.0, 1, data=load("error.401"), rng=half) is None
    assert core.retry_delay(403, {}, 0.0, 1, rng=half) is None


@pytest.mark.parametrize("status", [200, 400, 401, 404, 409, 410])
def test_retry_delay_never_for_other_answers(status: int) -> None:
    assert core.retry_delay(status, {"Retry-After": "1"}, 0.0, 1, rng=half) is None


def test_retry_policy_matches_the_http_clients_signature() -> None:
    assert core.retry_policy(429, CIMultiDict({"Retry-After": "3"}), 0.0) == 3.0
    assert core.retry_policy(403, {"retry-after": "4"}, 0.0) == 4.0
    assert core.retry_policy(503, {"Retry-After": "2"}, 0.0) == 2.0
    # No header: None, so the client's own backoff handles 429/5xx and a 403 is returned.
    assert core.retry_policy(429, {}, 0.0) is None
    assert core.retry_policy(403, {}, 0.0) is None
    assert core.retry_policy(409, {"Retry-After": "3"}, 0.0) is None
    assert core.retry_policy(200, {"Retry-After": "3"}, 0.0) is None


def test_naive_moments_are_refused_where_utc_is_expected() -> None:
    naive = datetime(2026, 11, 27, 10, 0)
    with pytest.raises(ValueError):
        core.TokenSet.from_answer(load("token.refresh"), naive)
    with pytest.raises(ValueError):
        core.list_params(naive, 7)
    with pytest.raises(ValueError):
        core.export_window(naive, None, NOW, ROME)
    with pytest.raises(ValueError):
        core.export_window(NOW, naive, NOW, ROME)
