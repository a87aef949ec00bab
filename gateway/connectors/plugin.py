"""How a connector package plugs into the gateway: build it with its jobs, install its routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.connectors.base import Connector


@dataclass(frozen=True)
class ConnectorPlugin:
    slug: str
    build: Callable[[Any], Connector]  # (Services) -> Connector; registers its jobs
    install: Callable[[web.Application, Any, Any], None]  # (app, connector, services)
