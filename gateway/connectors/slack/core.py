"""Slack connector core without I/O: signatures, requests, commands, matching, messages, config."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from gateway.connectors.retry import header as _header
from gateway.connectors.retry import parse_retry_after

# -- signatures ------------------------------------------------------------------------------
# https://docs.slack.dev/authentication/verifying-requests-from-slack

SIGNATURE_VERSION = "v0"
SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
# Slack's own example rejects requests whose timestamp is more than five minutes away from the
# local clock ("absolute_value(time.time() - timestamp) > 60 * 5"): a replay window both ways.
MAX_CLOCK_SKEW_SECONDS = 300
_SIGNATURE_RE = re.compile(r"v0=[0-9a-fA-F]{64}")
# ASCII digits only (str.isdigit accepts other scripts' digits); 12 digits reach year 33658.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")



def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    """The X-Slack-Signature value Slack sends for `body` at `timestamp` under `signing_secret`."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _fresh(timestamp: str, now: float) -> bool:
    return abs(now - int(timestamp)) <= MAX_CLOCK_SKEW_SECONDS


def verify_signature(
    signing_secret: str,
    timestamp: str | None,
    body: bytes,
    signature: str | None,
    *,
    now: float,
) -> bool:
    """True only if `signature` is Slack's v0 HMAC of `body` at a `timestamp` close to `now`.

    Fails closed: no secret, a missing or malformed header, a non-numeric timestamp or one more
    than MAX_CLOCK_SKEW_SECONDS away from `now` (either direction) is a mismatch, never a pass.
    """
    if not signing_secret or not timestamp or not signature:
        return False
    timestamp, signature = timestamp.strip(), signature.strip()
    if not _TIMESTAMP_RE.fullmatch(timestamp) or not _fresh(timestamp, now):
        return False
    # Checked before compare_digest, which raises TypeError on non-ASCII text.
    if not _SIGNATURE_RE.fullmatch(signature):
        return False
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    expected = hmac.digest(signing_secret.encode("utf-8"), base, "sha256")
    return hmac.compare_digest(expected, bytes.fromhex(signature[3:]))


def verify_headers(
    signing_secret: str, headers: Mapping[str, str], body: bytes, *, now: float
) -> bool:
    """verify_signature with the timestamp and signature read from the request's headers."""
    return verify_signature(
        signing_secret,
        _header(headers, TIMESTAMP_HEADER),
        body,
        _header(headers, SIGNATURE_HEADER),
        now=now,
    )


def signature_shape_ok(headers: Mapping[str, str], *, now: float | None = None) -> bool:
    """Cheap precheck before the body is read: both headers present and well formed.

    With `now`, a stale or future timestamp fails too, so replays cost no body read.
    """
    timestamp = (_header(headers, TIMESTAMP_HEADER) or "").strip()
    signature = (_header(headers, SIGNATURE_HEADER) or "").strip()
    if not _TIMESTAMP_RE.fullmatch(timestamp) or not _SIGNATURE_RE.fullmatch(signature):
        return False
    return now is None or _fresh(timestamp, now)


# -- requests --------------------------------------------------------------------------------
# Slash commands: https://docs.slack.dev/interactivity/implementing-slash-commands
# Interactivity: https://docs.slack.dev/reference/interaction-payloads/block_actions-payload
# Events API: https://docs.slack.dev/apis/events-api/ (url_verification, event_callback, retries)

# Parsing runs before the signature can be checked (the signing secret is per user, found by
# the user id in the body), so it must stand hostile input: bounded body, fields and lengths.
MAX_BODY_BYTES = 1024 * 1024
MAX_FORM_FIELDS = 100
ID_MAX = 64
TEXT_MAX = 4000
NAME_MAX = 256
URL_MAX = 2048
CHALLENGE_MAX = 1024
_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_COMMAND_RE = re.compile(r"/[^\s/]{1,63}")
_RETRY_NUM_RE = re.compile(r"[0-9]{1,4}")


class PayloadError(ValueError):
    """A request body that does not have the shape Slack documents."""


def _clean(value: str, cap: int) -> str:
    """Text without NUL characters, at most `cap` characters."""
    return value.replace("\x00", "")[:cap]


