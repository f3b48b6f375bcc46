"""Headless Chromium driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`: commands on
the browser's fd 3, answers on its fd 4, each a JSON message ending in a NUL byte), so no driver binary and no
websocket package are needed: tests/test_explore_browser.py and benchmarks/explore_page.py use it."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage",
         "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """Debian's chromium (or a chromium-browser) on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page, at a fixed viewport; `call` sends a DevTools command to the page."""

    def __init__(self, executable: str, profile: Path, width: int = 1500, height: int = 1500, timeout: float = 30):
        self.timeout = timeout
        commands_read, self._commands = os.pipe()  # we write, the browser reads on its fd 3
        self._answers, answers_write = os.pipe()  # the browser writes on its fd 4, we read

        def as_fd3_fd4():  # in the child, before exec: the pipe ends become fds 3 and 4 (inheritable)
            ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write)]  # out of the way
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=as_fd3_fd4, close_fds=False)
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed its pipe (exit {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send one command and wait for its answer (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        """Navigate, and return once the new document has replaced the old one (so that a wait that follows
        cannot be answered by the page being left)."""
        self.evaluate("window.__left = true")
        self.call("Page.navigate", {"url": url})
        self.wait_for("!window.__left && document.readyState !== 'loading'", what=f"{url} to load")

    def wait_for(self, expression: str, timeout: float = 20.0, what: str = ""):
        """Poll a JavaScript expression until it is truthy; its value (an expression that throws, as one may
        while a page is still loading, counts as false)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                error = self.evaluate("(document.getElementById('error') || {}).textContent")
                raise BrowserError(f"timed out waiting for {what or expression} (page error line: {error!r})")
            time.sleep(0.05)

    def rect(self, selector: str) -> dict:
        """An element's box in viewport CSS pixels (x, y, width, height), after scrolling it into view."""
        box = self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: "center", inline: "center"}});
            const r = e.getBoundingClientRect(); return {{x: r.x, y: r.y, width: r.width, height: r.height,
            sx: window.scrollX, sy: window.scrollY}}; }})()""")
        if box is None:
            raise BrowserError(f"no element {selector} on the page")
        return box

    def screenshot(self, selector: str | None = None) -> np.ndarray:
        """The page (or one element) as the screen shows it: uint8 RGB (H, W, 3)."""
        from PIL import Image

        params = {"format": "png"}
        if selector:
            box = self.rect(selector)
            params["clip"] = {"x": box["x"] + box["sx"], "y": box["y"] + box["sy"], "width": box["width"],
                              "height": box["height"], "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def save_screenshot(self, path: Path, selector: str | None = None) -> None:
        from PIL import Image

        Image.fromarray(self.screenshot(selector)).save(path)

    def mouse(self, kind: str, x: float, y: float) -> None:
        """One mouse event at viewport (x, y): moved, pressed or released (the left button)."""
        params = {"type": f"mouse{kind.capitalize()}", "x": x, "y": y, "button": "left" if kind != "moved" else "none"}
        if kind != "moved":
            params["clickCount"] = 1
        self.call("Input.dispatchMouseEvent", params)

    def click(self, x: float, y: float) -> None:
        self.mouse("moved", x, y)
        self.mouse("pressed", x, y)
        self.mouse("released", x, y)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
        self.mouse("moved", *start)
        self.mouse("pressed", *start)
        for k in range(1, steps + 1):
            t = k / steps
            self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "button": "left", "buttons": 1,
                                                   "x": start[0] + t * (end[0] - start[0]),
                                                   "y": start[1] + t * (end[1] - start[1])})
        self.mouse("released", *end)

    def set_file(self, selector: str, path: Path) -> None:
        """Choose a file in an <input type=file>, as a user would (the page gets its change event)."""
        root = self.call("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise BrowserError(f"no element {selector} on the page")
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(path)]})

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
