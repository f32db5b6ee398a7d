"""Render a page in headless Chromium and check it: every figure present and non-blank, no page errors.

Chromium is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``: commands
on fd 3, replies on fd 4, each a JSON message ended by NUL), so no port, no websocket and no extra
package is needed. For each page it collects

- **errors**: uncaught exceptions (``Runtime.exceptionThrown``), ``console.error`` / failed
  ``console.assert`` (``Runtime.consoleAPICalled``) and browser log errors (``Log.entryAdded``: a
  resource that failed to load, a Content-Security-Policy refusal);
- **requests**: every URL the page asked for other than itself and ``data:`` URIs — a self-contained
  report asks for none;
- **figures**: every ``<img>`` and every outermost inline ``<svg>``: loaded (decoded, natural size > 0),
  laid out (a box of non-zero size), and non-blank: drawn onto a white canvas (an SVG is serialized to a
  ``data:`` image first; data: images never taint the canvas), the standard deviation of its luminance
  (0–255) must exceed ``BLANK_STD``. A plot with a few percent of dark pixels has a deviation of tens.

    with Chromium(user_data_dir=tmp) as browser:
        result = browser.check(path)     # PageCheck; result.problems == [] when all is well

Chromium starts with ``--headless --no-sandbox --disable-gpu --no-first-run
--disable-background-networking --disable-component-update --disable-sync --disable-quic`` and a fresh
``--user-data-dir``; in a new session (process group) that is always killed on exit.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medinterp.errors import MedinterpError

CHROMIUM = os.environ.get("MEDINTERP_CHROMIUM", "/usr/bin/chromium")   # another browser build: set the variable
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--remote-debugging-pipe")
BLANK_STD = 1.0   # luminance standard deviation at or below which a figure counts as blank

# Runs in the page; resolves to one record per figure (see the module docstring).
_CHECK_JS = r"""
(async () => {
  function deviation(img, w, h) {
    const c = document.createElement("canvas");
    const s = Math.min(1, 480 / Math.max(w, h, 1));              // large figures are checked scaled down
    c.width = Math.max(1, Math.round(w * s)); c.height = Math.max(1, Math.round(h * s));
    const g = c.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);   // transparency counts as white
    g.drawImage(img, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let n = 0, sum = 0, sq = 0;
    for (let i = 0; i < d.length; i += 4) {
      const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += y; sq += y * y; n++;
    }
    const m = sum / n;
    return Math.sqrt(Math.max(0, sq / n - m * m));
  }
  const out = [];
  for (const img of Array.from(document.images)) {
    const box = img.getBoundingClientRect();
    const r = {kind: "img", name: img.getAttribute("alt") || img.currentSrc.slice(0, 60), loaded: false,
               width: 0, height: 0, shown: box.width > 0 && box.height > 0, std: null, error: null};
    try { await img.decode(); } catch (e) { r.error = String(e); }
    r.width = img.naturalWidth; r.height = img.naturalHeight; r.loaded = img.complete && r.width > 0;
    if (r.loaded) { try { r.std = deviation(img, r.width, r.height); } catch (e) { r.error = String(e); } }
    out.push(r);
  }
  for (const svg of Array.from(document.querySelectorAll("svg"))) {
    if (svg.parentElement && svg.parentElement.closest("svg")) continue;   // nested: part of its parent
    const box = svg.getBoundingClientRect();
    const r = {kind: "svg", name: svg.getAttribute("aria-label") || "", loaded: false, width: box.width,
               height: box.height, shown: box.width > 0 && box.height > 0, std: null, error: null};
    if (r.shown) {
      const clone = svg.cloneNode(true);
      clone.setAttribute("xmlns", "http://www.w3.org/2000/svg");
      clone.setAttribute("width", box.width); clone.setAttribute("height", box.height);
      const img = new Image();
      img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(new XMLSerializer().serializeToString(clone));
      try { await img.decode(); r.loaded = true; r.std = deviation(img, box.width, box.height); }
      catch (e) { r.error = String(e); }
    }
    out.push(r);
  }
  return out;
})()
"""


@dataclass(frozen=True)
class FigureCheck:
    """One figure as rendered."""

    kind: str          # "img" or "svg"
    name: str          # alt text / aria-label
    loaded: bool
    shown: bool
    width: float
    height: float
    std: float | None  # luminance standard deviation on a white canvas
    error: str | None

    @property
    def problem(self) -> str | None:
        if not self.loaded:
            return f"{self.kind} {self.name!r} did not load{f' ({self.error})' if self.error else ''}"
        if not self.shown:
            return f"{self.kind} {self.name!r} has no size on the page"
        if self.std is None or self.std <= BLANK_STD:
            std = "unknown" if self.std is None else f"{self.std:.1f}"
            return f"{self.kind} {self.name!r} is blank (luminance std {std})"
        return None


@dataclass(frozen=True)
class PageCheck:
    """What Chromium saw on one page."""

    url: str
    figures: list[FigureCheck] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Everything wrong with the page, one line each (empty: all figures fine, no errors, no requests)."""
        return ([f.problem for f in self.figures if f.problem] + [f"page error: {e}" for e in self.errors]
                + [f"request outside the page: {u}" for u in self.requests])