def _text(data: Mapping[str, Any], key: str, cap: int, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise PayloadError(f"{key} is missing")
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{key} must be a string")
    return _clean(value, cap)


def _id(data: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = _text(data, key, ID_MAX + 1, required=required)
    if value and not _ID_RE.fullmatch(value):
        raise PayloadError(f"{key} is not a Slack id")
    return value


def _https_url(value: str) -> str:
    """`value` if it is a plain https URL, else "": the service may POST to it (response_url)."""
    if len(value) > URL_MAX or not value.startswith("https://"):
        return ""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        return ""
    return value


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{key} must be an object")
    return value


@dataclass(frozen=True)
class SlackRequest:
    """Base of every parsed request; `from_http` picks the subclass."""

    @property
    def dedup_key(self) -> str | None:
        """A key unique to this request across Slack's retries, or None when there is none."""
        return None

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes) -> SlackRequest:
        """Parse a request body (form-encoded or JSON); PayloadError on anything malformed.

        Does not verify the signature: call verify_signature with the integration's secret.
        """
        if len(body) > MAX_BODY_BYTES:
            raise PayloadError("body is too large")
        content_type = (_header(headers, "Content-Type") or "").lower()
        if "json" in content_type or ("form" not in content_type and body.lstrip()[:1] == b"{"):
            return _from_json(headers, body)
        return _from_form(body)


@dataclass(frozen=True)
class SslCheck(SlackRequest):
    """Slack checking the certificate (`ssl_check=1`); answer 200 with an empty body."""


@dataclass(frozen=True)
class UrlVerification(SlackRequest):
    """The Events API handshake: answer with `challenge`."""

    challenge: str


@dataclass(frozen=True)
class SlashCommand(SlackRequest):
    """One invocation of a slash command such as `/tt start Website`."""

    team_id: str
    user_id: str
    user_name: str
    channel_id: str
    command: str
    text: str
    response_url: str
    trigger_id: str

    @property
    def dedup_key(self) -> str | None:
        return self.trigger_id or None


@dataclass(frozen=True)
class BlockAction(SlackRequest):
    """A click on an interactive Block Kit element (the first action of the payload)."""

    team_id: str
    user_id: str
    action_id: str
    value: str | None
    channel_id: str
    message_ts: str
    response_url: str
    trigger_id: str = ""
    action_ts: str = ""

    @property
    def dedup_key(self) -> str | None:
        return f"{self.action_id}:{self.action_ts}" if self.action_ts else None


@dataclass(frozen=True)
class EventCallback(SlackRequest):
    """An Events API delivery; Slack retries it with the same event_id (X-Slack-Retry-Num)."""

    event_id: str
    team_id: str
    event_type: str
    event: Mapping[str, Any] = field(hash=False)
    retry_num: int | None = None
    retry_reason: str | None = None

    @property
    def dedup_key(self) -> str | None:
        return self.event_id


@dataclass(frozen=True)
class Unhandled(SlackRequest):
    """A well-formed request of a kind the connector does not act on (answer 200, ignore)."""

    kind: str


def _from_form(body: bytes) -> SlackRequest:
    try:
        pairs = parse_qsl(
            body.decode("utf-8", errors="replace"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="replace",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError as exc:  # more than max_num_fields
        raise PayloadError("too many form fields") from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)  # a repeated field keeps its first value
    if not form:
        raise PayloadError("body is empty")
    if form.get("ssl_check") == "1":
        return SslCheck()
    if "payload" in form:
        return _interaction(form["payload"])
    if "command" in form:
        command = _text(form, "command", 65, required=True)
        if not _COMMAND_RE.fullmatch(command):
            raise PayloadError("command must look like /name")
        return SlashCommand(
            team_id=_id(form, "team_id", required=True),
            user_id=_id(form, "user_id", required=True),
            user_name=_text(form, "user_name", NAME_MAX),
            channel_id=_id(form, "channel_id"),
            command=command,
            text=_text(form, "text", TEXT_MAX),
            response_url=_https_url(_text(form, "response_url", URL_MAX + 1)),
            trigger_id=_text(form, "trigger_id", NAME_MAX),
        )
    raise PayloadError("form body is neither a slash command, an interaction nor ssl_check")


def _loads(raw: str | bytes) -> Any:
    try:
        # orjson: strict UTF-8, depth-limited; NUL escapes are removed field by field.
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("body is not valid JSON") from exc


def _interaction(raw: str) -> SlackRequest:
    payload = _loads(raw)
    if not isinstance(payload, dict):
        raise PayloadError("payload must be a JSON object")
    kind = _text(payload, "type", NAME_MAX, required=True)
    if kind != "block_actions":
        return Unhandled(kind=kind)
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise PayloadError("block_actions needs a non-empty actions list")
    action = actions[0]
    user = _object(payload, "user")
    team = _object(payload, "team")
    channel = _object(payload, "channel")
    container = _object(payload, "container")
    message = _object(payload, "message")
    value = action.get("value")
    if value is not None and not isinstance(value, str):
        raise PayloadError("actions[0].value must be a string")
    return BlockAction(
        # An org-wide install may send a null team; the user still names their workspace.
        team_id=_id(team, "id") or _id(user, "team_id"),
        user_id=_id(user, "id", required=True),
        action_id=_text(action, "action_id", 255, required=True),
        value=None if value is None else _clean(value, 2000),
        channel_id=_id(channel, "id") or _id(container, "channel_id"),
        message_ts=_text(container, "message_ts", ID_MAX) or _text(message, "ts", ID_MAX),
        response_url=_https_url(_text(payload, "response_url", URL_MAX + 1)),
        trigger_id=_text(payload, "trigger_id", NAME_MAX),
        action_ts=_text(action, "action_ts", ID_MAX),
    )


def _from_json(headers: Mapping[str, str], body: bytes) -> SlackRequest:
    payload = _loads(body)
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object")
    kind = _text(payload, "type", NAME_MAX, required=True)
    if kind == "url_verification":
        challenge = _text(payload, "challenge", CHALLENGE_MAX + 1, required=True)
        if len(challenge) > CHALLENGE_MAX:
            raise PayloadError("challenge is too long")
        return UrlVerification(challenge=challenge)
    if kind != "event_callback":
        return Unhandled(kind=kind)
    event = payload.get("event")
    if not isinstance(event, dict):
        raise PayloadError("event must be an object")
    retry_num = (_header(headers, "X-Slack-Retry-Num") or "").strip()
    retry_reason = _clean((_header(headers, "X-Slack-Retry-Reason") or "").strip(), 64)
    return EventCallback(
        event_id=_id(payload, "event_id", required=True),
        team_id=_id(payload, "team_id"),
        event_type=_text(event, "type", NAME_MAX, required=True),
        event=event,
        retry_num=int(retry_num) if _RETRY_NUM_RE.fullmatch(retry_num) else None,
        retry_reason=retry_reason or None,
    )


# -- commands --------------------------------------------------------------------------------

VERBS = ("start", "stop", "status", "today", "help")
Verb = Literal["start", "stop", "status", "today", "help"]


def unescape_mrkdwn(text: str) -> str:
    """Undo Slack's escaping of &, < and > in text it sends (the same three, `&amp;` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@dataclass(frozen=True)
class Command:
    """A parsed `/tt` text. `unknown` holds a verb that was not understood (answered by help)."""

    verb: Verb
    argument: str = ""
    project: str | None = None
    task: str | None = None
    unknown: str | None = None


def parse_command(text: str) -> Command:
    """`start [project[ / task]]`, `stop`, `status`, `today`, `help`; anything else is help.

    The project and task are split at the first "/": a project whose name holds one is still
    reachable by its id or a partial name. `argument` keeps the whole text after the verb.
    """
    text = " ".join(unescape_mrkdwn(_clean(text or "", TEXT_MAX)).split())
    if not text:
        return Command("help")
    word, _, rest = text.partition(" ")
    verb = word.casefold()
    if verb not in VERBS:
        return Command("help", argument=text, unknown=word[:50])
    if verb != "start":
        return Command(verb, argument=rest)  # type: ignore[arg-type]
    project, slash, task = rest.partition("/")
    return Command(
        "start",
        argument=rest,
        project=project.strip() or None,
        task=(task.strip() or None) if slash else None,
    )


# -- matching --------------------------------------------------------------------------------

AMBIGUOUS_SHOWN = 5


@dataclass(frozen=True)
class Match:
    """The outcome of matching a typed name: found (id, name), ambiguous or not found."""

    status: Literal["found", "ambiguous", "not_found"]
    id: int | None = None
    name: str | None = None
    candidates: tuple[tuple[int, str], ...] = ()  # up to AMBIGUOUS_SHOWN, for ambiguous
    total: int = 0  # how many matched

    @property
    def found(self) -> bool:
        return self.status == "found"


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def match_by_name(query: str, candidates: Sequence[tuple[int, str]]) -> Match:
    """Pick a project (or task) by id or name, ignoring case and repeated spaces.

    Order: a number that is a candidate's id; then a unique exact name; then a unique partial
    (substring) name. Several exact or several partial matches are ambiguous, with the first
    AMBIGUOUS_SHOWN of them (in the order given) to show; nothing is not_found.
    """
    wanted = _fold(query or "")
    if not wanted:
        return Match("not_found")
    number = wanted.removeprefix("#")
    if number.isascii() and number.isdigit() and len(number) <= 18:
        for ident, name in candidates:
            if ident == int(number):
                return Match("found", ident, name, total=1)
    exact = [(i, n) for i, n in candidates if _fold(n or "") == wanted]
    matches = exact or [(i, n) for i, n in candidates if wanted in _fold(n or "")]
    if len(matches) == 1:
        ident, name = matches[0]
        return Match("found", ident, name, total=1)
    if matches:
        return Match("ambiguous", candidates=tuple(matches[:AMBIGUOUS_SHOWN]), total=len(matches))
    return Match("not_found")


# -- formatting ------------------------------------------------------------------------------
# https://docs.slack.dev/messaging/formatting-message-text#escaping

NAME_SHOWN_MAX = 200
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape_mrkdwn(text: str) -> str:
    """Escape Slack's three control characters, so names cannot become links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _shown(name: str | None, fallback: str = "") -> str:
    """A name for a message: controls removed, one line, capped, escaped."""
    name = " ".join(_CONTROL_RE.sub("", name or "").split()) or fallback
    if len(name) > NAME_SHOWN_MAX:
        name = name[: NAME_SHOWN_MAX - 1].rstrip() + "…"
    return escape_mrkdwn(name)


def format_duration(seconds: float) -> str:
    """`45s` under a minute, `12m` under an hour, else `1h 05m` (no days: `26h 00m`)."""
    total = max(int(seconds), 0)
    if total < 60:
        return f"{total}s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def format_hours(hours: float) -> str:
    """Hours with up to two decimals and no trailing zeros: 7.5, 3.25, 0."""
    text = f"{max(hours, 0.0):.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _hhmm(moment: datetime | time) -> str:
    return moment.strftime("%H:%M")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _work(project: str | None, task: str | None) -> str:
    """`*Project* — task` for replies (bold project, escaped names)."""
    shown = f"*{_shown(project, 'No project')}*"
    return f"{shown} — {_shown(task)}" if task and task.strip() else shown


def _section(text: str) -> dict[str, Any]:
    # A section's text holds at most 3000 characters (Block Kit reference, section block).
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def _ephemeral(text: str, *, fallback: str | None = None) -> dict[str, Any]:
    """An ephemeral reply: only the user who ran the command sees it."""
    return {
        "response_type": "ephemeral",
        "text": fallback if fallback is not None else text,
        "blocks": [_section(text)],
    }


# -- replies to /tt --------------------------------------------------------------------------

COMMAND = "/tt"


def reply_started(project: str, task: str | None, started_at: datetime | time) -> dict[str, Any]:
    """Timer started."""
    return _ephemeral(
        f":stopwatch: Timer started on {_work(project, task)} at {_hhmm(started_at)}."
    )


def reply_already_running(
    project: str,
    task: str | None,
    started_at: datetime | time,
    elapsed_seconds: float,
    *,
    command: str = COMMAND,
) -> dict[str, Any]:
    """A timer runs already: say which, and how to stop it."""
    return _ephemeral(
        f":warning: A timer is already running on {_work(project, task)} since "
        f"{_hhmm(started_at)} ({format_duration(elapsed_seconds)}). "
        f"Stop it first with `{command} stop`."
    )


def reply_stopped(project: str, task: str | None, duration_seconds: float) -> dict[str, Any]:
    """Timer stopped, with its duration."""
    return _ephemeral(
        f":white_check_mark: Timer stopped on {_work(project, task)} after "
        f"*{format_duration(duration_seconds)}*."
    )


def reply_not_running(*, command: str = COMMAND) -> dict[str, Any]:
    """`stop` or `status` with no timer running."""
    return _ephemeral(f"No timer is running. Start one with `{command} start &lt;project&gt;`.")


def reply_status(
    project: str, task: str | None, started_at: datetime | time, elapsed_seconds: float
) -> dict[str, Any]:
    """The running timer: project, task, start time, elapsed time."""
    return _ephemeral(
        f":stopwatch: Running on {_work(project, task)} since {_hhmm(started_at)} "
        f"({format_duration(elapsed_seconds)} so far)."
    )


def reply_today(hours: float, projects: int) -> dict[str, Any]:
    """Today's total hours and how many projects they span."""
    if hours <= 0:
        return _ephemeral(":bar_chart: Nothing logged today yet.")
    return _ephemeral(
        f":bar_chart: Today: *{format_hours(hours)}h* across {_plural(projects, 'project')}."
    )


def reply_not_linked(slack_user_id: str, settings_url: str | None = None) -> dict[str, Any]:
    """The Slack user is not linked to a TimeTracker user: how to link."""
    where = "Integrations → Slack"
    if settings_url and _https_or_http(settings_url):
        where = f"<{escape_mrkdwn(settings_url)}|{where}>"
    member = _shown(slack_user_id)
    return _ephemeral(
        f"Your Slack account is not linked to TimeTracker yet. Open {where} in TimeTracker, "
        f"paste your Slack member ID `{member}` into the *Slack user ID* field and save.",
        fallback="Your Slack account is not linked to TimeTracker yet: paste your Slack member "
        f"ID {member} into the Slack user ID field of the Slack card in TimeTracker.",
    )


def _https_or_http(url: str) -> bool:
    return url.startswith(("https://", "http://")) and not any(
        ch.isspace() or ch in "<>|" for ch in url
    )


def reply_project_required(*, command: str = COMMAND) -> dict[str, Any]:
    """`start` without a project."""
    return _ephemeral(
        f"Which project? Use `{command} start &lt;project&gt;` or `{command} start &lt;project&gt; / &lt;task&gt;`; "
        "a project id or part of its name is enough."
    )


def reply_ambiguous(
    kind: str, query: str, match: Match, *, command: str = COMMAND
) -> dict[str, Any]:
    """Several projects (or tasks) match: list some, and say how to pick one."""
    lines = [f"• {_shown(name)} (id {ident})" for ident, name in match.candidates]
    more = match.total - len(match.candidates)
    if more > 0:
        lines.append(f"• …and {more} more")
    return _ephemeral(
        f"Several {kind}s match “{_shown(query)}”:\n"
        + "\n".join(lines)
        + "\n"
        + (
            f"Type more of the name, or the id (`{command} start &lt;id&gt;`)."
            if kind == "project"
            else "Type more of the name, or its id."
        )
    )


def reply_not_found(kind: str, query: str) -> dict[str, Any]:
    """No project (or task) matches."""
    return _ephemeral(
        f"No {kind} you can log time on matches “{_shown(query)}”. "
        f"Check the name, or use the {kind}'s id."
    )


def reply_help(unknown: str | None = None, *, command: str = COMMAND) -> dict[str, Any]:
    """The usage text; `unknown` is a verb that was not understood."""
    intro = f"I don't know “{_shown(unknown)}”. " if unknown else ""
    c = escape_mrkdwn(command)
    return _ephemeral(
        f"{intro}*TimeTracker commands*\n"
        f"• `{c} start &lt;project&gt;` — start a timer (project id or part of its name)\n"
        f"• `{c} start &lt;project&gt; / &lt;task&gt;` — start a timer on a task\n"
        f"• `{c} stop` — stop the running timer\n"
        f"• `{c} status` — show the running timer\n"
        f"• `{c} today` — hours logged today\n"
        f"• `{c} help` — this text"
    )


def reply_error(message: str) -> dict[str, Any]:
    """Any other refusal (archived project, timer service unavailable…), as one sentence."""
    return _ephemeral(f":warning: {_shown(message, 'Something went wrong.')}")


def reply_stop_refused() -> dict[str, Any]:
    """The Stop button of someone else's timer."""
    return {
        **_ephemeral("You can only stop your own timer: this one belongs to someone else."),
        "replace_original": False,
    }


def reply_stop_stale() -> dict[str, Any]:
    """The Stop button of a timer that is not running any more."""
    return {**_ephemeral("This timer has already stopped."), "replace_original": False}


# -- channel notifications -------------------------------------------------------------------
# Formats: the connector's user documentation ("Notification format").

STOP_ACTION_ID = "tt_stop_timer"


def timer_started_message(
    user_name: str,
    project: str,
    task: str | None,
    started_at: datetime | time,
    entry_id: int | None = None,
) -> dict[str, Any]:
    """The timer-start post; with `entry_id`, a Stop button whose value is the entry id."""
    name, shown_project = _shown(user_name, "Someone"), _shown(project, "No project")
    suffix = f" — {_shown(task)}" if task and task.strip() else ""
    text = (
        f":stopwatch: *{name}* started a timer\n"
        f"*Project:* {shown_project}{suffix}\n"
        f"*Started at:* {_hhmm(started_at)}"
    )
    blocks: list[dict[str, Any]] = [_section(text)]
    if entry_id is not None:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"tt_timer_{entry_id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": STOP_ACTION_ID,
                        "text": {"type": "plain_text", "text": "Stop", "emoji": False},
                        "style": "danger",
                        "value": str(entry_id),
                    }
                ],
            }
        )
    return {"text": f"{name} started a timer on {shown_project}{suffix}", "blocks": blocks}


