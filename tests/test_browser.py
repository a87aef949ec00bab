"""The cards page in a real browser: Playwright (async API) driving Debian's Chromium.

Skipped when /usr/bin/chromium is missing, unless GATEWAY_REQUIRE_BROWSER=1 (CI), which turns
the missing browser into a failure. The accessibility scan injects axe-core from node_modules
(`npm ci`); without it that test skips, or fails under GATEWAY_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from gateway.app import SESSION_COOKIE, create_app
from gateway.connectors.github.core import sign
from gateway.services import SERVICES
from tests.conftest import PASSWORD, REPO, Made
from tests.fakes import issue, payload

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
REQUIRE_BROWSER = os.environ.get("GATEWAY_REQUIRE_BROWSER") == "1"
HAVE_CHROMIUM = CHROMIUM.exists()
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
EMBED_DOC = REPO / "docs" / "integrations" / "README.md"

try:
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Frame,
        Page,
        Response,
        async_playwright,
        expect,
    )
except ImportError:
    if REQUIRE_BROWSER:
        raise
    pytest.skip("playwright is not installed", allow_module_level=True)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not HAVE_CHROMIUM and not REQUIRE_BROWSER,
        reason=f"{CHROMIUM} is missing (GATEWAY_REQUIRE_BROWSER=1 makes this a failure)",
    ),
]

TIMEOUT_MS = 10_000
PREFIX = "/gateway"
GITHUB_TOKEN = "ghp_browsertest0123456789abcdefghijklmnop"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:  # only reached with GATEWAY_REQUIRE_BROWSER=1
        pytest.fail(f"GATEWAY_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    if AXE.exists():  # for scans along the way (see also_scan); the browser injects it
        await context.add_init_script(path=str(AXE))
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


def prefix_proxy(prefix: str, upstream: dict[str, str]) -> web.Application:
    """A reverse proxy like the one in front of the gateway: serves only {prefix}/..., strips
    the prefix, forwards to upstream["url"]; anything outside the prefix is a 404."""
    hop_by_hop = {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
    }
    sessions: list[ClientSession] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        if not sessions:
            sessions.append(ClientSession(auto_decompress=True))
        rest = request.raw_path[len(prefix) :] or "/"
        target = URL(upstream["url"] + rest, encoded=True)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
        async with sessions[0].request(
            request.method,
            target,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            payload = await answer.read()
            response = web.Response(status=answer.status, body=payload)
            for name, value in answer.headers.items():
                if name.lower() not in hop_by_hop:
                    response.headers.add(name, value)
            return response

    async def close(_app: web.Application) -> None:
        for session in sessions:
            await session.close()

    proxy = web.Application()
    proxy.router.add_route("*", prefix + "/{tail:.*}", forward)
    proxy.on_cleanup.append(close)
    return proxy


async def sign_in(page: Page, base: str, username: str, password: str = PASSWORD) -> None:
    await page.goto(base + "/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login-submit")


# ------------------------------------------------------------------------------ page checks


class PageLog:
    """Console errors, uncaught exceptions and failed requests of a page (and its frames)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"pageerror: {exc}"))
        page.on("response", self._response)
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def expect_clean(self, *allowed: str) -> None:
        left = [p for p in self.problems if not any(a in p for a in allowed)]
        assert left == [], left


def need_axe() -> str:
    if not AXE.exists():
        if REQUIRE_BROWSER:
            pytest.fail(f"GATEWAY_REQUIRE_BROWSER=1 but {AXE} is missing: run npm ci")
        pytest.skip(f"{AXE} is missing: run npm install (or npm ci)")
    return str(AXE)


