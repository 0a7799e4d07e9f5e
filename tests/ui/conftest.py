"""Fixtures for the browser tests of the Client Registry View (issue 15).

The tests drive Debian's Chromium (``/usr/bin/chromium``) with Playwright
for Python against a real ``fleetgate`` binary started on free loopback
ports with a fresh data dir, and register devices with real HTTP requests.
Nothing is mocked. ``scripts/test.sh`` builds the binary first; set
``FLEETGATE_BIN`` to test another one.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ADMIN_PASSWORD = "admin-ui-test-password"
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("FLEETGATE_CHROMIUM", "/usr/bin/chromium")


def fleetgate_bin():
    if os.environ.get("FLEETGATE_BIN"):
        return os.environ["FLEETGATE_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "fleetgate")


class Http:
    """A tiny JSON-over-HTTP client: returns (status, json or None, headers)."""

    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, token=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                is_json = "json" in (resp.headers.get("Content-Type") or "")
                parsed = (json.loads(raw) if is_json else raw.decode()) if raw else None
                return resp.status, parsed, resp.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return e.code, parsed, e.headers


class RedisServer:
    """A ``redis-server`` of our own on a free loopback port, with no
    persistence, stopped by its PID (``stop``) when the test wants an outage
    and when the test ends."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fleetgate-ui-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not come up")
            time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """A running ``fleetgate``, killed by PID when the test ends.
    ``extra_args`` are more flags (e.g. ``--store redis://...``)."""

    def __init__(self, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="fleetgate-ui-")
        args = [
            fleetgate_bin(),
            "--http-listen", "127.0.0.1:0",
            "--https-listen", "off",
            "--mqtt-listen", "127.0.0.1:0",
            "--mqtts-listen", "off",
            "--metrics-listen", "off",
            "--admin-listen", "127.0.0.1:0",
            "--workers", "1",
            "--data-dir", self.dir,
            "--admin-password", ADMIN_PASSWORD,
            "--rate-limit-per-user", "off",
            "--rate-limit-per-ip", "off",
            *extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.log = []
        addrs = {}
        deadline = time.time() + 30
        while len(addrs) < 2:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("fleetgate exited:\n" + "".join(self.log))
            self.log.append(line)
            for needle, key in (("admin API listening", "admin"), ("device API listening", "http")):
                if needle in line:
                    addrs[key] = re.search(r"addr=(\S+)", line).group(1)
            if time.time() > deadline:
                raise RuntimeError("fleetgate did not log its addresses:\n" + "".join(self.log))
        # Keep draining stderr so the process never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.admin_url = f"http://{addrs['admin']}"
        self.admin = Http(self.admin_url)
        self.device = Http(f"http://{addrs['http']}")
        self._token = None

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def token(self):
        if self._token is None:
            status, body, _ = self.admin.call("POST", "/api/login",
                                              {"username": "admin", "password": ADMIN_PASSWORD})
            assert status == 200, body
            self._token = body["token"]
        return self._token

    def api(self, method, path, body=None):
        """An admin API call with the admin's token."""
        return self.admin.call(method, path, body, token=self.token)

    def unlock(self, ms=300000):
        status, body, _ = self.api("POST", "/api/client-registry/unlock", {"durationMs": ms})
        assert status == 200, body

    def register(self, username, password="device-secret", **extra):
        """One device poll; returns (status, body)."""
        status, body, _ = self.device.call("POST", "/api/client-registry/register",
                                           {"username": username, "password": password, **extra})
        return status, body


@pytest.fixture
def gateway():
    g = Gateway()
    yield g
    g.stop()


@pytest.fixture
def redis_gateway():
    """A gateway on a Redis store of its own: ``(gateway, redis)``. Each
    Redis operation is bounded by 500 ms, so an outage is a 503 within it."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: apt-get install redis-server (scripts/test.sh does)")
    redis = RedisServer()
    try:
        g = Gateway(["--store", redis.url, "--redis-prefix", "ui-test", "--redis-timeout", "500ms"])
    except Exception:
        redis.close()
        raise
    yield g, redis
    g.stop()
    redis.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


# Records what must never happen on the page: CSP violations (the listener
# runs before any page script), alert() calls, uncaught errors.
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


class Watched:
    def __init__(self, page):
        self.page = page
        self.console_errors = []
        self.page_errors = []
        self.dialogs = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _dialog(self, d):
        self.dialogs.append(d.message)
        d.dismiss()

    def csp_violations(self):
        return self.page.evaluate("window.__csp || []")

    def assert_clean(self, allow_console=()):
        errors = [e for e in self.console_errors if not any(a in e for a in allow_console)]
        assert errors == [], errors
        assert self.page_errors == [], self.page_errors
        assert self.dialogs == [], f"alert/confirm ran: {self.dialogs}"
        assert self.csp_violations() == []


def new_page(browser, width=1280, height=800):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(WATCH)
    context.set_default_timeout(5000)
    page = context.new_page()
    return context, page, Watched(page)


@pytest.fixture
def page(browser):
    context, page, watched = new_page(browser)
    page.watched = watched
    yield page
    context.close()


def log_in(page, gateway, username="admin", password=ADMIN_PASSWORD):
    page.goto(gateway.admin_url + "/")
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