def timer_stopped_message(
    user_name: str, project: str, duration_seconds: float, billable: bool
) -> dict[str, Any]:
    """The timer-stop post."""
    name, shown_project = _shown(user_name, "Someone"), _shown(project, "No project")
    duration = format_duration(duration_seconds)
    text = (
        f":white_check_mark: *{name}* stopped a timer\n"
        f"*Project:* {shown_project}\n"
        f"*Duration:* {duration}\n"
        f"*Billable:* {'Yes' if billable else 'No'}"
    )
    return {
        "text": f"{name} stopped a timer on {shown_project} after {duration}",
        "blocks": [_section(text)],
    }


def daily_summary_message(user_name: str, hours: float, projects: int) -> dict[str, Any]:
    """The daily summary post."""
    name = _shown(user_name, "Someone")
    logged = f"{format_hours(hours)}h across {_plural(projects, 'project')}"
    text = (
        f":bar_chart: *Daily summary for {name}*\n*Hours logged:* {logged}\nHave a great evening!"
    )
    return {"text": f"Daily summary for {name}: {logged}", "blocks": [_section(text)]}


def connection_test_message(user_name: str) -> dict[str, Any]:
    """The post of the card's Test button."""
    text = f":wave: TimeTracker can post here (test sent by *{_shown(user_name, 'someone')}*)."
    return {"text": text, "blocks": [_section(text)]}


