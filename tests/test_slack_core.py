"""Slack connector core: Slack's published signing vector and documented payloads, no I/O."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from multidict import CIMultiDict

from gateway.connectors.slack import core
from tests.conftest import FIXTURES

SLACK = FIXTURES / "slack"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
ROME = ZoneInfo("Europe/Rome")
NEW_YORK = ZoneInfo("America/New_York")


def fixture_json(name: str) -> Any:
    return json.loads((SLACK / name).read_text())


@pytest.fixture(scope="module")
def vector() -> dict[str, str]:
    return fixture_json("signature-test-vector.json")


# -- signatures ------------------------------------------------------------------------------


def test_sign_reproduces_slacks_published_vector(vector: dict[str, str]) -> None:
    signature = core.sign(vector["signing_secret"], vector["timestamp"], vector["body"].encode())
    assert signature == vector["expected_signature"]


def test_published_vector_verifies_at_its_own_time(vector: dict[str, str]) -> None:
    now = float(vector["timestamp"])
    body = vector["body"].encode()
    args = (vector["signing_secret"], vector["timestamp"], body, vector["expected_signature"])
    assert core.verify_signature(*args, now=now)
    # Whitespace around the header values and upper-case hex are the same signature.
    upper = "v0=" + vector["expected_signature"][3:].upper()
    assert core.verify_signature(
        vector["signing_secret"], f" {vector['timestamp']} ", body, f" {upper} ", now=now
    )


def test_verify_headers_reads_both_headers_ignoring_case(vector: dict[str, str]) -> None:
    headers = CIMultiDict(
        {
            "x-slack-request-timestamp": vector["timestamp"],
            "x-slack-signature": vector["expected_signature"],
        }
    )
    body = vector["body"].encode()
    now = float(vector["timestamp"])
    assert core.verify_headers(vector["signing_secret"], headers, body, now=now)
    plain = {
        "X-SLACK-REQUEST-TIMESTAMP": vector["timestamp"],
        "X-SLACK-SIGNATURE": vector["expected_signature"],
    }
    assert core.verify_headers(vector["signing_secret"], plain, body, now=now)
    assert not core.verify_headers(vector["signing_secret"], {}, body, now=now)


def test_changed_body_or_secret_fails(vector: dict[str, str]) -> None:
    now = float(vector["timestamp"])
    body = vector["body"].encode()
    sig = vector["expected_signature"]
    assert not core.verify_signature(
        vector["signing_secret"], vector["timestamp"], body + b"x", sig, now=now
    )
    assert not core.verify_signature("other-secret", vector["timestamp"], body, sig, now=now)


def test_timestamp_is_part_of_the_signature(vector: dict[str, str]) -> None:
    # Same body and signature, a different (still fresh) timestamp: must fail.
    ts = str(int(vector["timestamp"]) + 1)
    assert not core.verify_signature(
        vector["signing_secret"],
        ts,
        vector["body"].encode(),
        vector["expected_signature"],
        now=float(ts),
    )


@pytest.mark.parametrize("secret", ["", None])
def test_no_secret_fails_closed(vector: dict[str, str], secret: Any) -> None:
    assert not core.verify_signature(
        secret,
        vector["timestamp"],
        vector["body"].encode(),
        vector["expected_signature"],
        now=float(vector["timestamp"]),
    )


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "v0=",
        "v1=" + "a" * 64,
        "a" * 64,
        "v0=" + "a" * 63,
        "v0=" + "g" * 64,
        "v0=" + "é" * 64,
        "sha256=" + "a" * 64,
    ],
)
def test_missing_or_malformed_signature_fails(vector: dict[str, str], signature: Any) -> None:
    assert not core.verify_signature(
        vector["signing_secret"],
        vector["timestamp"],
        vector["body"].encode(),
        signature,
        now=float(vector["timestamp"]),
    )


@pytest.mark.parametrize(
    "timestamp", [None, "", "abc", "1531420618.5", "-1531420618", "١٢٣", "1" * 13, "0x5b47"]
)
def test_missing_or_non_numeric_timestamp_fails(vector: dict[str, str], timestamp: Any) -> None:
    assert not core.verify_signature(
        vector["signing_secret"],
        timestamp,
        vector["body"].encode(),
        vector["expected_signature"],
        now=float(vector["timestamp"]),
    )


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (300, True), (-300, True), (301, False), (-301, False), (86400, False)],
)
def test_replay_window_is_five_minutes_both_ways(
    vector: dict[str, str], offset: int, accepted: bool
) -> None:
    # now = timestamp + offset: positive is a stale request, negative one from the future.
    now = float(vector["timestamp"]) + offset
    args = (
        vector["signing_secret"],
        vector["timestamp"],
        vector["body"].encode(),
        vector["expected_signature"],
    )
    assert core.verify_signature(*args, now=now) is accepted


def test_signature_shape_precheck(vector: dict[str, str]) -> None:
    good = {
        "X-Slack-Request-Timestamp": vector["timestamp"],
        "X-Slack-Signature": vector["expected_signature"],
    }
    assert core.signature_shape_ok(good)
    assert core.signature_shape_ok(good, now=float(vector["timestamp"]) + 10)
    assert not core.signature_shape_ok(good, now=float(vector["timestamp"]) + 301)
    assert not core.signature_shape_ok({})
    assert not core.signature_shape_ok({**good, "X-Slack-Signature": "v0=zz"})
    assert not core.signature_shape_ok({**good, "X-Slack-Request-Timestamp": "soon"})
    assert not core.signature_shape_ok({"X-Slack-Signature": vector["expected_signature"]})


# -- requests --------------------------------------------------------------------------------


def test_slash_command_fixture_parsed() -> None:
    request = core.SlackRequest.from_http(FORM, (SLACK / "slash-command.body").read_bytes())
    assert request == core.SlashCommand(
        team_id="T0001",
        user_id="U2147483697",
        user_name="Steve",
        channel_id="C2147483705",
        command="/tt",
        text="start Website Redesign",
        response_url="https://hooks.slack.com/commands/1234/5678",
        trigger_id="13345224609.738474920.8088930838d88f008e0",
    )
    assert request.dedup_key == "13345224609.738474920.8088930838d88f008e0"


def test_signing_vector_body_is_a_slash_command(vector: dict[str, str]) -> None:
    # No Content-Type: a form body is recognised by its shape.
    request = core.SlackRequest.from_http({}, vector["body"].encode())
    assert isinstance(request, core.SlashCommand)
    assert (request.command, request.text, request.channel_id) == (
        "/webhook-collect",
        "",
        "G8PSS9T3V",
    )


def test_url_verification_fixture() -> None:
    request = core.SlackRequest.from_http(JSON, (SLACK / "url_verification.json").read_bytes())
    assert request == core.UrlVerification(
        challenge="3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    )
    assert request.dedup_key is None
    # Content-Type with a charset, or none at all, still reads JSON.
    body = (SLACK / "url_verification.json").read_bytes()
    assert (
        core.SlackRequest.from_http({"content-type": "application/json; charset=utf-8"}, body)
        == request
    )
    assert core.SlackRequest.from_http({}, body) == request


def test_ssl_check() -> None:
    body = b"ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"
    assert core.SlackRequest.from_http(FORM, body) == core.SslCheck()


def test_event_callback_with_retry_headers() -> None:
    body = json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0001",
            "api_app_id": "A123456",
            "event_id": "Ev08MFMKH6",
            "event_time": 1234567890,
            "event": {"type": "app_mention", "user": "U2147483697", "text": "hi"},
        }
    ).encode()
    headers = {**JSON, "X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"}
    request = core.SlackRequest.from_http(headers, body)
    assert isinstance(request, core.EventCallback)
    assert (request.event_id, request.team_id, request.event_type) == (
        "Ev08MFMKH6",
        "T0001",
        "app_mention",
    )
    assert request.event["text"] == "hi"
    assert (request.retry_num, request.retry_reason) == (2, "http_timeout")
    assert request.dedup_key == "Ev08MFMKH6"
    first = core.SlackRequest.from_http(JSON, body)
    assert isinstance(first, core.EventCallback)
    assert (first.retry_num, first.retry_reason) == (None, None)
    garbled = core.SlackRequest.from_http({**JSON, "X-Slack-Retry-Num": "many"}, body)
    assert isinstance(garbled, core.EventCallback) and garbled.retry_num is None


def test_other_event_types_are_unhandled_not_errors() -> None:
    body = b'{"type": "app_rate_limited", "team_id": "T0001", "minute_rate_limited": 1}'
    assert core.SlackRequest.from_http(JSON, body) == core.Unhandled(kind="app_rate_limited")


def block_actions(**changes: Any) -> dict[str, Any]:
    # The shape of Slack's block_actions reference (button in a message posted by the app).
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": "T0001", "domain": "example"},
        "user": {"id": "U2147483697", "username": "steve", "team_id": "T0001"},
        "api_app_id": "A123456",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": {
            "type": "message",
            "message_ts": "1503435956.000247",
            "channel_id": "C2147483705",
            "is_ephemeral": False,
        },
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "channel": {"id": "C2147483705", "name": "time"},
        "message": {"type": "message", "ts": "1503435956.000247", "text": "started"},
        "response_url": "https://hooks.slack.com/actions/T0001/1234/abcd",
        "actions": [
            {
                "action_id": "tt_stop_timer",
                "block_id": "tt_timer_42",
                "text": {"type": "plain_text", "text": "Stop"},
                "value": "42",
                "type": "button",
                "action_ts": "1548426417.840180",
            }
        ],
    }
    payload.update(changes)
    return payload


def form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_block_actions_payload() -> None:
    request = core.SlackRequest.from_http(FORM, form(block_actions()))
    assert request == core.BlockAction(
        team_id="T0001",
        user_id="U2147483697",
        action_id="tt_stop_timer",
        value="42",
        channel_id="C2147483705",
        message_ts="1503435956.000247",
        response_url="https://hooks.slack.com/actions/T0001/1234/abcd",
        trigger_id="13345224609.738474920.8088930838d88f008e0",
        action_ts="1548426417.840180",
    )
    assert request.dedup_key == "tt_stop_timer:1548426417.840180"
    assert core.stop_button_entry_id(request) == 42


def test_block_actions_fall_back_to_user_team_and_container() -> None:
    payload = block_actions(team=None, channel=None, message=None)
    request = core.SlackRequest.from_http(FORM, form(payload))
    assert isinstance(request, core.BlockAction)
    assert (request.team_id, request.channel_id, request.message_ts) == (
        "T0001",
        "C2147483705",
        "1503435956.000247",
    )


@pytest.mark.parametrize(
    ("action_id", "value", "expected"),
    [
        ("tt_stop_timer", "7", 7),
        ("tt_stop_timer", None, None),
        ("tt_stop_timer", "0", None),
        ("tt_stop_timer", "x7", None),
        ("tt_stop_timer", "1" * 30, None),
        ("other", "7", None),
    ],
)
def test_stop_button_entry_id(action_id: str, value: str | None, expected: int | None) -> None:
    action = core.BlockAction("T1", "U1", action_id, value, "C1", "1.2", "")
    assert core.stop_button_entry_id(action) == expected


def test_other_interactions_are_unhandled() -> None:
    body = form({"type": "view_submission", "user": {"id": "U1"}})
    assert core.SlackRequest.from_http(FORM, body) == core.Unhandled(kind="view_submission")


def test_response_url_must_be_https() -> None:
    body = urlencode(
        {
            "command": "/tt",
            "team_id": "T1",
            "user_id": "U1",
            "response_url": "http://169.254.169.254/latest",
        }
    ).encode()
    request = core.SlackRequest.from_http(FORM, body)
    assert isinstance(request, core.SlashCommand) and request.response_url == ""
    action = core.SlackRequest.from_http(
        FORM, form(block_actions(response_url="file:///etc/passwd"))
    )
    assert isinstance(action, core.BlockAction) and action.response_url == ""


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (FORM, b""),
        (FORM, b"token=abc&team_id=T1"),  # neither command, payload nor ssl_check
        (FORM, b"command=%2Ftt&user_id=U1"),  # no team_id
        (FORM, b"command=%2Ftt&team_id=T1"),  # no user_id
        (FORM, b"command=tt&team_id=T1&user_id=U1"),  # command without slash
        (FORM, b"command=%2Ftt&team_id=T%3Cx%3E&user_id=U1"),  # not an id
        (FORM, b"command=%2Ftt&team_id=T1&user_id=" + b"U" * 65),  # id too long
        (FORM, b"payload=not-json"),
        (FORM, b"payload=%5B1%2C2%5D"),  # a list
        (FORM, b"payload=%7B%7D"),  # no type
        (FORM, b"&".join(b"f%d=1" % i for i in range(500))),  # too many fields
        (JSON, b"{"),
        (JSON, b"[]"),
        (JSON, b'{"challenge": "x"}'),  # no type
        (JSON, b'{"type": 5}'),
        (JSON, b'{"type": "url_verification"}'),  # no challenge
        (JSON, b'{"type": "url_verification", "challenge": 5}'),
        (JSON, b'{"type": "event_callback", "event_id": "Ev1"}'),  # no event
        (JSON, b'{"type": "event_callback", "event_id": "Ev1", "event": {}}'),  # no event type
        (JSON, b'{"type": "event_callback", "event": {"type": "x"}}'),  # no event_id
        (JSON, b'{"type": "url_verification", "challenge": "\xff\xfe"}'),  # not UTF-8
        (JSON, b"{}" + b" " * (core.MAX_BODY_BYTES + 1)),
    ],
)
def test_malformed_bodies_raise_payload_error(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(core.PayloadError):
        core.SlackRequest.from_http(headers, body)


@pytest.mark.parametrize(
    "changes",
    [
        {"actions": []},
        {"actions": "tt_stop_timer"},
        {"actions": [5]},
        {"actions": [{"value": "1"}]},  # no action_id
        {"actions": [{"action_id": "a", "value": 5}]},
        {"user": None},
        {"user": "U1"},
        {"team": ["T1"]},
    ],
)
def test_malformed_block_actions_raise_payload_error(changes: dict[str, Any]) -> None:
    with pytest.raises(core.PayloadError):
        core.SlackRequest.from_http(FORM, form(block_actions(**changes)))


def test_hostile_form_values_are_cleaned_not_fatal() -> None:
    body = (
        b"command=%2Ftt&team_id=T1&user_id=U1&user_name=St%00eve&channel_id=C1"
        b"&text=start+W%00eb%FF%FE&text=second&trigger_id=t"
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fx&extra=" + b"A" * 50_000
    )
    request = core.SlackRequest.from_http(FORM, body + b"&user_name2=\xff\xfe\x00")
    assert isinstance(request, core.SlashCommand)
    assert request.user_name == "Steve"
    assert request.text == "start Web\ufffd\ufffd"  # NUL gone, bad bytes replaced, first value
    long_text = urlencode(
        {"command": "/tt", "team_id": "T1", "user_id": "U1", "text": "x" * 100_000}
    ).encode()
    long_request = core.SlackRequest.from_http(FORM, long_text)
    assert isinstance(long_request, core.SlashCommand)
    assert len(long_request.text) == core.TEXT_MAX


def test_event_text_with_nul_escape_is_kept_in_event_and_cleaned_in_fields() -> None:
    body = b'{"type": "event_callback", "event_id": "Ev1", "event": {"type": "a\\u0000b"}}'
    request = core.SlackRequest.from_http(JSON, body)
    assert isinstance(request, core.EventCallback) and request.event_type == "ab"


# -- commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", core.Command("help")),
        ("   ", core.Command("help")),
        ("help", core.Command("help")),
        ("stop", core.Command("stop")),
        ("STOP", core.Command("stop")),
        ("status", core.Command("status")),
        ("today", core.Command("today")),
        ("  today  please ", core.Command("today", argument="please")),
        ("start", core.Command("start")),
        ("start Website", core.Command("start", "Website", "Website")),
        (
            "Start  Website   Redesign",
            core.Command("start", "Website Redesign", "Website Redesign"),
        ),
        ("start 12", core.Command("start", "12", "12")),
        ("start Website / Bugfix", core.Command("start", "Website / Bugfix", "Website", "Bugfix")),
        ("start Website/Bugfix", core.Command("start", "Website/Bugfix", "Website", "Bugfix")),
        ("start Website /", core.Command("start", "Website /", "Website", None)),
        ("start / Bugfix", core.Command("start", "/ Bugfix", None, "Bugfix")),
        ("start R&amp;D &lt;x&gt;", core.Command("start", "R&D <x>", "R&D <x>")),
        ("begin Website", core.Command("help", "begin Website", unknown="begin")),
        ("stahp", core.Command("help", "stahp", unknown="stahp")),
    ],
)
def test_parse_command(text: str, expected: core.Command) -> None:
    assert core.parse_command(text) == expected


def test_parse_command_survives_hostile_text() -> None:
    command = core.parse_command("start \x00Web" + "x" * 10_000)
    assert command.verb == "start" and command.project is not None
    assert "\x00" not in command.project and len(command.project) < core.TEXT_MAX
    assert core.parse_command("x" * 500).unknown == "x" * 50


# -- matching --------------------------------------------------------------------------------

PROJECTS = [
    (1, "Website"),
    (2, "Website Redesign"),
    (3, "Mobile App"),
    (4, "Internal"),
    (12, "2024 Audit"),
    (5, "App Store Assets"),
]


@pytest.mark.parametrize(
    ("query", "status", "ident"),
    [
        ("3", "found", 3),  # by id
        ("#3", "found", 3),
        ("003", "found", 3),
        ("website", "found", 1),  # exact name wins over the partial "Website Redesign"
        ("WEBSITE  redesign", "found", 2),  # case and spaces ignored
        ("redesign", "found", 2),  # the single partial match
        ("audit", "found", 12),
        ("2024", "found", 12),  # a number that is no id falls back to names
        ("app", "ambiguous", None),  # Mobile App, App Store Assets
        ("e", "ambiguous", None),
        ("payroll", "not_found", None),
        ("99", "not_found", None),
        ("", "not_found", None),
        ("   ", "not_found", None),
        ("9" * 5000, "not_found", None),  # no int() of a huge number
    ],
)
def test_match_by_name(query: str, status: str, ident: int | None) -> None:
    match = core.match_by_name(query, PROJECTS)
    assert (match.status, match.id) == (status, ident)
    assert match.found is (status == "found")


def test_ambiguous_lists_at_most_five_in_the_given_order() -> None:
    match = core.match_by_name("app", PROJECTS)
    assert match.candidates == ((3, "Mobile App"), (5, "App Store Assets"))
    assert match.total == 2
    many = [(i, f"Client {i}") for i in range(1, 9)]
    match = core.match_by_name("client", many)
    assert match.status == "ambiguous"
    assert match.total == 8
    assert [i for i, _ in match.candidates] == [1, 2, 3, 4, 5]


def test_duplicate_exact_names_are_ambiguous() -> None:
    match = core.match_by_name("bugfix", [(7, "Bugfix"), (8, "bugfix"), (9, "Bugfix later")])
    assert match.status == "ambiguous"
    assert match.candidates == ((7, "Bugfix"), (8, "bugfix"))


def test_tasks_match_the_same_way() -> None:
    tasks = [(101, "Design"), (102, "Design review"), (103, "Build")]
    assert core.match_by_name("design", tasks).id == 101
    assert core.match_by_name("rev", tasks).id == 102
    assert core.match_by_name("101", tasks).name == "Design"
    assert core.match_by_name("x", []).status == "not_found"


# -- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.9, "59s"),
        (60, "1m"),
        (720, "12m"),
        (3599, "59m"),
        (3600, "1h 00m"),
        (3900, "1h 05m"),
        (26 * 3600, "26h 00m"),
        (-5, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert core.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("hours", "text"), [(0, "0"), (7.5, "7.5"), (3.25, "3.25"), (2.0, "2"), (1.004, "1")]
)
def test_format_hours(hours: float, text: str) -> None:
    assert core.format_hours(hours) == text


def test_escape_mrkdwn() -> None:
    assert core.escape_mrkdwn("R&D <!channel> a>b") == "R&amp;D &lt;!channel&gt; a&gt;b"
    assert core.unescape_mrkdwn(core.escape_mrkdwn("x &amp; <y>")) == "x &amp; <y>"


def all_texts(message: dict[str, Any]) -> list[str]:
    texts = [message["text"]]
    for block in message["blocks"]:
        if block["type"] == "section":
            texts.append(block["text"]["text"])
    return texts


def assert_no_raw_controls(message: dict[str, Any]) -> None:
    # Every "<" left is one of our own links; "&" only starts one of the three entities.
    for text in all_texts(message):
        assert re.findall(r"<(?!https://)", text) == [] and "\x00" not in text
        assert re.findall(r"&(?!amp;|lt;|gt;)", text) == []


def test_timer_started_notification_format() -> None:
    message = core.timer_started_message(
        "Ann <@U1>", "Web & Co", "Bugs", datetime(2026, 3, 2, 9, 5), entry_id=42
    )
    section, actions = message["blocks"]
    assert section["text"]["text"] == (
        ":stopwatch: *Ann &lt;@U1&gt;* started a timer\n"
        "*Project:* Web &amp; Co — Bugs\n"
        "*Started at:* 09:05"
    )
    button = actions["elements"][0]
    assert (button["type"], button["action_id"], button["value"]) == (
        "button",
        "tt_stop_timer",
        "42",
    )
    assert button["text"]["text"] == "Stop"
    assert message["text"] == "Ann &lt;@U1&gt; started a timer on Web &amp; Co — Bugs"
    assert_no_raw_controls(message)


def test_timer_started_without_task_or_button() -> None:
    message = core.timer_started_message("Ann", "Website", None, time(18, 30))
    assert len(message["blocks"]) == 1
    assert message["blocks"][0]["text"]["text"].splitlines()[1:] == [
        "*Project:* Website",
        "*Started at:* 18:30",
    ]


@pytest.mark.parametrize(("billable", "shown"), [(True, "Yes"), (False, "No")])
def test_timer_stopped_notification_format(billable: bool, shown: str) -> None:
    message = core.timer_stopped_message("Ann", "Website", 3900, billable)
    assert message["blocks"][0]["text"]["text"] == (
        ":white_check_mark: *Ann* stopped a timer\n"
        "*Project:* Website\n"
        "*Duration:* 1h 05m\n"
        f"*Billable:* {shown}"
    )
    assert "1h 05m" in message["text"]


def test_daily_summary_format() -> None:
    message = core.daily_summary_message("Ann & Bob", 7.5, 3)
    assert message["blocks"][0]["text"]["text"] == (
        ":bar_chart: *Daily summary for Ann &amp; Bob*\n"
        "*Hours logged:* 7.5h across 3 projects\n"
        "Have a great evening!"
    )
    one = core.daily_summary_message("Ann", 1, 1)
    assert "*Hours logged:* 1h across 1 project\n" in one["blocks"][0]["text"]["text"]


def test_names_are_one_line_and_capped() -> None:
    message = core.timer_stopped_message("Ann\n*Project:* fake", "x" * 1000, 60, True)
    text = message["blocks"][0]["text"]["text"]
    assert text.count("\n") == 3  # the newline in the name did not add a line
    assert len(text) < 400


def test_connection_test_message() -> None:
    message = core.connection_test_message("Ann")
    assert "*Ann*" in message["blocks"][0]["text"]["text"]


def ephemeral_text(reply: dict[str, Any]) -> str:
    assert reply["response_type"] == "ephemeral"
    assert reply["text"]
    assert_no_raw_controls(reply)
    return reply["blocks"][0]["text"]["text"]


def test_command_replies() -> None:
    started = ephemeral_text(core.reply_started("Web & Co", "Bugs", datetime(2026, 1, 5, 9, 0)))
    assert "*Web &amp; Co* — Bugs" in started and "09:00" in started

    running = ephemeral_text(core.reply_already_running("Website", None, time(8, 15), 3900))
    assert "already running" in running and "*Website*" in running
    assert "08:15" in running and "1h 05m" in running and "/tt stop" in running

    stopped = ephemeral_text(core.reply_stopped("Website", "Design", 720))
    assert "*Website* — Design" in stopped and "12m" in stopped

    status = ephemeral_text(core.reply_status("Website", "Design", time(9, 30), 45))
    assert "*Website* — Design" in status and "09:30" in status and "45s" in status

    assert "No timer is running" in ephemeral_text(core.reply_not_running())

    today = ephemeral_text(core.reply_today(3.25, 2))
    assert "3.25h" in today and "2 projects" in today
    assert "Nothing logged" in ephemeral_text(core.reply_today(0, 0))

    assert "`/tt start &lt;project&gt;`" in ephemeral_text(core.reply_project_required())
    assert "`/tt start &lt;project&gt;`" in ephemeral_text(core.reply_not_running())


def test_not_linked_reply_says_how_to_link() -> None:
    text = ephemeral_text(core.reply_not_linked("U2147483697", "https://tt.example.com/gateway/"))
    assert "`U2147483697`" in text and "*Slack user ID*" in text
    assert "<https://tt.example.com/gateway/|Integrations → Slack>" in text
    # A URL that could break out of the link is not linked.
    odd = ephemeral_text(core.reply_not_linked("U1", "https://x|<!channel>"))
    assert "https://x" not in odd


def test_ambiguous_and_not_found_replies() -> None:
    match = core.match_by_name("app", PROJECTS)
    text = ephemeral_text(core.reply_ambiguous("project", "app", match))
    assert "• Mobile App (id 3)" in text and "• App Store Assets (id 5)" in text
    assert "…and" not in text
    many = core.match_by_name("client", [(i, f"Client <{i}>") for i in range(1, 9)])
    text = ephemeral_text(core.reply_ambiguous("task", "client", many))
    assert "Several tasks" in text and "…and 3 more" in text and "Client &lt;1&gt;" in text
    text = ephemeral_text(core.reply_not_found("project", "<!here>"))
    assert "No project" in text and "&lt;!here&gt;" in text


def test_help_lists_every_command() -> None:
    text = ephemeral_text(core.reply_help())
    for verb in core.VERBS:
        assert f"`/tt {verb}" in text
    unknown = ephemeral_text(core.reply_help("stahp<"))
    assert "“stahp&lt;”" in unknown


def test_stop_button_refusals_are_ephemeral_and_keep_the_post() -> None:
    refused = core.reply_stop_refused()
    assert "your own timer" in ephemeral_text(refused)
    assert refused["replace_original"] is False
    stale = core.reply_stop_stale()
    assert "already stopped" in ephemeral_text(stale) and stale["replace_original"] is False
    assert ":warning: Project is archived" in ephemeral_text(
        core.reply_error("Project is archived")
    )


# -- Web API answers -------------------------------------------------------------------------


def test_ok_answers() -> None:
    for name in ("chat.postMessage.ok.json", "auth.test.ok.json"):
        outcome = core.interpret_api_answer(200, {}, fixture_json(name))
        assert outcome == core.ApiOutcome(ok=True)
        assert not outcome.retryable


@pytest.mark.parametrize(
    ("name", "code", "phrase"),
    [
        (
            "chat.postMessage.channel_not_found.json",
            "channel_not_found",
            "Slack does not know channel C123: check the channel ID, and invite the bot with "
            "/invite @YourBot",
        ),
        ("chat.postMessage.not_in_channel.json", "not_in_channel", "invite it with /invite"),
        (
            "auth.test.invalid_auth.json",
            "invalid_auth",
            "Slack rejected the bot token: copy the Bot User OAuth Token (xoxb-...) again from "
            "OAuth & Permissions",
        ),
    ],
)
def test_permanent_errors_from_fixtures(name: str, code: str, phrase: str) -> None:
    outcome = core.interpret_api_answer(200, {}, fixture_json(name), channel="C123")
    assert (outcome.ok, outcome.error_code, outcome.permanent) == (False, code, True)
    assert outcome.retry_after is None and not outcome.retryable
    assert phrase in outcome.message


def test_ratelimited_fixture_with_retry_after() -> None:
    data = fixture_json("ratelimited.json")
    outcome = core.interpret_api_answer(429, CIMultiDict({"retry-after": "7"}), data)
    assert (outcome.ok, outcome.error_code, outcome.retry_after) == (False, "ratelimited", 7.0)
    assert outcome.retryable and not outcome.permanent
    assert "7 s" in outcome.message
    missing = core.interpret_api_answer(429, {}, data)
    assert missing.retry_after == core.DEFAULT_RATE_LIMIT_WAIT and missing.retryable


@pytest.mark.parametrize(
    "code",
    [
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "not_authed",
        "is_archived",
        "not_allowed_token_type",
        "no_permission",
        "invalid_blocks",
    ],
)
def test_known_permanent_codes_say_what_to_fix(code: str) -> None:
    outcome = core.interpret_api_answer(200, {}, {"ok": False, "error": code}, channel="C9")
    assert outcome.permanent and outcome.error_code == code
    assert outcome.message and outcome.message != f"Slack answered {code}"


def test_missing_scope_names_the_scope() -> None:
    data = {
        "ok": False,
        "error": "missing_scope",
        "needed": "chat:write.public",
        "provided": "chat:write",
    }
    assert "chat:write.public scope" in core.interpret_api_answer(200, {}, data).message
    odd = {"ok": False, "error": "missing_scope", "needed": "<!channel>"}
    assert "<" not in core.interpret_api_answer(200, {}, odd).message


@pytest.mark.parametrize(
    ("status", "data", "permanent"),
    [
        (None, None, False),  # no answer
        (500, None, False),
        (503, {"ok": False, "error": "service_unavailable"}, False),
        (200, {"ok": False, "error": "internal_error"}, False),
        (200, {"ok": False, "error": "fatal_error"}, False),
        (200, "<html>proxy</html>", False),
        (200, {"ok": False, "error": "some_new_error"}, True),
        (200, {"ok": False}, True),
        (200, {"ok": False, "error": "<script>"}, True),
        (404, None, True),
        (400, {"ok": False, "error": "invalid_arguments"}, True),
    ],
)
def test_other_answers(status: int | None, data: Any, permanent: bool) -> None:
    outcome = core.interpret_api_answer(status, {}, data)
    assert not outcome.ok
    assert outcome.permanent is permanent
    assert outcome.message and "<script>" not in outcome.message


def test_retry_delay_policy() -> None:
    now = 1_700_000_000.0
    assert core.retry_delay(429, {"Retry-After": "30"}, now) == 30.0
    assert core.retry_delay(503, {"retry-after": "5"}, now) == 5.0
    assert core.retry_delay(429, {}, now) is None  # the client falls back to its backoff
    assert core.retry_delay(200, {"Retry-After": "30"}, now) is None
    assert core.retry_delay(400, {"Retry-After": "30"}, now) is None
    assert core.retry_delay(429, {"Retry-After": "soon"}, now) is None


# -- daily summary ---------------------------------------------------------------------------


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (utc(2026, 1, 15, 16, 59), None),  # Rome is UTC+1 in winter: 17:59
        (utc(2026, 1, 15, 17, 0), date(2026, 1, 15)),  # 18:00
        (utc(2026, 1, 15, 17, 29, 59), date(2026, 1, 15)),
        (utc(2026, 1, 15, 17, 30), None),  # window is half-open
        (utc(2026, 7, 15, 16, 0), date(2026, 7, 15)),  # UTC+2 in summer
        (utc(2026, 7, 15, 17, 0), None),
    ],
)
def test_summary_window(now: datetime, due: date | None) -> None:
    assert core.summary_due(now, ROME, "18:00") == due


def test_summary_window_accepts_time_and_naive_utc() -> None:
    assert core.summary_due(datetime(2026, 1, 15, 17, 10), ROME, time(18, 0)) == date(2026, 1, 15)


def test_summary_window_crossing_midnight_belongs_to_the_first_day() -> None:
    # 23:45 in Rome = 22:45 UTC in winter; 00:05 the next day is still that day's window.
    assert core.summary_due(utc(2026, 1, 15, 23, 5), ROME, "23:45") == date(2026, 1, 15)
    assert core.summary_due(utc(2026, 1, 15, 23, 15), ROME, "23:45") is None


def half_hour_ticks(start: datetime, hours: int) -> list[datetime]:
    return [start + timedelta(minutes=30 * i) for i in range(hours * 2)]


@pytest.mark.parametrize(
    ("zone", "day", "at"),
    [
        (ROME, date(2026, 3, 29), "02:30"),  # spring forward: 02:30 does not exist
        (ROME, date(2026, 3, 29), "18:00"),
        (ROME, date(2026, 10, 25), "02:30"),  # fall back: 02:30 happens twice
        (ROME, date(2026, 10, 25), "02:00"),
        (NEW_YORK, date(2026, 3, 8), "02:15"),
        (NEW_YORK, date(2026, 11, 1), "01:30"),
        (ZoneInfo("Asia/Kathmandu"), date(2026, 5, 1), "18:00"),  # UTC+05:45
    ],
)
def test_every_dst_day_gets_exactly_one_summary(zone: ZoneInfo, day: date, at: str) -> None:
    # The job runs every 30 minutes on the UTC clock; over three days around the switch each
    # local day must be due on exactly one tick.
    start = datetime.combine(day - timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    due = [core.summary_due(t, zone, at) for t in half_hour_ticks(start, 72)]
    days = [d for d in due if d is not None]
    assert sorted(days) == days and len(days) == len(set(days))
    assert {day - timedelta(days=1), day, day + timedelta(days=1)} <= set(days)


def test_skipped_wall_time_fires_just_after_the_gap() -> None:
    # 02:30 on 29 March 2026 does not exist in Rome; the window opens at 01:30 UTC (03:30 CEST).
    assert core.summary_due(utc(2026, 3, 29, 1, 30), ROME, "02:30") == date(2026, 3, 29)
    assert core.summary_due(utc(2026, 3, 29, 1, 0), ROME, "02:30") is None


def test_repeated_wall_time_fires_on_its_first_occurrence() -> None:
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET) on 25 October 2026.
    assert core.summary_due(utc(2026, 10, 25, 0, 30), ROME, "02:30") == date(2026, 10, 25)
    assert core.summary_due(utc(2026, 10, 25, 1, 30), ROME, "02:30") is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("18:00", time(18, 0)),
        ("9:05", time(9, 5)),
        (" 00:00 ", time(0, 0)),
        ("23:59", time(23, 59)),
    ],
)
def test_parse_hhmm(value: str, parsed: time) -> None:
    assert core.parse_hhmm(value) == parsed


@pytest.mark.parametrize("value", ["24:00", "18:60", "1800", "18:0", "6pm", "", None, 18, "١٨:٠٠"])
def test_parse_hhmm_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="24-hour time like 18:00"):
        core.parse_hhmm(value)


def test_normalize_hhmm() -> None:
    assert core.normalize_hhmm("9:05") == "09:05"
    assert core.normalize_hhmm(None) == "18:00"
    assert core.normalize_hhmm("  ") == "18:00"
    with pytest.raises(ValueError):
        core.normalize_hhmm("noon")


# -- configuration ---------------------------------------------------------------------------

BOT_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"  {BOT_TOKEN} ", BOT_TOKEN),
        ("xoxp-1-2-abc", "xoxp-1-2-abc"),
        ("xoxe.xoxb-1-abc", "xoxe.xoxb-1-abc"),
        (None, None),
        ("", None),
        ("   ", None),
    ],
)
def test_normalize_bot_token(value: Any, expected: str | None) -> None:
    assert core.normalize_bot_token(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "8f742231b10e8888abcd99yyyzzz85a5",
        "xapp-1-A1-2-abc",
        "xoxb-",
        "xoxb-a b",
        "ghp_abcdef",
        "xoxb-" + "a" * 600,
        12345,
    ],
)
def test_normalize_bot_token_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="bot_token"):
        core.normalize_bot_token(value)


def test_normalize_signing_secret(vector: dict[str, str]) -> None:
    assert (
        core.normalize_signing_secret(f" {vector['signing_secret']}\n")
        == (vector["signing_secret"])
    )
    assert core.normalize_signing_secret("") is None
    for bad in ("short", BOT_TOKEN, "a" * 200, "abcd-efgh-ijkl-mnop", ["x"]):
        with pytest.raises(ValueError, match="signing_secret"):
            core.normalize_signing_secret(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("C1234567890", "C1234567890"),
        (" G8PSS9T3V ", "G8PSS9T3V"),
        ("#general", "#general"),
        ("#General", "#general"),
        ("time-tracking", "#time-tracking"),
        ("https://example.slack.com/archives/C1234567890", "C1234567890"),
        ("https://app.slack.com/client/T0001/C1234567890/", "C1234567890"),
        (None, None),
        ("", None),
    ],
)
def test_normalize_channel_id(value: Any, expected: str | None) -> None:
    assert core.normalize_channel_id(value) == expected


@pytest.mark.parametrize("value", ["#", "#bad name", "<#C123|x>", "#" + "a" * 81, 5, "GENERAL"])
def test_normalize_channel_id_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="channel_id"):
        core.normalize_channel_id(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("U0ABC1234", "U0ABC1234"),
        (" u0abc1234 ", "U0ABC1234"),
        ("W12345678", "W12345678"),
        ("<@U0ABC1234>", "U0ABC1234"),
        ("<@U0ABC1234|ann>", "U0ABC1234"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_slack_user_id(value: Any, expected: str | None) -> None:
    assert core.normalize_slack_user_id(value) == expected


@pytest.mark.parametrize("value", ["@ann", "ann", "C1234567890", "U1", "U" + "1" * 40, 7])
def test_normalize_slack_user_id_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="member ID"):
        core.normalize_slack_user_id(value)


# -- app manifest ----------------------------------------------------------------------------


def test_app_manifest() -> None:
    url = "https://tt.example.com/gateway/api/integrations/slack/events"
    manifest = core.app_manifest(url)
    (command,) = manifest["features"]["slash_commands"]
    assert (command["command"], command["url"]) == ("/tt", url)
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": url}
    assert manifest["oauth_config"]["scopes"]["bot"] == [
        "chat:write",
        "chat:write.public",
        "commands",
        "users:read",
    ]
    assert manifest["display_information"]["name"] == "TimeTracker"
    json.dumps(manifest)  # serialisable as JSON (and so as YAML)
    named = core.app_manifest(url, app_name="  Acme   time tracking " + "x" * 50)
    assert len(named["display_information"]["name"]) == core.APP_NAME_MAX
    assert named["features"]["bot_user"]["display_name"].startswith("Acme time tracking")
    with pytest.raises(ValueError):
        core.app_manifest("ftp://example.com/events")
