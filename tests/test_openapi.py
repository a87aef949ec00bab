"""docs/api/openapi.yaml: in step with the router, and true of a running gateway (schemathesis)."""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import ON_POSTGRES, REPO
from tests.test_cli import free_port

SPEC = REPO / "docs" / "api" / "openapi.yaml"
JSON_PAGES = {"/healthz", "/readyz"}  # JSON routes outside /api/
METHODS = {"get", "post", "put", "patch", "delete"}


def _router_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'routes.db'}",
            data_dir=tmp_path,
            encryption_key=Fernet.generate_key().decode(),
        )
    )
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if route.method == "HEAD" or not (path.startswith("/api/") or path in JSON_PAGES):
            continue
        found.add((route.method.lower(), path))
    return found


def test_the_description_lists_exactly_the_routes_of_the_router(tmp_path: Path) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    described = {
        (method, path)
        for path, operations in spec["paths"].items()
        for method in operations
        if method in METHODS
    }
    routed = _router_routes(tmp_path)
    assert routed - described == set(), "routes missing from docs/api/openapi.yaml"
    assert described - routed == set(), "docs/api/openapi.yaml describes routes that do not exist"


# -- schemathesis against a running gateway ----------------------------------------------------


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway process on SQLite with an admin, a project and an API token; (url, token)."""
    if ON_POSTGRES:
        pytest.skip("the API is fuzzed once, on SQLite")
    tmp = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'fuzz.db'}",
        GATEWAY_DATA_DIR=str(tmp / "data"),
        GATEWAY_PORT=str(port),
        GATEWAY_SCHEDULER="0",
        PYTHONPATH=str(REPO),
    )
    subprocess.run(
        [sys.executable, "-m", "gateway", "migrate"], env=env, cwd=tmp, check=True,
        capture_output=True, timeout=120,
    )
    token = "tt_" + secrets.token_hex(16)
    with sqlite3.connect(tmp / "fuzz.db") as conn:
        conn.execute(
            "INSERT INTO users (username, role, is_active, created_at) "
            "VALUES ('fuzz', 'admin', 1, CURRENT_TIMESTAMP)"
        )
        conn.execute(
            "INSERT INTO projects (name, status, billable, created_at, updated_at) "
            "VALUES ('General', 'active', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        conn.execute(
            "INSERT INTO api_tokens (name, token_hash, token_prefix, user_id, scopes, is_active,"
            " created_at) VALUES ('fuzz', ?, ?, 1, '*', 1, CURRENT_TIMESTAMP)",
            (hashlib.sha256(token.encode()).hexdigest(), token[:10]),
        )
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "gateway"], env=env, cwd=tmp,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):  # noqa: S310
                break
        except OSError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
    yield url, token
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr[-3000:]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    result.ok() for result in schemathesis.openapi.from_path(SPEC).get_all_operations()
]


# Schemathesis' own pytest plugin is not used: it reaches into pytest's internals, which
# change between pytest releases; its strategies and checks driven by hypothesis serve.
@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_the_running_gateway_answers_as_described(operation, gateway_url) -> None:  # type: ignore[no-untyped-def]
    url, token = gateway_url

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy())
    def examples(case) -> None:  # type: ignore[no-untyped-def]
        case.call_and_validate(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
        )

    examples()
