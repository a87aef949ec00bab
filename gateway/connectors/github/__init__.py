"""GitHub connector: signed webhooks turn issues into tasks; admins can sync open issues."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.connectors.github.handlers import install_routes
from gateway.connectors.github.service import GitHubConnector
from gateway.connectors.plugin import ConnectorPlugin
from gateway.connectors.routes import install_common_routes

KEY: web.AppKey[GitHubConnector] = web.AppKey("github_connector", GitHubConnector)


def build(services: Any) -> GitHubConnector:
    """The connector (GitHub has no scheduled job of its own)."""
    return GitHubConnector(services.deps, services.runner)


def install(app: web.Application, connector: GitHubConnector, services: Any) -> None:
    app[KEY] = connector
    install_common_routes(app, connector)
    install_routes(app, connector, services.pipeline)


PLUGIN = ConnectorPlugin("github", build, install)
