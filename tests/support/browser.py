"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for tests of what a browser does.

One browser process per ``Browser``, talked to over ``--remote-debugging-pipe`` (NUL-separated JSON on file
descriptors 3 and 4: no websocket library, no port). Each ``navigate`` loads one URL in the same tab and
returns what a person would see: the document's HTTP status and headers, its text, a screenshot, and the
cookies the browser now holds for the URL. The profile (``user_data_dir``) persists cookies between
navigations exactly as a user's browser does.

Negotiate: Chromium loads MIT's GSSAPI library (``libgssapi_krb5.so.2``, the first of its default list),
which reads the ticket cache of ``KRB5CCNAME`` and the realm of ``KRB5_CONFIG`` from the browser's
environment; see ``seed_local_state`` for what a fresh profile needs first. It answers a
``WWW-Authenticate: Negotiate`` challenge only for hosts in ``--auth-server-allowlist``, with a token for
the SPN ``HTTP/<host>`` (no port). Without a ticket it has no token and shows the 401 response's body:
Chromium opens no credentials dialog for Negotiate, headless or not.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.procs import stop

INSTALL_HINT = "apt-get install -y chromium (make test installs it through .ci/system-deps)"


def seed_local_state(profile: Path) -> None:
    """The browser-wide preferences (``Local State``) of a Chromium that has met Negotiate before.

    On Linux Chromium loads the GSSAPI library only in an unsandboxed network service, and only once the
    preference ``net.received_http_auth_negotiate_headers`` is set: the first ``WWW-Authenticate: Negotiate``
    a fresh profile ever sees sets it and restarts the network service, and is itself answered without a
    token (``ERR_UNSUPPORTED_AUTH_SCHEME``). A user's browser on an intranet passed that point long ago; a
    test's fresh profile starts there too. ``auth.disable_negotiate_cname_lookup``: the SPN from the URL's
    host (the ``DisableAuthNegotiateCnameLookup`` policy, which has no command-line switch any more).
    """
    path = profile / "Local State"
    state = json.loads(path.read_text()) if path.exists() else {}
    state.setdefault("net", {})["received_http_auth_negotiate_headers"] = True
    state.setdefault("auth", {})["disable_negotiate_cname_lookup"] = True
    path.write_text(json.dumps(state))


def chromium_path() -> str | None:
    """Debian's ``chromium`` (or a Chrome on PATH); None when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class BrowserError(RuntimeError):
    """The browser did not start, answer, or finish a navigation in time."""


@dataclass
class Navigation:
    """What one navigation showed: the document's response and the page as rendered."""

    url: str
    status: int                      # the document's final HTTP status (after any Negotiate round)
    headers: dict[str, str]          # the document's response headers, names lower-cased
    text: str                        # document.body.innerText
    title: str
    cookies: list[dict[str, Any]]    # the browser's cookies for ``url`` after the navigation
    screenshot: Path | None
    requests: list[dict[str, str]] = field(default_factory=list)   # headers the browser sent for the document


class Browser:
    """One headless Chromium with its own profile; ``close()`` (or the context manager) ends it."""

    def __init__(self, profile: Path, *, allow: str, env: Mapping[str, str] | None = None,
                 window: tuple[int, int] = (900, 600), timeout: float = 30.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        exe = chromium_path()
        if exe is None:
            raise BrowserError(f"chromium is not installed: {INSTALL_HINT}")
        self.timeout = timeout
        profile.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        seed_local_state(profile)
        argv = [exe, "--headless=new", "--no-sandbox",   # as root Chromium refuses to start with its sandbox
                "--remote-debugging-pipe", f"--user-data-dir={profile}",
                f"--auth-server-allowlist={allow}",
                f"--window-size={window[0]},{window[1]}", "--hide-scrollbars",
                "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-features=Translate,MediaRouter,OptimizationHints",
                *extra_args, "about:blank"]
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.log = profile / "chromium.log"
        self._log = open(self.log, "ab")

        def fds() -> None:   # the child's fd 3 reads commands, fd 4 writes answers (Chromium's convention)
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)   # above 4 first: a pipe end may be 3 or 4
            os.dup2(r, 3)
            os.dup2(w, 4)
            os.close(r)
            os.close(w)

        self.proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, preexec_fn=fds, close_fds=False,
                                     start_new_session=True)   # close_fds would close 3 and 4 after fds()
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._buf = b""
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                self.call(f"{domain}.enable", session=self.session)
        except BaseException:
            self.close()
            raise

    # -- the protocol ----------------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise BrowserError(f"no answer from chromium within {self.timeout} s: {self._tail()}")
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {self._tail()}")
            ready, _, _ = select.select([self._from_browser], [], [], 0.2)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"chromium closed its DevTools pipe: {self._tail()}")
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)   # type: ignore[no-any-return]

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are kept for ``events``."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})   # type: ignore[no-any-return]
            self._events.append(answer)

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The first kept or arriving event ``method``; the events before it stay kept."""
        deadline = time.monotonic() + (timeout or self.timeout)
        i = 0
        while True:
            for j in range(i, len(self._events)):
                if self._events[j].get("method") == method:
                    return self._events[j]
            i = len(self._events)
            self._events.append(self._read_message(deadline))

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    # -- what a test does --------------------------------------------------------------------------------

    def navigate(self, url: str, screenshot: Path | None = None) -> Navigation:
        """Load ``url`` in the tab, wait for its load event, and read the page."""
        self._events.clear()
        nav = self.call("Page.navigate", session=self.session, url=url)
        if nav.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {nav['errorText']}")
        self.wait_event("Page.loadEventFired")
        frame = nav["frameId"]
        docs = [e["params"] for e in self._events if e.get("method") == "Network.responseReceived"
                and e["params"].get("type") == "Document" and e["params"].get("frameId") == frame]
        if not docs:
            raise BrowserError(f"no document response for {url}")
        response = docs[-1]["response"]
        request_ids = {d["requestId"] for d in docs}
        sent = [{k.lower(): v for k, v in e["params"]["headers"].items()} for e in self._events
                if e.get("method") == "Network.requestWillBeSentExtraInfo"
                and e["params"].get("requestId") in request_ids]
        text = self.evaluate("document.body ? document.body.innerText : ''")
        title = self.evaluate("document.title")
        shot = None
        if screenshot is not None:
            data = self.call("Page.captureScreenshot", session=self.session, format="png")["data"]
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(data))
            shot = screenshot
        cookies = self.call("Network.getCookies", session=self.session, urls=[url])["cookies"]
        return Navigation(url=url, status=int(response["status"]),
                          headers={k.lower(): v for k, v in response["headers"].items()}, text=text, title=title,
                          cookies=cookies, screenshot=shot, requests=sent)

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True)
        return answer["result"].get("value")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.proc)
        try:   # the renderer and helper processes of this browser: its own process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
