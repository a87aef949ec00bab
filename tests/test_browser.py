"""The cards page in a real browser: Playwright (async API) driving Debian's Chromium.

Skipped when /usr/bin/chromium is missing, unless GATEWAY_REQUIRE_BROWSER=1 (CI), which turns
the missing browser into a failure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from yarl import URL

from gateway import keys
from gateway.app import create_app
from tests.conftest import PASSWORD, Made
from tests.fakes import issue

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
REQUIRE_BROWSER = os.environ.get("GATEWAY_REQUIRE_BROWSER") == "1"
HAVE_CHROMIUM = CHROMIUM.exists()

try:
    from playwright.async_api import Browser, Page, Response, async_playwright, expect
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
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
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


async def accept_dialog(page: Page, expected: str) -> list[str]:
    """Accept the next confirm() and remember its text (an unhandled one is dismissed)."""
    seen: list[str] = []

    async def handle(dialog) -> None:  # type: ignore[no-untyped-def]
        seen.append(dialog.message)
        assert expected in dialog.message
        await dialog.accept()

    page.once("dialog", handle)
    return seen


# ------------------------------------------------------------------------------ tests


async def test_login_form_shows_the_three_cards(
    aiohttp_server, app, made: Made, page: Page
) -> None:
    await made.user("alice", full_name="Alice Liddell")
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")

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
    await expect(page.locator("#login-error")).to_have_count(0)

    # The GitHub card's status loaded; its form is there; Sync is for admins only.
    await expect(page.locator("#card-github [data-status-badge]")).to_have_text("Not configured")
    await expect(page.locator("#github-config-form")).to_be_visible()
    await expect(page.locator("#github-sync")).to_have_count(0)
    await expect(page.locator("#github-generate-secret")).to_be_hidden()  # no secret yet
    await expect(page.locator("#github-secret-once")).to_be_hidden()
    # No project yet: the picker says so.
    await expect(page.locator("#github-project")).to_have_attribute("data-projects", "empty")
    await expect(page.locator("#github-project option")).to_have_text(["No projects"])


async def test_github_card_saves_shows_secret_once_then_status(
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

    await sign_in(page, base, "root")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-github")
    badge = card.locator("[data-status-badge]")
    await expect(badge).to_have_text("Not configured")

    # The picker lists the active projects only (from GET /api/projects).
    picker = page.locator("#github-project")
    await expect(picker).to_have_attribute("data-projects", "loaded")
    await expect(picker.locator("option")).to_have_text(["Choose a project…", "Website"])

    # Save: the one-time webhook secret appears, the integration is active.
    await page.fill("#github-token", GITHUB_TOKEN)
    await page.fill("#github-owner", "octo-org")
    await page.fill("#github-repo", "website")
    await picker.select_option(label="Website")
    await page.check("#github-auto-start")
    await page.click("#github-save")
    secret_box = page.locator("#github-secret-once")
    await expect(secret_box).to_be_visible()
    await expect(secret_box).to_contain_text("Copy it now: it will not be shown again")
    secret_input = page.locator("#github-webhook-secret")
    secret = await secret_input.input_value()
    assert len(secret) >= 32, secret
    await expect(badge).to_have_text("Active")
    await expect(card.locator("#github-config-form [data-form-message]")).to_have_text("Saved")
    await expect(page.locator("#github-token")).to_have_value("")  # never echoed back

    # Copy puts the secret on the clipboard.
    await secret_box.get_by_role("button", name="Copy").click()
    assert await page.evaluate("navigator.clipboard.readText()") == secret

    # Test: GitHub's login for the saved token.
    await page.click("#github-test")
    message = card.locator("#github-config-form [data-form-message]")
    await expect(message).to_have_text("Connected to GitHub as octocat")
    assert "/user" in fake.calls

    # Reload: the status is read back, the secret is gone for good, the webhook URL is shown.
    await page.reload()
    await expect(badge).to_have_text("Active")
    await expect(card.locator("[data-last-sync]")).to_have_text("Never synced")
    await expect(secret_box).to_be_hidden()
    await expect(secret_input).to_have_value("")
    assert secret not in await page.content()
    webhook_url = page.locator("#github-webhook-url")
    await expect(webhook_url).to_be_visible()
    await expect(webhook_url).to_have_value(
        re.compile(r"/api/integrations/github/webhook\?integration=\d+$")
    )
    await expect(page.locator("#github-owner")).to_have_value("octo-org")
    await expect(page.locator("#github-repo")).to_have_value("website")
    await expect(picker).to_have_value(str(website.id))
    await expect(page.locator("#github-auto-start")).to_be_checked()
    await expect(page.locator("#github-secret-form")).to_contain_text("A webhook secret is stored.")
    await expect(page.locator("#github-token")).to_have_attribute(
        "placeholder", "Token saved · leave blank to keep it"
    )

    # A wrong token: Test shows GitHub's error instead of a login.
    fake.token = "ghp_another_token"
    await page.click("#github-test")
    await expect(message).to_have_attribute("role", "alert")
    await expect(message).not_to_have_text("Connected to GitHub as octocat")
    await expect(message).to_contain_text(re.compile(r"401|[Bb]ad credentials"))
    fake.token = GITHUB_TOKEN

    # Generate a new secret (after a confirm): shown once, different from the first.
    seen = await accept_dialog(page, "new webhook secret")
    await page.click("#github-generate-secret")
    await expect(secret_box).to_be_visible()
    await expect(secret_input).not_to_have_value("")
    regenerated = await secret_input.input_value()
    assert seen, "the button asks before replacing the secret"
    await expect(page.locator("#github-secret-form [data-form-message]")).to_have_text(
        "New webhook secret generated: paste it into the webhook on GitHub"
    )
    assert regenerated != secret and len(regenerated) >= 32
    await expect(badge).to_have_text("Active")

    # Sync (admins): the open issue becomes a task; the card shows the last sync.
    sync = page.locator("#github-sync")
    await expect(sync).to_be_visible()
    await sync.click()
    await expect(message).to_have_text("Sync finished: 1 created, 0 updated, 0 skipped")
    await expect(card.locator("[data-last-sync]")).to_contain_text("succeeded")


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
    await expect(page.locator("#github-webhook-url")).to_have_value(
        public + "/api/integrations/github/webhook"
    )

    # A write through the prefix: the session cookie (Path=/gateway) and CSRF header work.
    await page.fill("#github-owner", "octo-org")
    await page.fill("#github-repo", "website")
    await page.locator("#github-project").select_option(label="Website")
    await page.click("#github-save")
    await expect(page.locator("#github-secret-once")).to_be_visible()
    await expect(page.locator("#card-github [data-status-badge]")).to_have_text("Active")
    await expect(page.locator("#github-webhook-url")).to_have_value(
        re.compile("^" + re.escape(public) + r"/api/integrations/github/webhook\?integration=\d+$")
    )

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
    # A connector that is not installed yet answers 404 on its status route (its card says
    # "Not available yet"); that is the only failure allowed, and only for such a connector.
    pending = {
        f"{PREFIX}/api/integrations/{name}/status"
        for name in ("github", "google", "slack")
        if name not in app[keys.SERVICES].connectors
    }
    failed = [
        (response.url, response.status)
        for response in responses
        if response.status >= 400
        and not (response.status == 404 and URL(response.url).path in pending)
    ]
    assert failed == [], failed


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

    await sign_in(page, base, "alice")
    await page.wait_for_url(base + "/")
    card = page.locator("#card-slack")
    badge = card.locator("[data-status-badge]")
    await expect(badge).to_have_text("Not configured")
    await expect(page.locator("#slack-notify-start")).to_be_checked()  # the defaults
    await expect(page.locator("#slack-daily-summary")).not_to_be_checked()
    await expect(page.locator("#slack-summary-time")).to_have_value("18:00")

    await page.fill("#slack-bot-token", BOT_TOKEN)
    await page.fill("#slack-signing-secret", SECRET)
    await page.fill("#slack-channel", CHANNEL)
    await page.fill("#slack-user-id", "u2147483697")
    await page.check("#slack-daily-summary")
    await page.fill("#slack-summary-time", "17:30")
    await page.click("#slack-save")
    message = card.locator("#slack-config-form [data-form-message]")
    await expect(message).to_have_text("Saved")
    await expect(badge).to_have_text("Active")
    await expect(page.locator("#slack-bot-token")).to_have_value("")  # never echoed back
    await expect(page.locator("#slack-user-id")).to_have_value("U2147483697")

    # The Request URL and the manifest, to paste into Slack.
    events_url = page.locator("#slack-events-url")
    wanted = settings.public_url.rstrip("/") + "/api/integrations/slack/events"
    await expect(events_url).to_have_value(wanted)
    await card.locator("[data-copy='#slack-events-url']").click()
    assert await page.evaluate("navigator.clipboard.readText()") == wanted
    await card.locator("summary", has_text="App manifest").click()
    manifest = json.loads(await page.locator("#slack-manifest").input_value())
    assert manifest["features"]["slash_commands"][0]["command"] == "/tt"

    # Test: the bot user of the token, and a test post in the channel.
    await page.click("#slack-test")
    await expect(message).to_have_text("Connected to Slack as grace")
    assert [post["channel"] for post in fake.posts] == [CHANNEL]

    # Reload: settings read back, secrets only as "saved".
    await page.reload()
    await expect(badge).to_have_text("Active")
    await expect(page.locator("#slack-summary-time")).to_have_value("17:30")
    await expect(page.locator("#slack-daily-summary")).to_be_checked()
    await expect(page.locator("#slack-bot-token")).to_have_attribute(
        "placeholder", "Token saved · leave blank to keep it"
    )
    assert BOT_TOKEN not in await page.content()

    # Disconnect (after a confirm): inactive, the channel kept.
    seen = await accept_dialog(page, "Disconnect Slack?")
    await page.click("#slack-disconnect")
    await expect(badge).not_to_have_text("Active")
    assert seen
    await expect(page.locator("#slack-channel")).to_have_value(CHANNEL)
