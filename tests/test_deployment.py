"""docs/deploy/gateway.nginx.conf, run for real: nginx at /gateway/ in front of a gateway process."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ON_POSTGRES, PASSWORD, REPO
from tests.test_cli import free_port

SNIPPET = REPO / "docs" / "deploy" / "gateway.nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.skipif(ON_POSTGRES, reason="the proxy set-up is checked once, on SQLite"),
    pytest.mark.skipif(
        not Path(NGINX).exists() and not os.environ.get("GATEWAY_REQUIRE_NGINX"),
        reason="nginx is not installed (apt-get install nginx-light)",
    ),
]


def _wait(url: str, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            assert process.poll() is None, f"{what} stopped"
            assert time.monotonic() < deadline, f"{what} did not come up"
            time.sleep(0.2)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[str]:
    """A gateway with GATEWAY_PUBLIC_URL=…/gateway behind nginx running the documented snippet."""
    gateway_port, nginx_port = free_port(), free_port()
    public = f"http://127.0.0.1:{nginx_port}/gateway"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "SETTINGS_"))
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        GATEWAY_PORT=str(gateway_port),
        GATEWAY_PUBLIC_URL=public,
        GATEWAY_SCHEDULER="0",
        SETTINGS_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        PYTHONPATH=str(REPO),
    )
    subprocess.run(
        [sys.executable, "-m", "gateway", "users", "create", "olivia", "--password-stdin"],
        env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True, timeout=120,
    )
    gateway = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "gateway"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    snippet = SNIPPET.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}")
    (tmp_path / "gateway.conf").write_text(snippet)
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    conf = tmp_path / "nginx.conf"
    # Root's nginx would hand requests to `nobody`, who cannot enter pytest's private tmp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""
{user}
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{
        listen 127.0.0.1:{nginx_port};
        include {tmp_path}/gateway.conf;
    }}
}}
"""
    )
    nginx = subprocess.Popen(  # noqa: S603
        [NGINX, "-c", str(conf), "-p", str(tmp_path)], text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait(f"http://127.0.0.1:{gateway_port}/healthz", gateway, "the gateway")
        _wait(f"{public}/healthz", nginx, "nginx")
        yield public
    finally:
        nginx.terminate()
        gateway.terminate()
        nginx.wait(timeout=30)
        gateway.wait(timeout=30)


def test_the_documented_nginx_snippet_serves_the_gateway_at_its_prefix(proxied: str) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{proxied}/login", timeout=10) as answer:
        page = answer.read().decode()
    assert 'action="/gateway/login"' in page
    assert re.search(r'href="/gateway/static/css/app\.css', page)
    token = re.search(r'name="csrf_token"\s+value="([^"]+)"', page)
    assert token
    form = urllib.parse.urlencode(
        {"username": "olivia", "password": PASSWORD, "csrf_token": token.group(1)}
    ).encode()
    request = urllib.request.Request(  # noqa: S310
        f"{proxied}/login", data=form, headers={"Origin": proxied.rsplit("/gateway", 1)[0]}
    )
    with opener.open(request, timeout=10) as answer:  # follows the redirect to the cards page
        assert answer.url == f"{proxied}/"
        assert "card-github" in answer.read().decode()
    (cookie,) = [c for c in jar if c.name == "tt_gateway_session"]
    assert cookie.path == "/gateway"
    with opener.open(f"{proxied}/api/session", timeout=10) as answer:
        assert json.loads(answer.read())["user"]["username"] == "olivia"
    with opener.open(f"{proxied}/api/integrations/github/status", timeout=10) as answer:
        status = answer.read().decode()
    assert f'"webhook_url": "{proxied}/api/integrations/github/webhook"' in status
    # A GitHub-sized body passes nginx and reaches the gateway (which refuses it unsigned).
    big = urllib.request.Request(  # noqa: S310
        f"{proxied}/api/integrations/github/webhook",
        data=b"{" + b" " * (20 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(big, timeout=30)
    assert refused.value.code == 401  # the gateway's answer, not nginx's 413
