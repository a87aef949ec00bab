"""A wheel that runs anywhere: built, installed in a fresh venv, started from another folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ON_POSTGRES, REPO
from tests.test_cli import free_port

pytestmark = pytest.mark.skipif(ON_POSTGRES, reason="packaging is checked once, on SQLite")


def test_every_package_of_the_source_tree_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "gateway").rglob("__init__.py")
    }
    mapped = {"gateway.assets.templates", "gateway.assets.static", "gateway.assets.migrations"}
    assert listed == found | mapped


def _git_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],  # noqa: S607
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    return [line for line in out.splitlines() if (REPO / line).is_file()]


def test_the_wheel_serves_pages_from_any_working_directory(tmp_path: Path) -> None:
    # Build from a copy of the tracked files, so the checkout gets no build/ folder.
    source = tmp_path / "src"
    for name in _git_files():
        if name.startswith(("tests/", "node_modules/", "docs/")):
            continue
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("timetracker_gateway-*.whl")
    # A fresh venv; its dependencies come from this interpreter's site-packages, the gateway
    # only from the wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import gateway; print(gateway.__file__)"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), where

    port = free_port()
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_", "PYTHONPATH"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{elsewhere / 'gw.db'}",
        GATEWAY_DATA_DIR=str(elsewhere / "data"),
        GATEWAY_PORT=str(port),
        GATEWAY_SCHEDULER="0",
    )
    process = subprocess.Popen(  # noqa: S603
        [str(python), "-m", "gateway"], cwd=elsewhere, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the installed gateway did not become ready"
            time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/login", timeout=5) as answer:  # noqa: S310
            page = answer.read().decode()
        assert 'name="csrf_token"' in page
        css = re.search(r'href="(/static/css/app\.css[^"]*)"', page)
        assert css, page[:500]
        with urllib.request.urlopen(base + css.group(1), timeout=5) as answer:  # noqa: S310
            assert answer.status == 200 and len(answer.read()) > 1000
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "First run: created user 'admin'" in output  # migrations ran from the wheel