def stop_button_entry_id(action: BlockAction) -> int | None:
    """The time entry id of a Stop button click, or None for any other action or value."""
    value = (action.value or "").strip()
    if action.action_id != STOP_ACTION_ID or not re.fullmatch(r"[1-9][0-9]{0,17}", value):
        return None
    return int(value)


# -- Web API answers -------------------------------------------------------------------------
# Errors come as HTTP 200 with {"ok": false, "error": "<code>"}; rate limits as HTTP 429 with
# Retry-After (seconds): https://docs.slack.dev/apis/web-api/#responses,
# https://docs.slack.dev/apis/web-api/rate-limits

DEFAULT_RATE_LIMIT_WAIT = 30.0
_ERROR_CODE_RE = re.compile(r"[a-z0-9_.]{1,64}")
_SCOPES_RE = re.compile(r"[a-z0-9:._-]{1,64}(?:,[a-z0-9:._-]{1,64}){0,9}")  # missing_scope
_REPASTE_HINT = "copy the Bot User OAuth Token (xoxb-...) again from OAuth & Permissions"
_TRANSIENT_CODES = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# {channel} and {needed} are filled in; every sentence says what to fix.
_PERMANENT_MESSAGES: Mapping[str, str] = {
    "channel_not_found": (
        "Slack does not know channel {channel}: check the channel ID, and invite the bot with "
        "/invite @YourBot"
    ),
    "not_in_channel": (
        "The bot is not in channel {channel}: invite it with /invite @YourBot (or add the "
        "chat:write.public scope and reinstall the app, for public channels)"
    ),
    "is_archived": "Channel {channel} is archived: choose another channel",
    "invalid_auth": f"Slack rejected the bot token: {_REPASTE_HINT}",
    "not_authed": f"No bot token was sent: {_REPASTE_HINT}",
    "account_inactive": (
        "The Slack app's bot or the user who installed it was deactivated: reinstall the app "
        "and copy the new Bot User OAuth Token (xoxb-...) from OAuth & Permissions"
    ),
    "token_revoked": (
        "The bot token was revoked (was the app uninstalled?): reinstall the app and copy the "
        "new Bot User OAuth Token (xoxb-...) from OAuth & Permissions"
    ),
    "token_expired": (
        "The bot token expired (token rotation is on): turn token rotation off for the app and "
        "copy the Bot User OAuth Token (xoxb-...) again"
    ),
    "not_allowed_token_type": (
        "Slack does not accept this kind of token here: use the Bot User OAuth Token (xoxb-...) "
        "from OAuth & Permissions"
    ),
    "missing_scope": (
        "The bot token lacks the {needed} scope: add it under OAuth & Permissions → Bot Token "
        "Scopes, reinstall the app and copy the new token"
    ),
    "no_permission": (
        "The workspace does not let the bot do this in {channel}: ask a Slack admin, or pick "
        "another channel"
    ),
    "restricted_action": (
        "The workspace's settings keep the bot from posting in {channel}: ask a Slack admin"
    ),
    "ekm_access_denied": "The workspace's key management refused the post: ask a Slack admin",
    "invalid_blocks": "Slack rejected the message layout; please report this to the gateway's admins",
    "invalid_blocks_format": (
        "Slack rejected the message layout; please report this to the gateway's admins"
    ),
    "msg_too_long": "The message was too long for Slack",
    "no_text": "The message was empty",
    "user_not_found": "Slack does not know that user: check the Slack user ID",
}