class Chromium:
    """A headless Chromium for checking pages; a context manager that always kills the browser."""

    def __init__(self, executable: str | os.PathLike = CHROMIUM, user_data_dir: str | os.PathLike | None = None,
                 timeout: float = 20.0):
        self.executable = str(executable)
        self.user_data_dir = user_data_dir
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._own_dir: str | None = None     # a profile folder we made (removed on exit)
        self._fds: list[int] = []            # our ends of the two pipes
        self._log = None
        self._log_path: Path | None = None
        self._selector: selectors.BaseSelector | None = None
        self._next_id = 0
        self._buf = b""

    @property
    def pid(self) -> int | None:
        """The browser's process id (also its process group's), None when it is not running."""
        return self._proc.pid if self._proc else None

    # -- the browser process --------------------------------------------------------------------------
    def __enter__(self) -> Chromium:
        if shutil.which(self.executable) is None:
            raise MedinterpError(f"chromium not found at '{self.executable}'; install it with: apt-get install -y chromium")
        try:
            self._start()
            self._call("Browser.getVersion")  # the pipe answers: the browser is up
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        if self.user_data_dir is None:
            self._own_dir = tempfile.mkdtemp(prefix="medinterp-chromium-")
        profile = Path(self.user_data_dir or self._own_dir)
        profile.mkdir(parents=True, exist_ok=True)
        to_browser_r, to_browser_w = os.pipe()       # we write commands, Chromium reads them on fd 3
        from_browser_r, from_browser_w = os.pipe()   # Chromium writes replies on fd 4, we read them
        self._fds = [to_browser_w, from_browser_r]

        def child_fds() -> None:  # in the child: move the pipe ends to fds 3 and 4 (via fds ≥ 10: no clobbering)
            a, b = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log_path = profile / "chromium.log"
        self._log = open(self._log_path, "wb")
        try:
            self._proc = subprocess.Popen([self.executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                          stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                          pass_fds=(3, 4), preexec_fn=child_fds, start_new_session=True)
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._selector = selectors.DefaultSelector()
        self._selector.register(from_browser_r, selectors.EVENT_READ)

    def close(self) -> None:
        """Stop the browser and everything it started (its process group), close the pipes; idempotent."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in self._fds:
            try:
                os.close(fd)   # the browser sees its command pipe close
            except OSError:
                pass
        self._fds = []
        if self._proc is not None:
            self._kill(signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self._kill(signal.SIGKILL)  # whatever of the group is left (renderers, zygotes)
            self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def _kill(self, sig: int) -> None:
        try:
            os.killpg(self._proc.pid, sig)  # the group of the session we started: the browser and its children
        except ProcessLookupError:
            pass

    # -- the protocol ---------------------------------------------------------------------------------
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = memoryview(json.dumps(msg).encode() + b"\0")
        while data:  # a pipe may take a long message in parts
            data = data[os.write(self._fds[0], data):]
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                raise TimeoutError(f"chromium did not answer within {self.timeout:.0f} s{self._log_tail()}")
            chunk = os.read(self._fds[1], 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium exited{self._log_tail()}")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def _log_tail(self) -> str:
        try:
            tail = self._log_path.read_text(errors="replace")[-1500:].strip() if self._log_path else ""
        except OSError:
            tail = ""
        return f"; its log ends:\n{tail}" if tail else ""

    def _call(self, method: str, params: dict | None = None, session: str | None = None,
              events: list | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply; events arriving meanwhile go to ``events``."""
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._receive(deadline)
            if msg.get("id") == wanted:
                if "error" in msg:
                    raise RuntimeError(f"chromium: {method} failed: {msg['error']}")
                return msg.get("result", {})
            if events is not None and "method" in msg:
                events.append(msg)

    # -- one page -------------------------------------------------------------------------------------
    def _open(self, url: str, width: int, events: list[dict[str, Any]]) -> tuple[str, str]:
        """A new tab ``width`` px wide showing ``url``, loaded; returns (target id, session id)."""
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = self._call("Target.attachToTarget", {"targetId": target, "flatten": True}, events=events)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self._call(f"{domain}.enable", session=sid, events=events)
        self._call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                           "mobile": False}, session=sid, events=events)
        nav = self._call("Page.navigate", {"url": url}, session=sid, events=events)
        if nav.get("errorText"):
            raise MedinterpError(f"chromium could not open {url}: {nav['errorText']}")
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == sid for e in events):
            events.append(self._receive(deadline))
        return target, sid

    def check(self, path: str | os.PathLike, width: int = 1280) -> PageCheck:
        """Open ``path`` (an HTML file) in a fresh tab, wait for it to load, and check it."""
        url = Path(path).resolve().as_uri()
        events: list[dict[str, Any]] = []
        target = None
        try:
            target, sid = self._open(url, width, events)
            n_before = len(events)  # the check's own data: images come after this point
            reply = self._call("Runtime.evaluate", {"expression": _CHECK_JS, "awaitPromise": True,
                                                    "returnByValue": True}, session=sid, events=events)
            if "exceptionDetails" in reply:
                raise RuntimeError(f"the figure check failed in the page: {reply['exceptionDetails']}")
            self._call("Runtime.evaluate", {"expression": "0"}, session=sid, events=events)  # flush late events
            figures = [FigureCheck(**r) for r in reply["result"]["value"]]
            page_events = [e for e in events if e.get("sessionId") == sid]
            return PageCheck(url, figures, _errors(page_events), _requests(page_events[:n_before], url))
        finally:
            if target:
                self._call("Target.closeTarget", {"targetId": target})

    def screenshot(self, path: str | os.PathLike, out_png: str | os.PathLike, width: int = 1280) -> Path:
        """Save a full-page PNG of ``path`` (to look at a report without a display)."""
        events: list[dict[str, Any]] = []
        target = None
        try:
            target, sid = self._open(Path(path).resolve().as_uri(), width, events)
            shot = self._call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=sid)
            Path(out_png).write_bytes(base64.b64decode(shot["data"]))
            return Path(out_png)
        finally:
            if target:
                self._call("Target.closeTarget", {"targetId": target})


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"uncaught {d.get('exception', {}).get('description') or d.get('text', '')}".strip())
        elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out.append(f"console.{p['type']}: {args}")
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}".strip())
    return out


def _requests(events: list[dict[str, Any]], url: str) -> list[str]:
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return [u for u in dict.fromkeys(urls) if u != url and not u.startswith("data:")]


def require_chromium(executable: str | os.PathLike = CHROMIUM, required: bool | None = None) -> str | None:
    """``executable``'s path when it is installed; None when it is not, unless ``required`` (default: the
    environment variable ``MEDINTERP_REQUIRE_CHROMIUM=1``, set by CI), which makes a missing browser an error."""
    found = shutil.which(str(executable))
    if required is None:
        required = os.environ.get("MEDINTERP_REQUIRE_CHROMIUM") == "1"
    if found is None and required:
        raise MedinterpError(f"chromium is required (MEDINTERP_REQUIRE_CHROMIUM=1) but '{executable}' is not "
                             "installed; install it with: apt-get install -y chromium")
    return found


def check_page(path: str | os.PathLike, executable: str | os.PathLike = CHROMIUM,
               user_data_dir: str | os.PathLike | None = None, timeout: float = 20.0) -> PageCheck:
    """Start Chromium, check one page, stop Chromium."""
    with Chromium(executable, user_data_dir, timeout) as browser:
        return browser.check(path)
