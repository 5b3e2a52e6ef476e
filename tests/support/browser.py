"""Opening a page in Debian's headless Chromium as a person would, over the Chrome DevTools protocol.

Records what the page logs and every request it makes, and takes a full-page screenshot. The browser
runs offline-minded (no background networking, no component updates) with a fresh profile.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


@dataclass
class PageVisit:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself included
    screenshot: bytes = b""
    checks: Any = None  # what the page's own JavaScript check returned


def chromium() -> str:
    """The browser's path; a missing browser fails the test (`make test` installs it)."""
    path = shutil.which("chromium") or CHROMIUM
    if not os.path.exists(path):
        raise RuntimeError(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it)")
    return path


def visit(url: str, check_script: str, width: int = 1280, timeout: float = 60.0) -> PageVisit:
    """Loads `url`, waits for it, runs `check_script` (a JavaScript expression) and screenshots the page."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        endpoint = _devtools_endpoint(process, timeout)
        with connect(endpoint, max_size=None, open_timeout=timeout) as socket:
            return _Session(socket, timeout).visit(url, check_script, width)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_endpoint(process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return match.group(1)
    raise RuntimeError("Chromium did not start its DevTools endpoint:\n" + "".join(seen[-30:]))


class _Session:
    def __init__(self, socket, timeout: float):
        self._socket = socket
        self._ids = itertools.count(1)
        self._timeout = timeout
        self._events: list[dict] = []
        self._session_id: Optional[str] = None

    def _send(self, method: str, params: Optional[dict] = None, session: bool = True) -> dict:
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session and self._session_id:
            message["sessionId"] = self._session_id
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            reply = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)
        raise TimeoutError(method)

    def _wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            for event in self._events:
                if event.get("method") == method:
                    return event
            self._events.append(json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic()))))
        raise TimeoutError(method)

    def visit(self, url: str, check_script: str, width: int) -> PageVisit:
        target = self._send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        attached = self._send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)
        self._session_id = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self._send(f"{domain}.enable")
        self._events.clear()
        self._send("Page.navigate", {"url": url})
        self._wait_for("Page.loadEventFired")
        checks = self._send("Runtime.evaluate", {"expression": check_script, "returnByValue": True})
        height = self._send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight"})
        height = int(height["result"]["value"])
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        shot = self._send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        visit = PageVisit(screenshot=base64.b64decode(shot["data"]), checks=checks["result"].get("value"))
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                visit.requests.append(params["request"]["url"])
            elif method == "Runtime.exceptionThrown":
                visit.console_errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                visit.console_errors.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                visit.console_errors.append(params["entry"].get("text", "")[:500])
        return visit


def save_screenshot(visit: PageVisit, path: Path) -> Path:
    path.write_bytes(visit.screenshot)
    return path
