"""The connectors this gateway runs: one line each."""

from __future__ import annotations

from gateway.connectors import github, google, slack
from gateway.connectors.plugin import ConnectorPlugin

PLUGINS: tuple[ConnectorPlugin, ...] = (github.PLUGIN, google.PLUGIN, slack.PLUGIN)
