"""Local stand-ins for provider APIs, shared by the HTTP and browser tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from aiohttp import web
from yarl import URL

from tests.conftest import FIXTURES

WEBHOOKS = FIXTURES / "github" / "webhooks"
REPO = "Codertocat/Hello-World"  # the repository of the published payloads


def payload(name: str) -> dict[str, Any]:
    return json.loads((WEBHOOKS / f"{name}.json").read_text())


class FakeGitHub:
    """A local stand-in for the GitHub REST API that records what it was asked."""

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []
        self.requests: list[web.Request] = []
        self.rate_limited_once = False
        self.token = "ghp_faketoken1234567890abcdefghijklmn"
        self.next_link_base: str | None = None  # serve next-page links on another host

    @property
    def calls(self) -> list[str]:
        return [r.path for r in self.requests]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/user", self.user)
        app.router.add_get("/repos/{owner}/{repo}/issues", self.list_issues)
        return app

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def user(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if not self._authorised(request):
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"login": "octocat"})

    async def list_issues(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if not self._authorised(request):
            return web.json_response({"message": "Bad credentials"}, status=401)
        if self.rate_limited_once:
            self.rate_limited_once = False
            return web.json_response(
                {"message": "API rate limit exceeded"},
                status=403,
                headers={"x-ratelimit-remaining": "0", "retry-after": "0"},
            )
        assert request.query["state"] == "open"
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("per_page", "50"))
        chunk = self.issues[(page - 1) * size : page * size]
        headers = {}
        if page * size < len(self.issues):
            query = {"state": "open", "per_page": str(size), "page": str(page + 1)}
            url = URL(self.next_link_base) if self.next_link_base else request.url
            base = str(url.with_query(query))
            headers["Link"] = f'<{base}>; rel="next"'
        return web.json_response(chunk, headers=headers)


def issue(
    number: int, title: str = "Issue", labels: tuple[str, ...] = (), pr: bool = False
) -> dict[str, Any]:
    data = copy.deepcopy(payload("issues.opened")["issue"])
    data.update(number=number, title=title, labels=[{"name": n} for n in labels], state="open")
    data["html_url"] = f"https://github.com/{REPO}/issues/{number}"
    if pr:
        data["pull_request"] = {"url": "https://api.github.com/x"}
    return data
