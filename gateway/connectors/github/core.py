"""GitHub connector core without I/O: signatures, payloads, task mapping, paging, rate limits, config."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from gateway.connectors.retry import header as _header
from gateway.connectors.retry import parse_retry_after

# -- signatures ------------------------------------------------------------------------------
# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries

SIGNATURE_PREFIX = "sha256="
_HEX_DIGEST_RE = re.compile(r"[0-9a-fA-F]{64}")


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for `body` signed with `secret`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True only if `header` is `sha256=<hex>` of `body` under a non-empty `secret`.

    Fails closed: no secret, no header or a malformed header is a mismatch, never a pass.
    """
    if not secret or not header:
        return False
    header = header.strip()
    if not header.startswith(SIGNATURE_PREFIX):
        return False
    given = header[len(SIGNATURE_PREFIX) :]
    # Checked before compare_digest, which raises TypeError on non-ASCII text.
    if not _HEX_DIGEST_RE.fullmatch(given):
        return False
    # One-shot C HMAC, compared as bytes: the same check as comparing sign()'s hex, cheaper.
    expected = hmac.digest(secret.encode("utf-8"), body, "sha256")
    return hmac.compare_digest(expected, bytes.fromhex(given))


# -- payloads --------------------------------------------------------------------------------


class PayloadError(ValueError):
    """A webhook body or REST answer that does not have the shape GitHub documents."""


