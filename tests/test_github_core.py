"""GitHub connector core: GitHub's published payloads and signature test vector, no I/O."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.connectors.github import core
from tests.conftest import FIXTURES

GITHUB = FIXTURES / "github"
WEBHOOKS = GITHUB / "webhooks"
FIXTURE_NAMES = sorted(p.stem for p in WEBHOOKS.glob("*.json"))


def raw(name: str) -> bytes:
    return (WEBHOOKS / f"{name}.json").read_bytes()


def payload(name: str) -> dict[str, Any]:
    return json.loads(raw(name))


def issue_data(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(payload("issues.opened")["issue"])
    data.update(changes)
    return data


def make_issue(**changes: Any) -> core.Issue:
    return core.Issue.from_api(issue_data(**changes))


def test_fixtures_are_there() -> None:
    # Guards the parametrised tests below against silently collecting nothing.
    assert {"issues.opened", "issues.assigned", "issues.opened.with-empty-body", "ping"} <= set(
        FIXTURE_NAMES
    )


# -- signatures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vector() -> dict[str, str]:
    return json.loads((GITHUB / "signature-test-vector.json").read_text())


def test_sign_reproduces_githubs_published_vector(vector: dict[str, str]) -> None:
    assert core.sign(vector["secret"], vector["payload"].encode()) == vector["expected_signature"]


def test_valid_signature_verifies(vector: dict[str, str]) -> None:
    body = vector["payload"].encode()
    assert core.verify_signature(vector["secret"], body, vector["expected_signature"])
    # Surrounding whitespace and upper-case hex are still the same signature.
    upper = "sha256=" + vector["expected_signature"].removeprefix("sha256=").upper()
    assert core.verify_signature(vector["secret"], body, f"  {upper} ")


def test_real_payload_signed_and_verified() -> None:
    body = raw("issues.opened")
    assert core.verify_signature("s3cret-value", body, core.sign("s3cret-value", body))
    assert not core.verify_signature("s3cret-value", body + b" ", core.sign("s3cret-value", body))


@pytest.mark.parametrize("header", [None, ""])
def test_missing_signature_fails(vector: dict[str, str], header: str | None) -> None:
    assert not core.verify_signature(vector["secret"], vector["payload"].encode(), header)


@pytest.mark.parametrize(
    "header",
    [
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",  # no prefix
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",  # short
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17ab",  # long
        "sha256=z57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",  # not hex
        "sha256=75710\u00e9ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",  # non-ASCII
        "SHA256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    ],
)
def test_malformed_signature_fails(vector: dict[str, str], header: str) -> None:
    assert not core.verify_signature(vector["secret"], vector["payload"].encode(), header)


def test_wrong_signature_fails(vector: dict[str, str]) -> None:
    body = vector["payload"].encode()
    good = vector["expected_signature"]
    flipped = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert not core.verify_signature(vector["secret"], body, flipped)
    assert not core.verify_signature("another secret", body, good)
    assert not core.verify_signature(vector["secret"], b"Hello, World?", good)


def test_empty_secret_never_verifies() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    # Even a signature that is "correct" for the empty key must not pass: fail closed.
    assert not core.verify_signature("", body, core.sign("", body))


# -- payloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_parses(name: str) -> None:
    event = name.split(".")[0]
    delivery = core.parse_delivery(event, raw(name), "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    data = payload(name)
    assert delivery.event == event
    assert delivery.action == data.get("action")
    assert delivery.repo_full_name == data["repository"]["full_name"]
    assert delivery.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    if event == "issues":
        assert delivery.issue is not None
        assert delivery.issue.number == data["issue"]["number"]
        assert delivery.issue.state == data["issue"]["state"]
        assert delivery.issue.is_pull_request is False
    else:
        assert delivery.issue is None
        assert delivery.action is None


def test_opened_issue_fields() -> None:
    delivery = core.parse_delivery("issues", raw("issues.opened"), None)
    assert delivery.repo_full_name == "Codertocat/Hello-World"
    assert delivery.assignee_login is None
    assert delivery.issue == core.Issue(
        number=1,
        title="Spelling error in the README file",
        body="It looks like you accidently spelled 'commit' with two 't's.",
        html_url="https://github.com/Codertocat/Hello-World/issues/1",
        state="open",
        labels=("bug",),
        assignees=("Codertocat",),
        is_pull_request=False,
    )


def test_closed_fixture_state() -> None:
    delivery = core.parse_delivery("issues", raw("issues.closed"), None)
    assert (delivery.action, delivery.issue.state) == ("closed", "closed")


@pytest.mark.parametrize("name", ["issues.assigned", "issues.unassigned"])
def test_assignment_carries_the_assignee(name: str) -> None:
    delivery = core.parse_delivery("issues", raw(name), "id")
    assert delivery.assignee_login == "Codertocat"


def test_unassigned_with_null_assignee() -> None:
    data = payload("issues.unassigned")
    data["assignee"] = None
    delivery = core.parse_delivery("issues", json.dumps(data).encode(), None)
    assert delivery.action == "unassigned"
    assert delivery.assignee_login is None


def test_assignee_ignored_for_other_actions() -> None:
    data = payload("issues.opened")
    data["assignee"] = {"login": "someone"}
    assert core.parse_delivery("issues", json.dumps(data).encode(), None).assignee_login is None


def test_pull_request_is_detected() -> None:
    pr = make_issue(pull_request={"url": "https://api.github.com/repos/o/r/pulls/1"})
    assert pr.is_pull_request is True
    assert make_issue(pull_request=None).is_pull_request is False
    assert make_issue().is_pull_request is False


def test_rest_api_issue_list_items_parse() -> None:
    # The REST list carries the same objects; labels may also be plain strings there.
    data = issue_data(labels=["Bug", {"name": "p0"}], assignees=None, assignee=None)
    issue = core.Issue.from_api(data)
    assert issue.labels == ("Bug", "p0")
    assert issue.assignees == ()


def test_single_assignee_fallback() -> None:
    issue = make_issue(assignees=None, assignee={"login": "octocat"})
    assert issue.assignees == ("octocat",)


@pytest.mark.parametrize(
    "changes",
    [
        {"number": "1"},
        {"number": True},
        {"number": 0},
        {"title": 5},
        {"body": ["x"]},
        {"html_url": None},
        {"html_url": "javascript:alert(1)"},
        {"state": None},
        {"labels": "bug"},
        {"labels": [1]},
        {"labels": [{"name": None}]},
        {"assignees": [{"id": 1}]},
    ],
)
def test_malformed_issue_is_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(core.PayloadError):
        core.Issue.from_api(issue_data(**changes))


@pytest.mark.parametrize("value", [None, [], "issue", 1])
def test_issue_must_be_an_object(value: Any) -> None:
    with pytest.raises(core.PayloadError, match="object"):
        core.Issue.from_api(value)


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(core.PayloadError, ValueError)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'"text"',
        b"null",
        b'{"action": 3}',
        b'{"action": "opened", "repository": "Codertocat/Hello-World"}',
        b'{"action": "opened", "repository": {"full_name": 7}}',
        b'{"action": "opened", "issue": {"number": "one"}}',
        b'{"action": "assigned", "assignee": {"login": 42}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_delivery_is_rejected(body: bytes) -> None:
    with pytest.raises(core.PayloadError):
        core.parse_delivery("issues", body, None)


def test_deliveries_are_immutable() -> None:
    delivery = core.parse_delivery("ping", raw("ping"), None)
    with pytest.raises(AttributeError):
        delivery.action = "opened"  # type: ignore[misc]


# -- issue → task ----------------------------------------------------------------------------


def test_external_ref() -> None:
    assert core.external_ref(1347) == "github_issue_1347"


def test_task_name_is_the_title() -> None:
    assert core.task_name(make_issue(title="  Fix the login  ")) == "Fix the login"


def test_long_title_is_truncated_with_an_ellipsis() -> None:
    title = "x" * 250
    name = core.task_name(make_issue(title=title))
    assert len(name) == core.TASK_NAME_MAX == 200
    assert name == "x" * 199 + "…"


def test_title_of_exactly_the_limit_is_kept() -> None:
    title = "y" * core.TASK_NAME_MAX
    assert core.task_name(make_issue(title=title)) == title


@pytest.mark.parametrize("title", ["", "   ", None])
def test_blank_title_falls_back(title: str | None) -> None:
    assert core.task_name(make_issue(number=42, title=title)) == "GitHub issue #42"


def test_description_is_body_then_url() -> None:
    issue = core.parse_delivery("issues", raw("issues.opened"), None).issue
    assert core.task_description(issue) == (
        "It looks like you accidently spelled 'commit' with two 't's.\n\n"
        "https://github.com/Codertocat/Hello-World/issues/1"
    )


def test_empty_body_fixture_gives_only_the_url() -> None:
    issue = core.parse_delivery("issues", raw("issues.opened.with-empty-body"), None).issue
    assert issue.body is None
    assert core.task_description(issue) == "https://github.com/Codertocat/Hello-World/issues/1"
    # The reopened fixture has body "" rather than null: same answer.
    reopened = core.parse_delivery("issues", raw("issues.reopened"), None).issue
    assert reopened.body == ""
    assert core.task_description(reopened) == reopened.html_url


# -- priority --------------------------------------------------------------------------------


def test_fixture_bug_label_is_high() -> None:
    issue = core.parse_delivery("issues", raw("issues.labeled"), None).issue
    assert issue.labels == ("bug",)
    assert core.priority_for(issue.labels, None) == "high"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ((), "medium"),
        (("question", "wontfix"), "medium"),
        (("Critical",), "urgent"),
        (("URGENT",), "urgent"),
        (("P0",), "urgent"),
        (("blocker",), "urgent"),
        (("bug",), "high"),
        (("Priority: High",), "high"),
        (("enhancement",), "medium"),
        (("feature",), "medium"),
        (("documentation",), "low"),
        (("low priority",), "low"),
        (("p3",), "low"),
        (("documentation", "bug"), "high"),  # the highest wins
        (("bug", "critical", "documentation"), "urgent"),
    ],
)
def test_default_priorities(labels: tuple[str, ...], expected: str) -> None:
    assert core.priority_for(labels) == expected


def test_default_mapping_is_well_formed() -> None:
    assert set(core.DEFAULT_PRIORITY_LABELS) == set(core.PRIORITIES)
    seen = [
        label.casefold() for labels in core.DEFAULT_PRIORITY_LABELS.values() for label in labels
    ]
    assert len(seen) == len(set(seen)), "a label is mapped to two priorities"


def test_override_reassigns_a_default_label() -> None:
    assert core.priority_for(["bug"], {"low": ["Bug"]}) == "low"


def test_override_adds_new_labels_and_keeps_other_defaults() -> None:
    overrides = {"urgent": ["sev1"], "low": ["chore"]}
    assert core.priority_for(["SEV1"], overrides) == "urgent"
    assert core.priority_for(["chore"], overrides) == "low"
    assert core.priority_for(["bug"], overrides) == "high"  # untouched default
    assert core.priority_for(["chore", "bug"], overrides) == "high"  # highest still wins


def test_override_tolerates_junk_from_stored_config() -> None:
    overrides: dict[str, Any] = {"nope": ["bug"], "high": [None, "", "crash"], "low": "bug"}
    assert core.priority_for(["crash"], overrides) == "high"
    assert core.priority_for(["bug"], overrides) == "high"
    assert core.priority_for(["bug"], {}) == "high"


# -- label filter ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "label_filter", "expected"),
    [
        (("bug",), None, True),
        ((), None, True),
        ((), "  ", True),
        (("bug",), "bug", True),
        (("Bug",), "BUG", True),
        (("enhancement", "help wanted"), " Help Wanted ", True),
        (("bug",), "enhancement", False),
        ((), "bug", False),
        (("bugfix",), "bug", False),  # whole names only
    ],
)
def test_label_filter(labels: tuple[str, ...], label_filter: str | None, expected: bool) -> None:
    assert core.matches_label_filter(labels, label_filter) is expected


# -- pagination ------------------------------------------------------------------------------

GITHUB_LINK = (
    '<https://api.github.com/repositories/1300192/issues?state=open&per_page=50&page=2>; rel="prev", '
    '<https://api.github.com/repositories/1300192/issues?state=open&per_page=50&page=4>; rel="next", '
    '<https://api.github.com/repositories/1300192/issues?state=open&per_page=50&page=515>; rel="last", '
    '<https://api.github.com/repositories/1300192/issues?state=open&per_page=50&page=1>; rel="first"'
)


def test_link_header_from_github_docs() -> None:
    links = core.parse_link_header(GITHUB_LINK)
    base = "https://api.github.com/repositories/1300192/issues?state=open&per_page=50&page="
    assert links == {
        "prev": base + "2",
        "next": base + "4",
        "last": base + "515",
        "first": base + "1",
    }


def test_link_header_on_the_last_page_has_no_next() -> None:
    value = '<https://x.test/i?page=1>; rel="first", <https://x.test/i?page=2>; rel="prev"'
    links = core.parse_link_header(value)
    assert "next" not in links
    assert links["first"] == "https://x.test/i?page=1"


@pytest.mark.parametrize("value", [None, "", "garbage", "<https://x.test/a>", '<>; rel="next"'])
def test_link_header_without_links(value: str | None) -> None:
    assert core.parse_link_header(value) == {}


def test_link_header_variants() -> None:
    value = '<https://x.test/a,b?page=2>;rel=next ; title="x", <https://x.test/z>; REL="prev last"'
    assert core.parse_link_header(value) == {
        "next": "https://x.test/a,b?page=2",
        "prev": "https://x.test/z",
        "last": "https://x.test/z",
    }


def test_link_header_first_relation_wins_and_ignores_case() -> None:
    value = '<https://x.test/2>; rel="NEXT", <https://x.test/3>; rel="next"'
    assert core.parse_link_header(value) == {"next": "https://x.test/2"}


# -- rate limits -----------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, None),
        (200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 60)}, None),
        (200, {"retry-after": "30"}, None),
        (404, {"retry-after": "30"}, None),
        (403, {}, None),  # a permission error, not a rate limit
        (403, {"x-ratelimit-remaining": "12", "x-ratelimit-reset": str(int(NOW) + 60)}, None),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 60)}, 60.0),
        (429, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 5)}, 5.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 10)}, 0.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "soon"}, None),
        (403, {"x-ratelimit-remaining": "0"}, None),
        (403, {"retry-after": "60"}, 60.0),  # secondary rate limit
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"retry-after": "2"}, 2.0),
        (503, {}, None),
        (429, {"retry-after": "Tue, 14 Nov 2023 22:15:00 GMT"}, 100.0),
        (429, {"retry-after": "Tue, 14 Nov 2023 22:15:00 -0000"}, 100.0),
        (429, {"retry-after": "Tue, 14 Nov 2023 22:10:00 GMT"}, 0.0),  # already past
        (429, {"retry-after": "in a while"}, None),
        # retry-after counts before the reset time
        (
            403,
            {
                "retry-after": "3",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(NOW) + 60),
            },
            3.0,
        ),
        # an unreadable retry-after falls back to the reset time
        (
            429,
            {
                "retry-after": "-1",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(NOW) + 9),
            },
            9.0,
        ),
    ],
)
def test_retry_delay(status: int, headers: dict[str, str], expected: float | None) -> None:
    assert core.retry_delay(status, headers, NOW) == expected


def test_retry_delay_reads_aiohttp_style_headers() -> None:
    headers = CIMultiDict({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 42)})
    assert core.retry_delay(403, headers, NOW) == 42.0


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "owner", ["octocat", "Codertocat", "a", "my-org", "a-b-c", "0", "x" * 39, "A1-b2"]
)
def test_valid_owners(owner: str) -> None:
    assert core.validate_owner(owner)


@pytest.mark.parametrize(
    "owner",
    [
        "",
        "-org",
        "org-",
        "my--org",
        "x" * 40,
        "my_org",
        "my.org",
        "o/r",
        "ünï",
        "org\n",
        " org",
        None,
        5,
    ],
)
def test_invalid_owners(owner: Any) -> None:
    assert not core.validate_owner(owner)


@pytest.mark.parametrize(
    "repo", ["Hello-World", "a", "repo.js", "_private", ".github", "...", "r" * 100, "x--y__z.."]
)
def test_valid_repos(repo: str) -> None:
    assert core.validate_repo(repo)


@pytest.mark.parametrize(
    "repo", ["", ".", "..", "r" * 101, "has space", "a/b", "naïve", "repo\n", None, 3]
)
def test_invalid_repos(repo: Any) -> None:
    assert not core.validate_repo(repo)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("   ", None), (" bug ", "bug"), ("help wanted", "help wanted")],
)
def test_normalize_label_filter(value: Any, expected: str | None) -> None:
    assert core.normalize_label_filter(value) == expected


@pytest.mark.parametrize("value", [["bug"], 1, True, {"name": "bug"}, "x" * 101])
def test_normalize_label_filter_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="label_filter"):
        core.normalize_label_filter(value)


def test_normalize_priority_labels() -> None:
    value = {"High": [" crash ", "Crash", "", "regression"], "low": [], "urgent": ["sev1"]}
    assert core.normalize_priority_labels(value) == {
        "high": ["crash", "regression"],
        "urgent": ["sev1"],
    }
    assert core.normalize_priority_labels(None) == {}
    assert core.normalize_priority_labels({}) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["bug"], "must be an object"),
        ("high: bug", "must be an object"),
        ({"critical": ["x"]}, "unknown priority"),
        ({"high": "bug"}, "list of label names"),
        ({"high": ["bug", 3]}, "list of label names"),
        ({"high": None}, "list of label names"),
        ({"high": ["bug"], "low": ["BUG"]}, "under both"),
        ({"high": ["x"], "HIGH": ["y"]}, "twice"),
        ({"low": ["l" * 101]}, "at most"),
    ],
)
def test_normalize_priority_labels_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        core.normalize_priority_labels(value)


def test_normalized_overrides_drive_priority() -> None:
    overrides = core.normalize_priority_labels({"urgent": [" Sev1 "]})
    assert core.priority_for(["sev1"], overrides) == "urgent"


# -- routing ---------------------------------------------------------------------------------


def test_router_routes_by_event_and_action() -> None:
    router = core.Router()

    @router.register("issues", "opened")
    @router.register("issues", "reopened")
    def opened() -> str:
        return "opened"

    @router.register("issues")
    def any_issue() -> str:
        return "any"

    @router.register("ping")
    def ping() -> str:
        return "pong"

    assert router.lookup("issues", "opened") is opened
    assert router.lookup("issues", "reopened") is opened
    assert router.lookup("issues", "closed") is any_issue
    assert router.lookup("ping", None) is ping
    assert router.lookup("push", None) is None
    assert router.lookup("pull_request", "opened") is None
    assert opened() == "opened"  # the decorator returns the function itself


def test_router_without_event_wide_handler_ignores_other_actions() -> None:
    router = core.Router()
    router.register("issues", "opened")(lambda: None)
    assert router.lookup("issues", "milestoned") is None
    assert router.lookup("issues", None) is None


def test_router_refuses_a_second_handler_for_the_same_key() -> None:
    router = core.Router()
    router.register("issues", "opened")(lambda: 1)
    with pytest.raises(ValueError, match="issues.opened"):
        router.register("issues", "opened")(lambda: 2)


def test_routers_are_independent() -> None:
    first, second = core.Router(), core.Router()
    first.register("issues", "opened")(lambda: None)
    assert second.lookup("issues", "opened") is None


@pytest.mark.parametrize(
    ("event", "action", "expected"),
    [("issues", "milestoned", "issues.milestoned"), ("push", None, "push"), ("star", "", "star")],
)
def test_ignored_key(event: str, action: str | None, expected: str) -> None:
    assert core.ignored_key(event, action) == expected