async def serious_violations(page: Page | Frame) -> list[dict[str, object]]:
    """axe-core's WCAG 2.1 A/AA findings of impact serious or critical (contrast included)."""
    found = await page.evaluate(
        """async () => {
          const result = await axe.run(document, {
            runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
          });
          return result.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ') + ' | ' + n.failureSummary),
          }));
        }"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


async def also_scan(page: Page, where: str) -> None:
    """An axe scan of the state a functional test reached; only where axe-core is installed
    (test_dark_mode_contrast_and_phone_header is the one that insists on it)."""
    if AXE.exists():
        assert await serious_violations(page) == [], where


def save_screenshot(name: str, data: bytes) -> None:
    """GATEWAY_SCREENSHOTS_DIR=docs/screenshots keeps the screenshots (the docs' pictures)."""
    target = os.environ.get("GATEWAY_SCREENSHOTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / name).write_bytes(data)


# ------------------------------------------------------------------------------ tests


async def test_login_form_shows_the_cards(aiohttp_server, app, made: Made, page: Page) -> None:
    await made.user("alice", full_name="Alice Liddell")
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    log = PageLog(page)

    # A wrong password: the form again, with the error and the username kept.
    await sign_in(page, base, "alice", "not the password")
    await expect(page.locator("#login-error")).to_be_visible()
    await expect(page.locator("#login-error")).to_have_text("Invalid username or password")
    await expect(page.locator("#username")).to_have_value("alice")
    await expect(page.locator("#card-github")).to_have_count(0)

    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url(base + "/")
    for name, title in (("github", "GitHub"), ("google", "Google Calendar"), ("slack", "Slack")):
        await expect(page.locator(f"#card-{name}")).to_be_visible()
        await expect(page.locator(f"#card-{name}-title")).to_have_text(title)
    await expect(page.locator("[data-user-name]")).to_have_text("Alice Liddell")

    # Not configured: the form shows, the summary does not; Sync is for admins only.
    card = page.locator("#card-github")
    await expect(card.locator("[data-status-badge]")).to_have_text("Not configured")
    await expect(card).to_have_attribute("data-state", "unconfigured")
    await expect(page.locator("#github-config-form")).to_be_visible()
    await expect(card.locator("[data-card-summary]")).to_be_hidden()
    await expect(page.locator("#github-sync")).to_have_count(0)
    await expect(page.locator("#github-secret-dialog")).to_be_hidden()
    await expect(page.locator("#github-project")).to_have_attribute("data-projects", "empty")
    await expect(page.locator("#github-project option")).to_have_text(["No projects"])

    # Connectors this process does not run say so and are never asked for a status.
    for name in ("google", "slack"):
        if name in app[SERVICES].connectors:
            continue
        await expect(page.locator(f"#card-{name} [data-status-badge]")).to_have_text("Coming soon")
        await expect(page.locator(f"#card-{name}")).to_have_attribute("data-state", "coming-soon")

    # "owner/repo" in one field; a bare name is refused with a hint, nothing is sent.
    await page.fill("#github-repository", "hello")
    await page.click("#github-save")
    message = card.locator("[data-card-message]")
    await expect(message).to_have_text(re.compile("owner/name"))
    await expect(page.locator("#github-repository")).to_have_attribute("aria-invalid", "true")

    # The first save makes the webhook secret (DESIGN §10) and shows it once, in the dialog,
    # even when a project is still missing; the card then says what is missing.
    await page.fill("#github-repository", "octo/hello")
    await page.click("#github-save")
    await expect(page.locator("#github-secret-dialog")).to_be_visible()
    await page.click("#github-secret-done")
    await expect(page.locator("#github-secret-dialog")).to_be_hidden()
    await expect(message).to_have_text("Saved. To connect, add a project.")
    await expect(card.locator("[data-status-badge]")).to_have_text("Incomplete")
    await expect(card.locator("[data-card-detail]")).to_have_text("To connect, add a project.")
    await expect(page.locator("#github-repository")).to_have_value("octo/hello")
    await page.wait_for_timeout(200)
    log.expect_clean("/login", "status of 401")  # the wrong password: the only failure


async def test_github_card_connects_shows_secret_once_and_explains_errors(
    aiohttp_server, settings, fake_github, page: Page
) -> None:
    fake, github_url = fake_github
    fake.issues = [issue(41, "Fix the footer")]
    fake.token = GITHUB_TOKEN
    app = create_app(replace(settings, github_api_url=github_url))
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("root", role="admin")
    website = await made.project("Website")
    await made.project("Old site", status="archived")
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    log = PageLog(page)

    await sign_in(page, base, "root")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-github")
    badge = card.locator("[data-status-badge]")
    detail = card.locator("[data-card-detail]")
    message = card.locator("[data-card-message]")
    await expect(badge).to_have_text("Not configured")

    # The picker lists the active projects only (from GET /api/projects).
    picker = page.locator("#github-project")
    await expect(picker).to_have_attribute("data-projects", "loaded")
    await expect(picker.locator("option")).to_have_text(["Choose a project…", "Website"])

    # Save: the one-time webhook secret opens in a dialog that has the focus.
    await page.fill("#github-token", GITHUB_TOKEN)
    await page.fill("#github-repository", "https://github.com/octo-org/website.git")
    await picker.select_option(label="Website")
    await page.check("#github-auto-start")
    await page.click("#github-save")
    dialog = page.locator("#github-secret-dialog")
    await expect(dialog).to_be_visible()
    assert await page.evaluate("document.getElementById('github-secret-dialog').open")
    assert await page.evaluate(
        "document.getElementById('github-secret-dialog').contains(document.activeElement)"
    )
    secret = (await page.locator("#github-webhook-secret").text_content() or "").strip()
    assert len(secret) >= 32, secret
    await also_scan(page, "secret dialog")
    await expect(dialog.locator("#github-dialog-url")).to_have_text(
        re.compile(r"/api/integrations/github/webhook\?integration=\d+$")
    )
    await expect(page.locator("#github-token")).to_have_value("")  # never echoed back

    # Copy puts the full secret on the clipboard; "I have copied it" closes and forgets it.
    await page.click("#github-secret-copy")
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await page.click("#github-secret-done")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#github-webhook-secret")).to_have_text("")

    # The save stored a new token, so the card checked it at once: connected as octocat.
    await expect(message).to_have_text("Connected to GitHub as octocat.")
    assert "/user" in fake.calls
    await expect(badge).to_have_text("Connected")
    await expect(card).to_have_attribute("data-state", "connected")
    await expect(detail).to_contain_text("Connected")

    # Compact: the summary line with the project's name, the form behind Edit.
    summary = card.locator("[data-summary]")
    await expect(summary).to_have_text("octo-org/website → Website")
    await expect(page.locator("#github-config-form")).to_be_hidden()

    # Reload: the status is read back; the secret is gone for good.
    await page.reload()
    await expect(badge).to_have_text("Connected")
    await expect(summary).to_have_text("octo-org/website → Website")
    assert secret not in await page.content()
    await page.locator("#github-webhook-details summary").click()
    await expect(page.locator("#github-webhook-url")).to_have_text(
        re.compile(r"/api/integrations/github/webhook\?integration=\d+$")
    )
    await also_scan(page, "connected card")
    for theme in ("light", "dark"):
        await page.goto(f"{base}/?theme={theme}")
        await expect(summary).to_have_text("octo-org/website → Website")
        await page.locator("#github-webhook-details summary").click()
        await also_scan(page, f"connected card, {theme}")
    await page.goto(base + "/")
    await card.get_by_role("button", name="Edit").click()
    await expect(page.locator("#github-config-form")).to_be_visible()
    await expect(page.locator("#github-repository")).to_have_value("octo-org/website")
    await expect(picker).to_have_value(str(website.id))
    await expect(page.locator("#github-auto-start")).to_be_checked()
    await expect(page.locator("#github-token")).to_have_attribute(
        "placeholder", "Token saved · leave blank to keep it"
    )
    await card.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#github-config-form")).to_be_hidden()

    # GitHub refuses the token: Needs attention at once, in words, with the way out.
    fake.token = "ghp_another_token"
    await page.click("#github-test")
    await expect(badge).to_have_text("Needs attention")
    await expect(message).to_have_attribute("role", "alert")
    await expect(message).to_contain_text("GitHub rejected the token: create a new one")
    link = message.get_by_role("link", name="Create a token")
    await expect(link).to_have_attribute("href", re.compile(r"^https://github\.com/settings/"))
    await expect(detail).to_contain_text("GitHub rejected the token")
    await also_scan(page, "needs attention")
    # A good answer again clears it; the old message is replaced, not stacked.
    fake.token = GITHUB_TOKEN
    await page.click("#github-test")
    await expect(badge).to_have_text("Connected")
    await expect(message).to_have_text("Connected to GitHub as octocat.")

    # Generate a new secret, after an inline confirm step: shown once, different.
    await page.locator("#github-webhook-details summary").click()
    await page.click("#github-generate-secret")
    await expect(page.locator("#github-secret-confirm")).to_be_visible()
    await page.click("#github-generate-secret-confirm")
    await expect(dialog).to_be_visible()
    regenerated = (await page.locator("#github-webhook-secret").text_content() or "").strip()
    assert regenerated != secret and len(regenerated) >= 32
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#github-webhook-secret")).to_have_text("")

    # Sync (admins): the open issue becomes a task; the card shows the activity.
    await page.click("#github-sync")
    await expect(message).to_have_text("Sync finished: 1 created, 0 updated, 0 skipped.")
    await expect(detail).to_contain_text("last sync just now")
    log.expect_clean()


async def test_failed_sync_needs_attention_at_once(
    aiohttp_server, settings, fake_github, page: Page
) -> None:
    fake, github_url = fake_github
    fake.token = GITHUB_TOKEN
    app = create_app(replace(settings, github_api_url=github_url))
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("root", role="admin")
    await made.project("Website")

    await sign_in(page, base, "root")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-github")
    await page.fill("#github-token", GITHUB_TOKEN)
    await page.fill("#github-repository", "octo-org/website")
    await page.locator("#github-project").select_option(label="Website")
    await page.click("#github-save")
    await page.click("#github-secret-done")
    await expect(card.locator("[data-status-badge]")).to_have_text("Connected")

    # GitHub stops accepting the token: the failed Sync shows on the card without a reload.
    fake.token = "ghp_revoked"
    await page.click("#github-sync")
    await expect(card.locator("[data-status-badge]")).to_have_text("Needs attention")
    await expect(card.locator("[data-card-message]")).to_contain_text(
        "GitHub rejected the token: create a new one"
    )
    assert "ClientConnectorError" not in (await card.inner_text())
    # ...and after a reload too: the server recorded it.
    await page.reload()
    await expect(card.locator("[data-status-badge]")).to_have_text("Needs attention")
    await expect(card.locator("[data-card-detail]")).to_contain_text("GitHub rejected the token")

    # The other provider failures, as the server words them, become sentences with a next step.
    explained = await page.evaluate(
        """() => {
          const card = document.getElementById('card-github');
          return [
            'network error: ClientConnectorError',
            'timed out after 10 s',
            'GitHub answered HTTP 401: Bad credentials',
            'rate limited by GitHub: retry after 900 s',
            'GitHub answered HTTP 404: Not Found',
          ].map((text) => TT.explain(card, text).text);
        }"""
    )
    assert explained[0] == (
        "GitHub could not be reached. Nothing was changed: it is safe to try again."
    )
    assert explained[1] == explained[0]
    assert explained[2].startswith("GitHub rejected the token: create a new one with")
    assert "wait a few minutes" in explained[3]
    assert "check the name" in explained[4]


async def test_session_end_offers_sign_in_again_with_the_prefix(
    aiohttp_server, settings, page: Page
) -> None:
    upstream: dict[str, str] = {}
    proxy = await aiohttp_server(prefix_proxy(PREFIX, upstream))
    public = str(proxy.make_url(PREFIX))
    app = create_app(replace(settings, public_url=public))
    server = await aiohttp_server(app)
    upstream["url"] = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("alice")
    await made.project("Website")

    await sign_in(page, public, "alice")
    await page.wait_for_url(public + "/")
    await expect(page.locator("#github-project")).to_have_attribute("data-projects", "loaded")
    await page.context.clear_cookies()  # the session ends (expiry, sign-out elsewhere)
    await page.fill("#github-repository", "octo-org/website")
    await page.click("#github-save")
    message = page.locator("#card-github [data-card-message]")
    await expect(message).to_contain_text("Your session has ended.")
    again = message.get_by_role("link", name="Sign in again")
    await expect(again).to_have_attribute("href", PREFIX + "/login")
    await again.click()
    await page.wait_for_url(public + "/login")
    await expect(page.locator("#login-form")).to_be_visible()


async def test_everything_carries_the_path_prefix(aiohttp_server, settings, page: Page) -> None:
    upstream: dict[str, str] = {}
    proxy = await aiohttp_server(prefix_proxy(PREFIX, upstream))
    public = str(proxy.make_url(PREFIX))
    app = create_app(replace(settings, public_url=public))
    server = await aiohttp_server(app)
    upstream["url"] = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("alice")
    await made.project("Website")

    responses: list[Response] = []
    page.on("response", lambda response: responses.append(response))

    # The bare root is outside the prefix: the proxy answers 404 (the check below can fail).
    outside = await page.goto(str(proxy.make_url("/login")))
    assert outside is not None and outside.status == 404
    responses.clear()

    await sign_in(page, public, "alice")
    await page.wait_for_url(public + "/")
    await expect(page.locator("#card-github-title")).to_have_text("GitHub")
    await expect(page.locator("#card-github [data-status-badge]")).to_have_text("Not configured")
    await expect(page.locator("#github-project")).to_have_attribute("data-projects", "loaded")

    # A write through the prefix: the session cookie (Path=/gateway) and CSRF header work.
    await page.fill("#github-repository", "octo-org/website")
    await page.locator("#github-project").select_option(label="Website")
    await page.click("#github-save")
    await expect(page.locator("#card-github")).not_to_have_attribute("data-state", "unconfigured")
    if await page.locator("#github-secret-dialog").is_visible():
        await expect(page.locator("#github-dialog-url")).to_have_text(
            re.compile(
                "^" + re.escape(public) + r"/api/integrations/github/webhook\?integration=\d+$"
            )
        )
        await page.click("#github-secret-done")

    # Sign out: the form posts to the prefixed path and lands on the prefixed login page.
    await page.click("[data-logout]")
    await page.wait_for_url(public + "/login")
    await expect(page.locator("#login-form")).to_be_visible()

    paths = [URL(response.url).path for response in responses]
    for expected in (
        f"{PREFIX}/login",
        f"{PREFIX}/",
        f"{PREFIX}/static/css/app.css",
        f"{PREFIX}/static/js/app.js",
        f"{PREFIX}/api/projects",
        f"{PREFIX}/api/integrations/github/status",
        f"{PREFIX}/api/integrations/github/config",
        f"{PREFIX}/logout",
    ):
        assert expected in paths, (expected, paths)
    outside_prefix = [p for p in paths if not p.startswith(PREFIX + "/")]
    assert outside_prefix == [], outside_prefix
    # No failures at all: cards of connectors that are not installed fetch nothing.
    failed = [(response.url, response.status) for response in responses if response.status >= 400]
    assert failed == [], failed


async def test_dark_mode_contrast_and_phone_header(
    aiohttp_server, app, made: Made, browser: Browser
) -> None:
    axe = need_axe()
    await made.user("alice", full_name="Alice Liddell")
    await made.project("Website")
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    await context.add_init_script(path=axe)  # injected by the browser: the page's CSP allows it
    page = await context.new_page()
    log = PageLog(page)
    try:
        await page.goto(base + "/login?theme=dark")
        assert await serious_violations(page) == []
        await page.fill("#username", "alice")
        await page.fill("#password", PASSWORD)
        await page.click("#login-submit")
        await page.wait_for_url(base + "/?theme=dark")  # the theme survives the sign-in
        card = page.locator("#card-github")
        await expect(card.locator("[data-status-badge]")).to_have_text("Not configured")
        await expect(page.locator("#github-project")).to_have_attribute("data-projects", "loaded")

        shots: dict[str, bytes] = {}
        backgrounds: dict[str, str] = {}
        for theme in ("dark", "light"):
            await page.goto(f"{base}/?theme={theme}")
            await expect(card.locator("[data-status-badge]")).to_have_text("Not configured")
            await expect(page.locator("#github-project")).to_have_attribute(
                "data-projects", "loaded"
            )
            # An error message and the warning tone on screen, so their contrast is checked too.
            await page.fill("#github-repository", "website")
            await page.click("#github-save")
            await expect(card.locator("[data-card-message]")).to_be_visible()
            violations = await serious_violations(page)
            assert violations == [], (theme, violations)
            backgrounds[theme] = await card.evaluate("el => getComputedStyle(el).backgroundColor")
            shots[theme] = await page.screenshot(full_page=True)
            save_screenshot(f"form-{theme}.png", shots[theme])
        assert backgrounds["light"] == "rgb(255, 255, 255)"
        assert backgrounds["dark"] != backgrounds["light"]
        # Both pictures show a page (a blank one compresses to a few hundred bytes).
        assert len(shots["dark"]) > 20_000 and len(shots["light"]) > 20_000
        assert shots["dark"] != shots["light"]

        # No ?theme: the system's preference decides.
        await page.emulate_media(color_scheme="dark")
        await page.goto(base + "/")
        await expect(card.locator("[data-status-badge]")).to_have_text("Not configured")
        assert (
            await card.evaluate("el => getComputedStyle(el).backgroundColor") == backgrounds["dark"]
        )

        # A phone: the header still shows the user's whole name.
        await page.set_viewport_size({"width": 390, "height": 844})
        name = page.locator("header [data-user-name]")
        await expect(name).to_have_text("Alice Liddell")
        assert await name.evaluate("el => el.scrollWidth <= el.clientWidth"), "name truncated"
        assert (await name.bounding_box() or {}).get("width", 0) > 60
        log.expect_clean()
    finally:
        await context.close()


async def test_signed_delivery_turns_the_card_connected_without_reload(
    aiohttp_server, settings, fake_github, page: Page
) -> None:
    fake, github_url = fake_github
    fake.token = GITHUB_TOKEN
    app = create_app(replace(settings, github_api_url=github_url))
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("root", role="admin")
    await made.project("Website")

    await sign_in(page, base, "root")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-github")
    badge = card.locator("[data-status-badge]")
    await page.fill("#github-token", GITHUB_TOKEN)
    await page.fill("#github-repository", "Codertocat/Hello-World")
    await page.locator("#github-project").select_option(label="Website")
    await page.click("#github-save")
    await expect(page.locator("#github-secret-dialog")).to_be_visible()
    secret = (await page.locator("#github-webhook-secret").text_content() or "").strip()
    await page.click("#github-secret-done")
    webhook_url = await page.locator("#github-webhook-url").text_content() or ""

    # A failed Sync first: Needs attention.
    fake.token = "ghp_revoked"
    await page.click("#github-sync")
    await expect(badge).to_have_text("Needs attention")

    # GitHub delivers a signed `issues` event; the card learns of it without a reload (it
    # re-reads its status when the window regains focus, as after a visit to GitHub).
    body = json.dumps(payload("issues.opened")).encode()
    async with ClientSession() as http:
        answer = await http.post(
            webhook_url.replace("http://127.0.0.1:8080", base),
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "issues",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": sign(secret, body),
            },
        )
        assert answer.status == 200, await answer.text()
    await page.evaluate("window.dispatchEvent(new Event('focus'))")
    await expect(badge).to_have_text("Connected")
    await expect(card.locator("[data-card-detail]")).to_contain_text("last delivery just now")


async def test_disconnect_wipes_the_secrets_and_keeps_the_settings(
    aiohttp_server, settings, fake_github, page: Page
) -> None:
    fake, github_url = fake_github
    fake.token = GITHUB_TOKEN
    app = create_app(replace(settings, github_api_url=github_url))
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("alice")
    await made.project("Website")

    await sign_in(page, base, "alice")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-github")
    await page.fill("#github-token", GITHUB_TOKEN)
    await page.fill("#github-repository", "octo-org/website")
    await page.locator("#github-project").select_option(label="Website")
    await page.click("#github-save")
    await page.click("#github-secret-done")
    await expect(card.locator("[data-status-badge]")).to_have_text("Connected")

    # Off keeps the settings and secrets; On again reconnects.
    switch = card.locator("[data-card-switch]")
    await expect(switch).to_have_attribute("aria-checked", "true")
    await switch.click()
    await expect(card.locator("[data-status-badge]")).to_have_text("Off")
    await expect(switch).to_have_attribute("aria-checked", "false")
    status = await page.evaluate("TT.api('/api/integrations/github/status')")
    assert status["enabled"] is False and status["is_active"] is False
    assert status["has_github_token"] is True and status["has_webhook_secret"] is True
    await switch.click()
    await expect(card.locator("[data-status-badge]")).to_have_text("Connected")

    # Disconnect asks first; Cancel keeps everything.
    await page.click("#github-disconnect-start")
    await expect(page.locator("#card-github-disconnect")).to_be_visible()
    await card.locator("#card-github-disconnect").get_by_role("button", name="Cancel").click()
    await expect(page.locator("#card-github-disconnect")).to_be_hidden()
    await expect(card.locator("[data-status-badge]")).to_have_text("Connected")

    await page.click("#github-disconnect-start")
    await page.click("#github-disconnect")
    await expect(card.locator("[data-card-message]")).to_contain_text("Disconnected")
    await expect(card.locator("[data-status-badge]")).to_have_text("Incomplete")
    await expect(card.locator("[data-card-detail]")).to_contain_text("a webhook secret")
    # The settings stay, the token is gone.
    await expect(page.locator("#github-repository")).to_have_value("octo-org/website")
    await expect(page.locator("#github-token")).not_to_have_attribute(
        "placeholder", "Token saved · leave blank to keep it"
    )
    status = await page.evaluate("TT.api('/api/integrations/github/status')")
    assert status["has_github_token"] is False and status["has_webhook_secret"] is False
    assert status["is_active"] is False and status["repo_name"] == "website"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed_tls(directory: Path, *hosts: str) -> ssl.SSLContext:
    """A server TLS context with a throw-away certificate for `hosts` (the browser is told to
    ignore that it is self-signed). HTTPS, because Chromium keeps a Partitioned cookie only
    from a secure scheme."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def embed_snippet(public_url: str) -> str:
    """The documented TimeTracker snippet, pointed at this gateway."""
    text = EMBED_DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- embed-snippet[^>]*-->\s*```html\n(.*?)```", text, re.S)
    assert match, f"{EMBED_DOC} has lost its embed snippet"
    origin = str(URL(public_url).origin())
    return (
        match.group(1)
        .replace("https://tt.example.com/gateway", public_url)
        .replace("https://tt.example.com", origin)
    )


async def test_sign_in_inside_a_cross_site_iframe(aiohttp_server, settings, tmp_path) -> None:
    """TimeTracker on tt.test embeds the gateway on gw.test: a third-party iframe, in which
    Chromium blocks ordinary cookies; only the Partitioned session cookie makes sign-in work."""
    if not HAVE_CHROMIUM:
        pytest.fail(f"GATEWAY_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
    tls = self_signed_tls(tmp_path, "gw.test", "tt.test")
    tt_port, gw_port = free_port(), free_port()
    parent, gateway = f"https://tt.test:{tt_port}", f"https://gw.test:{gw_port}"
    app = create_app(replace(settings, public_url=gateway, frame_ancestors=f"'self' {parent}"))
    await aiohttp_server(app, port=gw_port, ssl=tls)
    made = Made(app)
    await made.user("alice", full_name="Alice Liddell")
    await made.project("Website")

    async def settings_page(_request: web.Request) -> web.Response:
        html = (
            "<!doctype html><html lang='en'><head><title>TimeTracker settings</title>"
            "<link rel='icon' href='data:,'></head>"
            "<body><h1>TimeTracker settings</h1>" + embed_snippet(gateway) + "</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    timetracker = web.Application()
    timetracker.router.add_get("/settings", settings_page)
    await aiohttp_server(timetracker, port=tt_port, ssl=tls)

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                *CHROMIUM_ARGS,
                "--host-resolver-rules=MAP *.test 127.0.0.1",
            ],
        )
        try:
            context = await chromium.new_context(ignore_https_errors=True)
            context.set_default_timeout(TIMEOUT_MS)
            await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=parent)
            page = await context.new_page()
            log = PageLog(page)
            await page.goto(parent + "/settings")
            frame = page.frame_locator("#tt-integrations")
            await frame.locator("#username").fill("alice")
            await frame.locator("#password").fill(PASSWORD)
            await frame.locator("#login-submit").click()

            # Signed in inside the frame: the cards, without the page's own header.
            card = frame.locator("#card-github")
            await expect(card.locator("[data-status-badge]")).to_have_text("Not configured")
            await expect(frame.locator("header")).to_have_count(0)
            await expect(frame.locator("#login-error")).to_have_count(0)
            cookies = [c for c in await context.cookies(gateway) if c["name"] == SESSION_COOKIE]
            assert cookies and cookies[0]["sameSite"] == "None" and cookies[0]["secure"], cookies

            # A write from inside the frame passes the CSRF check (token and origin).
            await expect(frame.locator("#github-project")).to_have_attribute(
                "data-projects", "loaded"
            )
            await frame.locator("#github-repository").fill("octo-org/website")
            await frame.locator("#github-project").select_option(label="Website")
            await frame.locator("#github-save").click()
            await expect(card).not_to_have_attribute("data-state", "unconfigured")
            await expect(card.locator("[data-card-message]")).not_to_contain_text("CSRF")
            dialog = frame.locator("#github-secret-dialog")
            if await dialog.is_visible():
                # Copy works in the frame: the snippet's allow="clipboard-write".
                await frame.locator("#github-secret-copy").click()
                await expect(frame.locator("#github-secret-copy")).to_have_text("Copied")
                await frame.locator("#github-secret-done").click()
                await expect(dialog).to_be_hidden()

            # The parent sized the iframe to the page: no scroll bar inside.
            iframe = page.locator("#tt-integrations")
            gateway_frame = next(f for f in page.frames if f.url.startswith(gateway))
            for _ in range(50):
                inner = await gateway_frame.evaluate(
                    "Math.ceil(document.documentElement.getBoundingClientRect().height)"
                )
                outer = await iframe.evaluate("el => el.getBoundingClientRect().height")
                if abs(inner - outer) <= 1:
                    break
                await page.wait_for_timeout(100)
            assert abs(inner - outer) <= 1, (inner, outer)
            assert outer != 640  # the snippet's initial height was replaced
            save_screenshot("embedded-cross-site.png", await page.screenshot(full_page=True))

            # Sign out inside the frame, then in again: still working.
            await frame.locator("[data-logout]").click()
            await expect(frame.locator("#login-form")).to_be_visible()
            log.expect_clean()
        finally:
            await chromium.close()


async def test_slack_card_saves_tests_copies_and_disconnects(
    aiohttp_server, settings, page: Page
) -> None:
    from tests.test_slack import BOT_TOKEN, CHANNEL, SECRET, FakeSlack

    fake = FakeSlack()
    slack_url = str((await aiohttp_server(fake.app())).make_url("")).rstrip("/")
    app = create_app(replace(settings, slack_api_url=slack_url))
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    await Made(app).user("alice", full_name="Alice Liddell")
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    log = PageLog(page)

    await sign_in(page, base, "alice")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-slack")
    badge = card.locator("[data-status-badge]")
    detail = card.locator("[data-card-detail]")
    message = card.locator("[data-card-message]")
    await expect(badge).to_have_text("Not configured")
    await expect(card).to_have_attribute("data-state", "unconfigured")
    await expect(card.locator("[data-card-summary]")).to_be_hidden()
    await expect(page.locator("#slack-config-form")).to_be_visible()
    await expect(page.locator("#slack-notify-start")).to_be_checked()  # the defaults
    await expect(page.locator("#slack-daily-summary")).not_to_be_checked()
    await expect(page.locator("#slack-summary-time")).to_have_value("18:00")

    # Before any token: the Request URL (whole) and the manifest, to create the Slack app.
    wanted = settings.public_url.rstrip("/") + "/api/integrations/slack/events"
    events_url = page.locator("#slack-events-url")
    await expect(events_url).to_have_text(wanted)
    await page.click("#slack-events-url-copy")
    assert await page.evaluate("navigator.clipboard.readText()") == wanted
    await card.locator("#slack-setup summary", has_text="App manifest").click()
    await page.click("#slack-manifest-copy")
    manifest = json.loads(await page.evaluate("navigator.clipboard.readText()"))
    assert manifest["features"]["slash_commands"][0]["command"] == "/tt"
    assert manifest["features"]["slash_commands"][0]["url"] == wanted
    await also_scan(page, "slack, not configured")

    # A save without the secrets: Incomplete, naming what is missing.
    await page.fill("#slack-channel", CHANNEL)
    await page.click("#slack-save")
    await expect(message).to_have_text(
        "Saved. To connect, add the bot token and the signing secret."
    )
    await expect(badge).to_have_text("Incomplete")
    await expect(detail).to_have_text("To connect, add the bot token and the signing secret.")

    # The secrets: the save checks the new token at once (a test post in the channel).
    await page.fill("#slack-bot-token", BOT_TOKEN)
    await page.fill("#slack-signing-secret", SECRET)
    await page.fill("#slack-user-id", "u2147483697")
    await page.check("#slack-daily-summary")
    await page.fill("#slack-summary-time", "17:30")
    await page.click("#slack-save")
    await expect(message).to_have_text("Connected to Slack as grace.")
    await expect(badge).to_have_text("Connected")
    await expect(card).to_have_attribute("data-state", "connected")
    await expect(detail).to_have_text(re.compile(r"^Connected as grace · checked just now"))
    assert [post["channel"] for post in fake.posts] == [CHANNEL]
    await expect(page.locator("#slack-bot-token")).to_have_value("")  # never echoed back

    # Compact: the summary, the form behind Edit.
    summary = card.locator("[data-card-summary]")
    await expect(summary).to_be_visible()
    await expect(summary.locator("p").first).to_have_text(
        f"Posts to {CHANNEL} · bot grace", use_inner_text=True
    )
    await expect(summary.locator("dl")).to_have_text(
        re.compile(
            r"Timer start\s*Posted, with a Stop button\s*Timer stop\s*Posted\s*"
            r"Daily summary\s*At 17:30\s*/tt acts for\s*Slack member U2147483697"
        ),
        use_inner_text=True,
    )
    await expect(page.locator("#slack-config-form")).to_be_hidden()
    await page.locator("#slack-app-details > summary").click()
    await expect(page.locator("#slack-events-url-summary")).to_have_text(wanted)
    await also_scan(page, "slack, connected")

    # Reload: settings read back, secrets only as "saved".
    await page.reload()
    await expect(badge).to_have_text("Connected")
    await card.get_by_role("button", name="Edit").click()
    await expect(page.locator("#slack-config-form")).to_be_visible()
    await expect(page.locator("#slack-setup")).to_be_hidden()
    await expect(page.locator("#slack-user-id")).to_have_value("U2147483697")
    await expect(page.locator("#slack-summary-time")).to_have_value("17:30")
    await expect(page.locator("#slack-daily-summary")).to_be_checked()
    await expect(page.locator("#slack-bot-token")).to_have_attribute(
        "placeholder", "Token saved · leave blank to keep it"
    )
    assert BOT_TOKEN not in await page.content()
    await card.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#slack-config-form")).to_be_hidden()

    # Slack's refusals are sentences with the next step, shown on the card at once.
    for mode, words in (
        ("channel_not_found", f"Slack does not know channel {CHANNEL}: check the channel ID"),
        ("not_in_channel", f"The bot is not in channel {CHANNEL}: invite it with /invite"),
    ):
        fake.mode = mode
        await page.click("#slack-test")
        await expect(badge).to_have_text("Needs attention")
        await expect(message).to_have_attribute("role", "alert")
        await expect(message).to_contain_text(words)
        await expect(detail).to_contain_text(words)
    fake.mode = "invalid_auth"
    await page.click("#slack-test")
    await expect(message).to_contain_text("Slack rejected the bot token: copy the Bot User OAuth")
    link = message.get_by_role("link", name="Open your Slack apps")
    await expect(link).to_have_attribute("href", "https://api.slack.com/apps")
    await also_scan(page, "slack, needs attention")
    # A good answer again clears it; the old message is replaced, not stacked.
    fake.mode = "ok"
    await page.click("#slack-test")
    await expect(badge).to_have_text("Connected")
    await expect(message).to_have_text("Connected to Slack as grace.")

    # Disconnect through the frame's inline confirm: Cancel keeps everything...
    await page.click("#slack-disconnect-start")
    confirm = page.locator("#card-slack-disconnect")
    await expect(confirm).to_contain_text("Disconnect Slack?")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()
    await expect(badge).to_have_text("Connected")
    # ...Disconnect wipes the secrets and keeps the settings.
    await page.click("#slack-disconnect-start")
    await page.click("#slack-disconnect")
    await expect(message).to_contain_text("Disconnected. Your settings are kept")
    await expect(badge).to_have_text("Incomplete")
    await expect(detail).to_have_text("To connect, add the bot token and the signing secret.")
    await expect(page.locator("#slack-config-form")).to_be_visible()
    await expect(page.locator("#slack-channel")).to_have_value(CHANNEL)
    await expect(page.locator("#slack-bot-token")).not_to_have_attribute(
        "placeholder", "Token saved · leave blank to keep it"
    )
    status = await page.evaluate("TT.api('/api/integrations/slack/status')")
    assert status["has_bot_token"] is False and status["has_signing_secret"] is False
    assert status["is_active"] is False and status["channel_id"] == CHANNEL
    log.expect_clean()


async def google_with_consent(aiohttp_server):  # type: ignore[no-untyped-def]
    """tests/test_google.py's fake Google plus its consent screen at /auth, reduced to an Allow
    link back to the redirect URI; (fake, its URL, the consent requests seen)."""
    from tests.test_google import CODE, FakeGoogle

    fake = FakeGoogle()
    consent_app = fake.app()
    consents: list[dict[str, str]] = []

    async def consent(request: web.Request) -> web.Response:
        consents.append(dict(request.query))
        back = URL(request.query["redirect_uri"]).with_query(
            state=request.query["state"], code=CODE
        )
        html = (
            "<!doctype html><html lang='en'><head><title>Sign in with Google</title>"
            "<link rel='icon' href='data:,'></head><body><main><h1>Allow access?</h1>"
            f"<a id='allow' href='{back}'>Allow</a></main></body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    consent_app.router.add_get("/auth", consent)
    url = str((await aiohttp_server(consent_app)).make_url("")).rstrip("/")
    return fake, url, consents


async def test_google_card_connects_through_the_consent_and_back(
    aiohttp_server, settings, page: Page
) -> None:
    """Connect behind the path prefix: the gateway sends the browser to (a fake) Google's
    consent page, which sends it back to the callback; the card then says Connected as the
    account's email. Then Edit, Save, Sync now, Test and the frame's Disconnect."""
    from tests.test_google import _google_settings

    fake, google, consents = await google_with_consent(aiohttp_server)
    upstream: dict[str, str] = {}
    proxy = await aiohttp_server(prefix_proxy(PREFIX, upstream))
    public = str(proxy.make_url(PREFIX))
    app = create_app(_google_settings(replace(settings, public_url=public), google))
    server = await aiohttp_server(app)
    upstream["url"] = str(server.make_url("")).rstrip("/")
    made = Made(app)
    await made.user("alice")
    await made.project("Website")
    log = PageLog(page)

    await sign_in(page, public, "alice")
    await page.wait_for_url(public + "/")
    card = page.locator("#card-google")
    badge = card.locator("[data-status-badge]")
    detail = card.locator("[data-card-detail]")
    message = card.locator("[data-card-message]")
    await expect(badge).to_have_text("Not configured")
    await expect(page.locator("#google-not-set-up")).to_be_hidden()
    await expect(page.locator("#google-config-form")).to_be_hidden()
    connect = page.locator("#google-connect")
    await expect(connect).to_be_visible()
    await expect(connect).to_have_attribute("href", PREFIX + "/integrations/google/connect")
    # The whole window goes: Google's consent screen refuses to show in an embedding iframe.
    await expect(connect).to_have_attribute("target", "_top")
    await also_scan(page, "google, not connected")

    # Connect: off to the consent screen, with the gateway's client, redirect URI and PKCE.
    await connect.click()
    await page.wait_for_url(re.compile("^" + re.escape(google) + "/auth"))
    asked = consents[-1]
    assert asked["client_id"] == "123-abc.apps.googleusercontent.com"
    assert asked["redirect_uri"] == public + "/integrations/google/callback"
    assert asked["code_challenge_method"] == "S256" and asked["state"]
    await page.click("#allow")

    # Back on the cards page (prefix kept): connected as the account, said once.
    await page.wait_for_url(public + "/")  # ?google=connected leaves the address once shown
    await expect(message).to_have_text("Google Calendar is connected.")
    await expect(badge).to_have_text("Connected")
    await expect(card).to_have_attribute("data-state", "connected")
    await expect(detail).to_contain_text("Connected as alice@example.com")
    await expect(detail).to_contain_text("to sync, add a project for imported events (Edit)")
    summary = card.locator("[data-card-summary]")
    await expect(summary).to_contain_text("alice@example.com")
    await expect(summary).to_contain_text("Import events as time entries")
    await expect(summary).to_contain_text("None yet: choose one (Edit)")
    await expect(page.locator("#google-reconnect")).to_be_hidden()
    await also_scan(page, "google, connected")

    # Edit: the project picker like GitHub's; Save; the summary names the project.
    await card.get_by_role("button", name="Edit").click()
    await expect(page.locator("#google-config-form")).to_be_visible()
    await expect(page.locator("#google-connect")).to_be_hidden()
    await expect(page.locator("#google-calendar-id")).to_have_value("primary")
    # The calendar field suggests the user's own calendars (calendarList), primary first.
    await expect(page.locator("#google-calendars")).to_have_attribute("data-options", "loaded")
    assert await page.locator("#google-calendars option").evaluate_all(
        "options => options.map(o => o.value)"
    ) == ["alice@example.com", "team@group.calendar.google.com"]
    await expect(page.locator("#google-days-back")).to_have_value(re.compile(r"^\d+$"))
    await page.locator("#google-project").select_option(label="Website")
    await page.locator("#google-direction").select_option("both")
    await page.click("#google-save")
    await expect(message).to_have_text("Saved.")
    await expect(page.locator("#google-config-form")).to_be_hidden()
    await expect(summary).to_contain_text("Website")
    await expect(summary).to_contain_text("Both: import and export")
    await expect(detail).not_to_contain_text("to sync, add")

    # Sync now and Test against the fake Google.
    await page.click("#google-sync")
    await expect(message).to_have_text(
        re.compile(r"^Sync finished: \d+ imported, \d+ updated, \d+ exported, \d+ skipped\.$")
    )
    await expect(detail).to_contain_text("last sync just now")
    await page.click("#google-test")
    await expect(message).to_have_text("Connected to Google as alice@example.com.")
    await expect(badge).to_have_text("Connected")

    # Google revokes the grant: Needs attention, with Reconnect.
    fake.valid.clear()
    fake.invalid_grant = True
    await page.click("#google-sync")
    await expect(badge).to_have_text("Needs attention")
    await expect(message).to_contain_text("no longer accepts this connection")
    await expect(message.get_by_role("link", name="Reconnect")).to_have_attribute(
        "href", PREFIX + "/integrations/google/connect"
    )
    await expect(page.locator("#google-reconnect")).to_be_visible()
    await also_scan(page, "google, reconnect required")

    # Disconnect through the frame's confirm: revoked at Google, the settings kept.
    revokes = len(fake.of("/revoke"))
    await page.click("#google-disconnect-start")
    await expect(page.locator("#card-google-disconnect")).to_contain_text("revoked at Google")
    await page.click("#google-disconnect")
    await expect(message).to_contain_text("Disconnected: Google's access was revoked.")
    await expect(badge).to_have_text("Incomplete")
    await expect(detail).to_have_text("To connect, add your Google account (Connect).")
    await expect(connect).to_be_visible()
    assert len(fake.of("/revoke")) == revokes + 1
    status = await page.evaluate("TT.api('/api/integrations/google/status')")
    assert status["has_refresh_token"] is False and status["sync_direction"] == "both"
    # The revoked grant's Sync answers 409 (reconnect_required), which the console logs.
    log.expect_clean("/api/integrations/google/sync", "status of 409")


async def test_google_card_when_the_administrator_has_not_set_it_up(
    aiohttp_server, app, made: Made, page: Page
) -> None:
    await made.user("alice")
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    log = PageLog(page)

    await sign_in(page, base, "alice")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-google")
    await expect(card.locator("[data-status-badge]")).to_have_text("Not configured")
    notice = page.locator("#google-not-set-up")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("has not set up Google sign-in")
    await expect(notice).to_contain_text("GOOGLE_CLIENT_ID")
    await expect(notice).to_contain_text("GOOGLE_CLIENT_SECRET")
    await expect(page.locator("#google-redirect-uri")).to_have_text(
        "http://127.0.0.1:8080/integrations/google/callback"
    )
    await expect(page.locator("#google-connect")).to_be_hidden()
    await expect(card.get_by_role("link", name=re.compile("Connect"))).to_have_count(0)

    # A consent that came back with an error: the card's message says it in words, once.
    await page.goto(base + "/?google_error=access_denied")
    message = card.locator("[data-card-message]")
    await expect(message).to_have_text(
        "You declined access to Google Calendar, so nothing was connected."
    )
    await expect(message).to_have_attribute("role", "alert")
    await page.wait_for_url(base + "/")
    await also_scan(page, "google, not set up")
    log.expect_clean()


async def test_all_three_cards_connected_light_and_dark(
    aiohttp_server, settings, fake_github, page: Page
) -> None:
    """The page as docs/screenshots shows it: GitHub, Google Calendar and Slack connected; no
    serious axe finding and a clean console in both themes."""
    from tests.test_google import _google_settings
    from tests.test_slack import BOT_TOKEN, CHANNEL, SECRET, FakeSlack

    github, github_url = fake_github
    github.token = GITHUB_TOKEN
    slack = FakeSlack()
    slack_url = str((await aiohttp_server(slack.app())).make_url("")).rstrip("/")
    _google, google_url, _consents = await google_with_consent(aiohttp_server)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(
        _google_settings(
            replace(settings, public_url=base, github_api_url=github_url, slack_api_url=slack_url),
            google_url,
        )
    )
    await aiohttp_server(app, port=port)
    made = Made(app)
    await made.user("alice", full_name="Alice Liddell")
    website = await made.project("Website")
    meetings = await made.project("Meetings")
    log = PageLog(page)

    await sign_in(page, base, "alice")
    await page.wait_for_url(base + "/")
    await expect(page.locator("#card-github [data-status-badge]")).to_have_text("Not configured")
    await page.evaluate(
        """async ([website, channel, token, secret, github]) => {
          await TT.api('/api/integrations/github/config', {body: {
            github_token: github, repo_owner: 'octo-org', repo_name: 'website',
            default_project_id: website}});
          await TT.api('/api/integrations/github/test', {body: {}});
          await TT.api('/api/integrations/slack/config', {body: {
            bot_token: token, signing_secret: secret, channel_id: channel,
            linked_slack_user_id: 'U2147483697', daily_summary: true}});
          await TT.api('/api/integrations/slack/test', {body: {}});
        }""",
        [website.id, CHANNEL, BOT_TOKEN, SECRET, GITHUB_TOKEN],
    )
    await page.click("#google-connect")
    await page.click("#allow")
    await page.wait_for_url(base + "/")
    await page.evaluate(
        """async (project) => {
          await TT.api('/api/integrations/google/config', {body: {default_project_id: project}});
          await TT.api('/api/integrations/google/sync', {body: {}});
        }""",
        meetings.id,
    )

    for theme in ("light", "dark"):  # the pictures in docs/
        await page.goto(f"{base}/?theme={theme}")
        for name in ("github", "google", "slack"):
            card = page.locator(f"#card-{name}")
            await expect(card.locator("[data-status-badge]")).to_have_text("Connected")
        await expect(page.locator("#card-google [data-card-detail]")).to_contain_text(
            "Connected as alice@example.com · last sync just now"
        )
        await expect(page.locator("#card-slack [data-card-detail]")).to_contain_text(
            "Connected as grace"
        )
        await expect(page.locator("#card-github [data-summary]")).to_have_text(
            "octo-org/website → Website"
        )
        await expect(page.locator("#github-project")).to_have_attribute("data-projects", "loaded")
        violations = await serious_violations(page) if AXE.exists() else []
        assert violations == [], (theme, violations)
        save_screenshot(f"cards-{theme}.png", await page.locator("#main").screenshot())
    log.expect_clean()