@dataclass(frozen=True)
class ApiOutcome:
    """What a Slack Web API answer means for the caller."""

    ok: bool
    error_code: str | None = None
    retry_after: float | None = None  # seconds, for retryable outcomes that say how long
    permanent: bool = False  # retrying cannot help until someone changes the configuration
    message: str = ""

    @property
    def retryable(self) -> bool:
        return not self.ok and not self.permanent


def retry_delay(status: int, headers: Mapping[str, str], now: float) -> float | None:
    """Seconds Slack asks us to wait (429 or 5xx with Retry-After), or None; an HttpClient policy."""
    if status != 429 and status < 500:
        return None
    value = _header(headers, "Retry-After")
    return None if value is None else parse_retry_after(value, now)


def interpret_api_answer(
    status: int | None,
    headers: Mapping[str, str],
    data: Any,
    *,
    channel: str | None = None,
    now: float = 0.0,
) -> ApiOutcome:
    """Classify an answer: ok, retryable (with a wait if Slack named one), or permanent.

    `status` None means no answer at all (network error, timeout): retryable. `now` only
    matters for a Retry-After given as an HTTP date.
    """
    if status is None:
        return ApiOutcome(False, None, None, False, "Slack did not answer; will try again later")
    if status == 429:
        wait = retry_delay(status, headers, now)
        wait = DEFAULT_RATE_LIMIT_WAIT if wait is None else wait
        return ApiOutcome(
            False,
            "ratelimited",
            wait,
            False,
            f"Slack is rate-limiting this app: retry in {wait:g} s",
        )
    if status >= 500:
        return ApiOutcome(
            False,
            None,
            retry_delay(status, headers, now),
            False,
            f"Slack answered HTTP {status}; will try again later",
        )
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        if status >= 400:
            return ApiOutcome(
                False,
                None,
                None,
                True,
                f"Slack answered HTTP {status}: check SLACK_API_URL and the API method",
            )
        # A 2xx without Slack's envelope: likely a proxy or captive portal; may pass.
        return ApiOutcome(False, None, None, False, f"Slack's answer (HTTP {status}) was not JSON")
    if data["ok"]:
        return ApiOutcome(True)
    raw_code = data.get("error")
    code = raw_code if isinstance(raw_code, str) and _ERROR_CODE_RE.fullmatch(raw_code) else None
    if code is None:
        return ApiOutcome(False, None, None, True, "Slack refused the call without saying why")
    if code in _TRANSIENT_CODES:
        return ApiOutcome(False, code, None, False, f"Slack answered {code}; will try again later")
    needed = data.get("needed")
    template = _PERMANENT_MESSAGES.get(code, "Slack answered {code}")
    message = template.format(
        channel=_shown(channel) if channel else "(none set)",
        needed=needed if isinstance(needed, str) and _SCOPES_RE.fullmatch(needed) else "required",
        code=code,
    )
    return ApiOutcome(False, code, None, True, message)