def _clean(value: str) -> str:
    """Provider text without NUL characters, which PostgreSQL text columns cannot hold."""
    return value.replace("\x00", "") if "\x00" in value else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(items: Any, key: str, what: str) -> tuple[str, ...]:
    """Names of label or user objects (`key` of each); GitHub also allows plain label strings."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise PayloadError(f"issue.{what} must be a list")
    names: list[str] = []
    for item in items:
        if isinstance(item, str):
            name: Any = item
        elif isinstance(item, dict):
            name = item.get(key)
        else:
            raise PayloadError(f"issue.{what} items must be objects")
        if not isinstance(name, str):
            raise PayloadError(f"issue.{what} items need a string {key!r}")
        names.append(_clean(name))
    return tuple(names)


@dataclass(frozen=True)
class Issue:
    """The fields of a GitHub issue the connector uses (webhook `issue` and REST issues alike)."""

    number: int
    title: str
    body: str | None
    html_url: str
    state: str
    labels: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    is_pull_request: bool = False

    @classmethod
    def from_api(cls, data: Any) -> Issue:
        """Validate and pick the fields of an issue object; PayloadError if it is malformed."""
        if not isinstance(data, dict):
            raise PayloadError("issue must be an object")
        number = data.get("number")
        if not _is_int(number) or number < 1:
            raise PayloadError("issue.number must be a positive integer")
        title = data.get("title")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise PayloadError("issue.title must be a string")
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise PayloadError("issue.body must be a string or null")
        html_url = data.get("html_url")
        if not isinstance(html_url, str) or not html_url.startswith(("https://", "http://")):
            raise PayloadError("issue.html_url must be an http(s) URL")
        state = data.get("state")
        if not isinstance(state, str):
            raise PayloadError("issue.state must be a string")
        assignees = data.get("assignees")
        if assignees is None and isinstance(data.get("assignee"), dict):
            assignees = [data["assignee"]]  # older payloads carry only the single assignee
        return cls(
            number=number,
            title=_clean(title),
            body=_clean(body) if body is not None else None,
            html_url=_clean(html_url),
            state=_clean(state),
            labels=_names(data.get("labels"), "name", "labels"),
            assignees=_names(assignees, "login", "assignees"),
            # REST and webhooks mark pull requests with a `pull_request` object; a null counts
            # as absent ("Issues" REST docs: "You can identify pull requests by the
            # pull_request key").
            is_pull_request=data.get("pull_request") is not None,
        )


@dataclass(frozen=True)
class Delivery:
    """One verified webhook delivery, parsed."""

    event: str
    action: str | None
    repo_full_name: str | None
    issue: Issue | None
    assignee_login: str | None
    delivery_id: str | None


ASSIGNMENT_ACTIONS = frozenset({"assigned", "unassigned"})


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def json_of(body: bytes, content_type: str | None) -> bytes:
    """The JSON document of a delivery: the body, or its `payload=` field in GitHub's form mode.

    GitHub's webhook settings offer two content types; the form one posts the same JSON as a
    single url-encoded field (docs: "Webhook events and payloads", delivery headers).
    """
    if (content_type or "").split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        return body
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("form body is not url-encoded text") from exc
    values = fields.get("payload")
    if not values or len(values) != 1:
        raise PayloadError("form body needs exactly one payload field")
    return values[0].encode("utf-8", "surrogatepass")


def parse_delivery(event: str, body: bytes, delivery_id: str | None) -> Delivery:
    """Parse a webhook body (already verified); PayloadError on anything malformed."""
    try:
        # orjson: a delivery is parsed on every request, and the stdlib parser was ~10% of
        # the webhook handler's CPU (docs/PERFORMANCE.md). Strict UTF-8 and depth-limited.
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object")

    action = payload.get("action")
    if action is not None and not isinstance(action, str):
        raise PayloadError("action must be a string")

    repo_full_name: str | None = None
    repository = payload.get("repository")
    if repository is not None:
        if not isinstance(repository, dict):
            raise PayloadError("repository must be an object")
        repo_full_name = repository.get("full_name")
        if repo_full_name is not None and not isinstance(repo_full_name, str):
            raise PayloadError("repository.full_name must be a string")

    raw_issue = payload.get("issue")
    issue = Issue.from_api(raw_issue) if raw_issue is not None else None

    assignee_login: str | None = None
    if action in ASSIGNMENT_ACTIONS:
        # `assignee` is nullable in GitHub's schema for these actions.
        assignee = payload.get("assignee")
        if assignee is not None:
            if not isinstance(assignee, dict) or not isinstance(assignee.get("login"), str):
                raise PayloadError("assignee must be an object with a string login")
            assignee_login = _clean(assignee["login"])

    return Delivery(
        event=event,
        action=_clean(action) if action is not None else None,
        repo_full_name=_clean(repo_full_name) if repo_full_name is not None else None,
        issue=issue,
        assignee_login=assignee_login,
        delivery_id=delivery_id,
    )


EVENT_MAX = 100
DELIVERY_ID_MAX = 100
INTEGRATION_ID_MAX = 2**31 - 1  # the database's integer range


def from_http(headers: Mapping[str, str], body: bytes) -> Delivery:
    """A delivery from its request's headers and raw (already verified) body.

    The sans-I/O counterpart of gidgethub's `Event.from_http`: event name, delivery id and
    content type come from the headers; PayloadError for anything GitHub would not send.
    """
    event = (headers.get("X-GitHub-Event") or "").strip()
    if not event:
        raise PayloadError("missing X-GitHub-Event header")
    if len(event) > EVENT_MAX or not event.isascii():
        raise PayloadError("X-GitHub-Event is not an event name")
    delivery_id = (headers.get("X-GitHub-Delivery") or "").strip()[:DELIVERY_ID_MAX] or None
    return parse_delivery(event, json_of(body, headers.get("Content-Type")), delivery_id)


SIGNATURE_SHAPE = re.compile(r"sha256=[0-9a-fA-F]{64}")


def signature_shape_ok(headers: Mapping[str, str]) -> bool:
    """A cheap test before the body is read: is there a signature of the right shape?"""
    return SIGNATURE_SHAPE.fullmatch((headers.get("X-Hub-Signature-256") or "").strip()) is not None


def integration_id_param(value: str | None) -> int | None:
    """The webhook URL's `?integration=` id; None without one, ValueError for anything else.

    ASCII digits only (`str.isdigit` also accepts `²`), within the database's integer range.
    """
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise ValueError("not an integration id")
    number = int(value)
    if not 0 < number <= INTEGRATION_ID_MAX:
        raise ValueError("not an integration id")
    return number


# -- issue → task ----------------------------------------------------------------------------

TASK_NAME_MAX = 200  # TimeTracker's tasks.name is varchar(200)
ELLIPSIS = "…"


def external_ref(number: int) -> str:
    """The tasks.external_ref of an issue (unique per project, so one repository per project)."""
    return f"github_issue_{number}"


def task_name(issue: Issue) -> str:
    """The issue title, at most TASK_NAME_MAX characters, or a stand-in when it is blank."""
    title = issue.title.strip()
    if not title:
        return f"GitHub issue #{issue.number}"
    if len(title) > TASK_NAME_MAX:
        title = title[: TASK_NAME_MAX - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return title


DESCRIPTION_MAX = 64 * 1024  # a signed 20 MB body must not end up in tasks.description


def task_description(issue: Issue) -> str:
    """The issue body, a blank line and the issue's URL (only the URL when the body is empty).

    A body longer than DESCRIPTION_MAX is cut (the issue's URL still follows it).
    """
    body = (issue.body or "").rstrip()
    if len(body) > DESCRIPTION_MAX:
        body = body[: DESCRIPTION_MAX - len(ELLIPSIS)].rstrip() + ELLIPSIS
    url = issue.html_url[:2000]
    return f"{body}\n\n{url}" if body else url


# -- priority --------------------------------------------------------------------------------

PRIORITIES = ("low", "medium", "high", "urgent")  # TimeTracker's task priorities, ascending
DEFAULT_PRIORITY = "medium"

# Common label names (GitHub's default labels, the P0–P3 convention, "priority: x" labels),
# compared case-insensitively as whole names. An issue takes the highest priority among its
# labels; an issue none of whose labels is listed is "medium".
DEFAULT_PRIORITY_LABELS: dict[str, tuple[str, ...]] = {
    "urgent": ("critical", "urgent", "blocker", "p0", "priority: critical", "priority: urgent"),
    "high": ("bug", "regression", "high priority", "p1", "priority: high"),
    "medium": ("enhancement", "feature", "p2", "priority: medium"),
    "low": ("low priority", "p3", "priority: low", "documentation"),
}


def _label_key(name: str) -> str:
    return name.strip().casefold()


_DEFAULT_TABLE: Mapping[str, str] = {
    _label_key(label): priority
    for priority, labels in DEFAULT_PRIORITY_LABELS.items()
    for label in labels
}


def _priority_table(overrides: Mapping[str, Any] | None) -> Mapping[str, str]:
    if not overrides:
        return _DEFAULT_TABLE  # built once: this runs for every delivery
    table = dict(_DEFAULT_TABLE)
    # An override reassigns the labels it names; a label named under several priorities takes
    # the highest. Unknown priorities and non-string labels (hand-edited config) are ignored.
    reassigned: dict[str, str] = {}
    for priority in PRIORITIES:
        labels = overrides.get(priority)
        if not isinstance(labels, list | tuple):
            continue
        for label in labels:
            if isinstance(label, str) and label.strip():
                reassigned[_label_key(label)] = priority
    table.update(reassigned)
    return table


def priority_for(labels: Iterable[str], overrides: Mapping[str, Any] | None = None) -> str:
    """The task priority for an issue's labels.

    Rule: labels named in `overrides` (config `priority_labels`, priority → label names) take
    the overriding priority; every other label keeps its DEFAULT_PRIORITY_LABELS priority; the
    highest priority among the issue's labels wins; no known label → "medium".
    """
    table = _priority_table(overrides)
    found = [table[key] for key in map(_label_key, labels) if key in table]
    return max(found, key=PRIORITIES.index) if found else DEFAULT_PRIORITY


def matches_label_filter(labels: Iterable[str], label_filter: str | None) -> bool:
    """True when no filter is set or one of `labels` equals it, ignoring case."""
    if label_filter is None or not label_filter.strip():
        return True
    wanted = _label_key(label_filter)
    return any(_label_key(label) == wanted for label in labels)


# -- pagination ------------------------------------------------------------------------------
# https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api

_LINK_RE = re.compile(r"<([^>]*)>([^<]*)")
_REL_RE = re.compile(r';\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))', re.IGNORECASE)


def parse_link_header(value: str | None) -> dict[str, str]:
    """The URLs of an RFC 8288 `Link` header by relation (`next`, `last`, …); first one wins."""
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK_RE.finditer(value):
        url, params = match.group(1).strip(), match.group(2)
        rel = _REL_RE.search(params)
        if not url or rel is None:
            continue
        for name in (rel.group(1) or rel.group(2) or "").split():
            links.setdefault(name.lower(), url)
    return links


# -- rate limits -----------------------------------------------------------------------------
# https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
# #handle-rate-limit-errors-appropriately



def retry_delay(status: int, headers: Mapping[str, str], now: float) -> float | None:
    """Seconds GitHub asks us to wait before retrying, or None when it asks nothing.

    `retry-after` counts first (secondary limits, 503s); then a 403/429 with
    `x-ratelimit-remaining: 0` waits until `x-ratelimit-reset` (epoch seconds). Successful and
    other client-error answers never ask for a retry, whatever their headers say.
    """
    if status not in (403, 429) and status < 500:
        return None
    retry_after = _header(headers, "retry-after")
    if retry_after is not None:
        delay = parse_retry_after(retry_after, now)
        if delay is not None:
            return delay
    if status in (403, 429) and (_header(headers, "x-ratelimit-remaining") or "").strip() == "0":
        reset = (_header(headers, "x-ratelimit-reset") or "").strip()
        if reset.isascii() and reset.isdigit():
            return max(float(reset) - now, 0.0)
    return None


# -- configuration ---------------------------------------------------------------------------

# Owner: 1–39 ASCII letters, digits or single hyphens, not starting or ending with a hyphen.
OWNER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")
# Repository: 1–100 ASCII letters, digits, ".", "_" or "-"; "." and ".." are reserved.
REPO_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
LABEL_MAX = 100  # generous: GitHub itself caps label names at 50
LABELS_PER_PRIORITY_MAX = 100


def validate_owner(value: Any) -> bool:
    """True for a syntactically valid GitHub user or organisation name."""
    return isinstance(value, str) and OWNER_RE.fullmatch(value) is not None


def validate_repo(value: Any) -> bool:
    """True for a syntactically valid GitHub repository name."""
    return (
        isinstance(value, str) and REPO_RE.fullmatch(value) is not None and value not in (".", "..")
    )


def split_repository(value: Any) -> tuple[str, str]:
    """`owner/repo` (as GitHub and TimeTracker write it, or a github.com URL) → (owner, repo)."""
    if not isinstance(value, str):
        raise ValueError("repository must be written as owner/repo")
    text = value.strip().removesuffix(".git").rstrip("/")
    for prefix in ("https://github.com/", "http://github.com/", "github.com/"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    owner, sep, repo = text.partition("/")
    if not sep or not validate_owner(owner) or not validate_repo(repo):
        raise ValueError("repository must be written as owner/repo, e.g. octo-org/hello-world")
    return owner, repo


def normalize_label_filter(value: Any) -> str | None:
    """One label name, stripped, or None for no filter; ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("label_filter must be one label name or null")
    value = value.strip()
    if len(value) > LABEL_MAX:
        raise ValueError(f"label_filter: at most {LABEL_MAX} characters")
    return value or None


def normalize_priority_labels(value: Any) -> dict[str, list[str]]:
    """Config `priority_labels`: an object from low/medium/high/urgent to lists of label names.

    Keys are lower-cased, names stripped, blanks and case-insensitive repeats dropped, empty
    lists left out; a label under two priorities is an error, since the mapping would be
    ambiguous. None or {} mean "defaults only".
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            "priority_labels must be an object from low/medium/high/urgent to lists of labels"
        )
    result: dict[str, list[str]] = {}
    owner_of: dict[str, str] = {}
    for raw_key, labels in value.items():
        key = raw_key.strip().lower() if isinstance(raw_key, str) else raw_key
        if key not in PRIORITIES:
            raise ValueError(
                f"priority_labels: unknown priority {raw_key!r} (use low, medium, high, urgent)"
            )
        if key in result:
            raise ValueError(f"priority_labels: {key} is given twice")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"priority_labels.{key} must be a list of label names")
        if len(labels) > LABELS_PER_PRIORITY_MAX:
            raise ValueError(f"priority_labels.{key}: at most {LABELS_PER_PRIORITY_MAX} labels")
        names: list[str] = []
        for label in labels:
            name = label.strip()
            if not name:
                continue
            if len(name) > LABEL_MAX:
                raise ValueError(
                    f"priority_labels.{key}: label names have at most {LABEL_MAX} characters"
                )
            other = owner_of.get(_label_key(name))
            if other == key:
                continue
            if other is not None:
                raise ValueError(f"priority_labels: label {name!r} is under both {other} and {key}")
            owner_of[_label_key(name)] = key
            names.append(name)
        result[key] = names
    return {key: result[key] for key in PRIORITIES if result.get(key)}


# -- routing ---------------------------------------------------------------------------------

Handler = Callable[..., Any]


def ignored_key(event: str, action: str | None) -> str:
    """How an unhandled delivery is named in answers and logs: "event.action" or "event"."""
    return f"{event}.{action}" if action else event


class Router:
    """Handlers by (event, action); a handler registered without an action takes every action."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str | None], Handler] = {}

    def register(self, event: str, action: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: route `event` (and `action`, if given) to the decorated function."""

        def decorate(handler: Handler) -> Handler:
            key = (event, action)
            if key in self._handlers:
                raise ValueError(f"{ignored_key(event, action)} already has a handler")
            self._handlers[key] = handler
            return handler

        return decorate

    def lookup(self, event: str, action: str | None) -> Handler | None:
        """The handler for this exact action, else the event-wide one, else None."""
        return self._handlers.get((event, action)) or self._handlers.get((event, None))
