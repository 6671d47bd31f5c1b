"""Debian's headless Chromium driven over the DevTools protocol: no driver, no downloads.

`Chromium` starts `chromium --headless` on a fresh profile with every background download off
and talks to it over one websocket (the flattened target protocol). `Page.eval` runs an
expression (awaiting a promise) and returns its value; `Page.events` keeps what the page
reported (network requests, answers and failures, console errors) for the test to check.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


class CdpError(Exception):
    """A DevTools command failed, or the page threw."""


class Chromium:
    """One headless Chromium process; `page()` opens a tab."""

    def __init__(self, profile: Path) -> None:
        exe = shutil.which("chromium")
        assert exe, "Debian's chromium is required for the browser tests (.ci/run installs it)"
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile.parent / "chromium.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"chromium did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10))
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}  # by session
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                msg = json.loads(self.ws.recv())
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self._events.setdefault(msg.get("sessionId", ""), []).append(msg)
                    self._cond.notify_all()
        except ConnectionClosed:
            pass

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        """One DevTools command; its result."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        with self._cond:
            if not self._cond.wait_for(lambda: msg_id in self._replies, timeout):
                raise CdpError(f"{method}: no answer within {timeout} s")
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def events(self, session: str) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events.get(session, []))

    def page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable", session=session)
        return page

    def close(self) -> None:
        if hasattr(self, "_stack"):
            self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Page:
    """One tab."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def goto(self, url: str, timeout: float = 30) -> None:
        """Navigate and wait for the load event."""
        seen = len(self.events("Page.loadEventFired"))
        result = self.browser.send("Page.navigate", {"url": url}, self.session)
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while len(self.events("Page.loadEventFired")) <= seen:
            if time.monotonic() > deadline:
                raise CdpError(f"{url} did not load within {timeout} s")
            time.sleep(0.02)

    def eval(self, expression: str, timeout: float = 60) -> Any:
        """The expression's value (a promise is awaited); CdpError when it throws."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                        "returnByValue": True}, self.session, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(f"{expression[:80]}: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> None:
        """Until the expression is truthy (through navigations: a destroyed context is tried again)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.eval(expression, timeout=5):
                    return
            except CdpError:
                pass
            if time.monotonic() > deadline:
                raise CdpError(f"{expression} not true within {timeout} s")
            time.sleep(0.05)

    def events(self, method: str | None = None) -> list[dict[str, Any]]:
        """DevTools events of this tab (all, or one method's), oldest first."""
        return [e for e in self.browser.events(self.session) if method is None or e["method"] == method]

    def requests_to(self, base: str) -> list[dict[str, Any]]:
        """Requests the page sent to URLs under `base`, each with its answer's status (None: no answer)
        and its failure (None: none): from Network.requestWillBeSent/responseReceived/loadingFailed."""
        events = self.events()
        status = {e["params"]["requestId"]: e["params"]["response"]["status"]
                  for e in events if e["method"] == "Network.responseReceived"}
        failed = {e["params"]["requestId"]: e["params"] for e in events if e["method"] == "Network.loadingFailed"}
        out = []
        for e in events:
            if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"].startswith(base):
                rid = e["params"]["requestId"]
                out.append({"method": e["params"]["request"]["method"], "url": e["params"]["request"]["url"],
                            "type": e["params"].get("type"), "headers": e["params"]["request"]["headers"],
                            "status": status.get(rid), "failed": failed.get(rid)})
        return out

    def console_errors(self) -> list[str]:
        """Errors the page logged to its console, or the browser logged for it (CORS refusals, failed loads)."""
        out = []
        for e in self.events():
            if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error":
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"]["args"]))
            elif e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error":
                out.append(e["params"]["entry"]["text"])
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(str(e["params"]["exceptionDetails"]))
        return out