# -- daily summary ---------------------------------------------------------------------------

SUMMARY_WINDOW = timedelta(minutes=30)  # the slack_daily_summary job runs every 30 minutes
DEFAULT_SUMMARY_TIME = "18:00"
_HHMM_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def parse_hhmm(value: Any) -> time:
    """`HH:MM` (24-hour; `9:05` accepted) as a time; ValueError with a user-facing message."""
    match = _HHMM_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError("daily_summary_time must be a 24-hour time like 18:00")
    return time(int(match.group(1)), int(match.group(2)))


def normalize_hhmm(value: Any, default: str = DEFAULT_SUMMARY_TIME) -> str:
    """Config `daily_summary_time` as `HH:MM`; None or blank → `default`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return parse_hhmm(value).strftime("%H:%M")


def _local_moment(day: date, at: time, tz: tzinfo) -> datetime:
    """The instant the wall clock in `tz` shows `at` on `day`.

    A wall time the DST switch skips (02:30 on a spring-forward day) resolves with the offset
    before the switch, i.e. just after the gap; a repeated one (autumn) is its first occurrence.
    Either way every day has exactly one such instant.
    """
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def summary_due(
    now_utc: datetime,
    user_tz: tzinfo,
    summary_time: str | time,
    window: timedelta = SUMMARY_WINDOW,
) -> date | None:
    """The user's local day whose summary is due now, or None.

    Due when `now_utc` lies in [summary time, summary time + window) measured in real elapsed
    time, so a job running every `window` catches each day exactly once, DST days included.
    A window that crosses midnight still belongs to the day it started on. Naive `now_utc` is
    taken as UTC.
    """
    at = summary_time if isinstance(summary_time, time) else parse_hhmm(summary_time)
    now = now_utc.replace(tzinfo=UTC) if now_utc.tzinfo is None else now_utc.astimezone(UTC)
    today = now.astimezone(user_tz).date()
    for day in (today, today - timedelta(days=1)):
        start = _local_moment(day, at, user_tz)
        if start <= now < start + window:
            return day
    return None


# -- configuration ---------------------------------------------------------------------------

TOKEN_MAX = 512
SIGNING_SECRET_MAX = 128
_TOKEN_RE = re.compile(r"(?:xoxe\.)?xox[bp]-[A-Za-z0-9-]{1,500}")
_SIGNING_SECRET_RE = re.compile(r"[A-Za-z0-9]{16,128}")
# Ids hold a digit: "GENERAL" is a (mistyped) name, not an id.
_CHANNEL_ID_RE = re.compile(r"[CGD](?=[A-Z]*[0-9])[A-Z0-9]{6,20}")
# Channel names: lower-case letters, digits, hyphens, underscores and periods, up to 80.
_CHANNEL_NAME_RE = re.compile(r"#?([a-z0-9][a-z0-9._-]{0,79})")
_USER_ID_RE = re.compile(r"[UW][A-Z0-9]{6,20}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def normalize_bot_token(value: Any) -> str | None:
    """Config `bot_token`: a bot (xoxb-) or user (xoxp-) token, stripped; None when blank."""
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise ValueError("bot_token must be text")
    value = value.strip()
    if len(value) > TOKEN_MAX:
        raise ValueError(f"bot_token: at most {TOKEN_MAX} characters")
    if not _TOKEN_RE.fullmatch(value):
        raise ValueError(
            "bot_token must be the Bot User OAuth Token (it starts with xoxb-) from your Slack "
            "app's OAuth & Permissions page"
        )
    return value


def normalize_signing_secret(value: Any) -> str | None:
    """Config `signing_secret`: letters and digits, stripped; None when blank."""
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise ValueError("signing_secret must be text")
    value = value.strip()
    if value.startswith(("xox", "xapp-")):
        raise ValueError(
            "signing_secret: this looks like a token; the signing secret is under Basic "
            "Information → App Credentials"
        )
    if len(value) > SIGNING_SECRET_MAX:
        raise ValueError(f"signing_secret: at most {SIGNING_SECRET_MAX} characters")
    if not _SIGNING_SECRET_RE.fullmatch(value):
        raise ValueError(
            "signing_secret must be the Signing Secret from Basic Information → App Credentials "
            "(letters and digits)"
        )
    return value


def normalize_channel_id(value: Any) -> str | None:
    """Config `channel_id`: an id (C…, G…, D…) or a `#name`; a Slack channel link gives its id.

    None when blank (no channel: nothing is posted).
    """
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise ValueError("channel_id must be text")
    value = value.strip()
    if value.startswith("https://"):
        # "Copy link" gives …/archives/C0123ABCD or …/client/T…/C0123ABCD.
        value = value.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if _CHANNEL_ID_RE.fullmatch(value):
        return value
    if value.startswith("#"):
        value = value.lower()  # Slack keeps channel names lower-case
    name = _CHANNEL_NAME_RE.fullmatch(value)
    if name is not None:
        return "#" + name.group(1)
    raise ValueError(
        "channel_id must be a channel ID like C1234567890 (channel details → About) or a "
        "public channel name like #general"
    )


def normalize_slack_user_id(value: Any) -> str | None:
    """Config `linked_slack_user_id`: a member ID (U… or W…), upper-cased; None when blank."""
    if _blank(value):
        return None
    text = value if isinstance(value, str) else ""
    candidate = text.strip().removeprefix("<@").removesuffix(">").split("|", 1)[0].upper()
    if not _USER_ID_RE.fullmatch(candidate):
        raise ValueError(
            "linked_slack_user_id must be your Slack member ID like U0ABC1234 (in Slack: your "
            "profile → ⋮ → Copy member ID), not your display name"
        )
    return candidate


# -- app manifest ----------------------------------------------------------------------------
# https://docs.slack.dev/reference/app-manifest

BOT_SCOPES = ("chat:write", "chat:write.public", "commands", "users:read")
APP_NAME_MAX = 35  # display_information.name


def app_manifest(events_url: str, app_name: str = "TimeTracker") -> dict[str, Any]:
    """A manifest for "Create an app → From a manifest": /tt and the Stop button on one URL."""
    if not _https_or_http(events_url):
        raise ValueError("events_url must be an http(s) URL")
    name = " ".join(app_name.split())[:APP_NAME_MAX] or "TimeTracker"
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name,
            "description": "Start and stop TimeTracker timers from Slack",
        },
        "features": {
            "bot_user": {"display_name": name, "always_online": False},
            "slash_commands": [
                {
                    "command": COMMAND,
                    "url": events_url,
                    "description": "TimeTracker timer control",
                    "usage_hint": "start [project / task] | stop | status | today | help",
                    "should_escape": False,
                }
            ],
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "interactivity": {"is_enabled": True, "request_url": events_url},
            "org_deploy_enabled": False,
            "socket_mode_enabled": False,
            "token_rotation_enabled": False,
        },
    }
