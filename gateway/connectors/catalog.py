"""The connectors' provider keys and which of their config keys are secrets (DESIGN §7)."""

from __future__ import annotations

GITHUB = "github_connector"
GOOGLE = "google_calendar_connector"
SLACK = "slack_connector"

SECRET_KEYS: dict[str, tuple[str, ...]] = {
    GITHUB: ("github_token", "webhook_secret"),
    GOOGLE: ("access_token", "refresh_token"),
    SLACK: ("bot_token", "signing_secret"),
}
