"""The dashboard in a real browser: ``durable serve`` in a child process, driven by headless Chromium.

The server runs a small workflow module written into a temporary directory:
the onboarding example (``examples/onboarding_service.py``) with its steps
made short, and a workflow whose step returns HTML meant to run as script.
Every page collects its page errors and console errors; a test fails on any
of them, except the ``Failed to load resource`` (4xx) lines that a test's
deliberate bad request causes and declares (``watch.allow(422)``).

Playwright's own browser download is not used: Chromium is Debian's
``/usr/bin/chromium`` (or ``$DURABLE_TEST_CHROMIUM``). Without it, or without
the ``playwright`` package, the module is skipped (``.ci/run`` installs both,
and fails on any skip). With ``DURABLE_SCREENSHOTS=1`` the tests also write
the documentation's screenshots, ``docs/images/dashboard-instance.png`` and
``docs/images/dashboard-list.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

CHROMIUM = os.environ.get("DURABLE_TEST_CHROMIUM") or "/usr/bin/chromium"

try:
    from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Playwright, expect, sync_playwright
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"the browser tests need the playwright package (pip install playwright): {exc}",
                allow_module_level=True)
if not os.access(CHROMIUM, os.X_OK):  # pragma: no cover - depends on the environment
    pytest.skip(f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium, or set "
                "$DURABLE_TEST_CHROMIUM to a Chromium binary)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHOTS = ROOT / "docs" / "images"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
TOKEN = "browser-test-token-0123456789"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)

FLOWS = textwrap.dedent(f'''\
    """The browser tests' workflows: the onboarding example with short steps, and hostile output."""

    import sys

    sys.path.insert(0, {str(EXAMPLES)!r})

    import onboarding_service
    from onboarding_service import onboard  # noqa: F401  (user-onboarding)

    from durable import step, workflow

    onboarding_service.WORK = 0.15
    onboarding_service.VERIFY_TIMEOUT = 30.0  # longer than the tests: they send the signal

    HOSTILE = {HOSTILE!r}


    @step(name="render-note")
    async def render_note() -> str:
        return HOSTILE


    @workflow(name="hostile-output")
    async def hostile_output() -> str:
        return await render_note()
''')


# ------------------------------------------------------------------------------------ the server


class Server:
    """``durable serve`` in a child process, on a free port, over its own store."""

    def __init__(self, directory: Path, flows: Path, *extra: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.log_path = directory / "serve.log"
        ready = directory / "ready"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "durable", "serve", str(flows), "--store", str(directory / "store.lmdb"),
             "--port", "0", "--poll", "0.2", "--ready-file", str(ready), *extra],
            cwd=directory, stdout=self._log, stderr=subprocess.STDOUT, env=_child_env())
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None:
                self._log.close()
                pytest.fail(f"durable serve exited with {self.proc.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                pytest.fail(f"durable serve did not write its ready file within 30 s:\n{self.log()}")
            time.sleep(0.05)
        self.url = ready.read_text().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", self.url), self.url
        headers = {"Authorization": f"Bearer {extra[extra.index('--token') + 1]}"} if "--token" in extra else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, workflow: str, input: Any = None, **options: Any) -> str:
        """Starts an instance through the API (a JSON POST, as any client sends it); its id."""
        r = self.http.post(f"/api/workflows/{workflow}/instances", json={"input": input, **options},
                           headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def ids(self) -> set[str]:
        r = self.http.get("/api/instances", params={"limit": 500})
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["instances"]}

    def instance(self, instance_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/instances/{instance_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def stop(self) -> float:
        """SIGINT, then the seconds it took to exit; fails unless it exits 0 within a few seconds, cleanly."""
        self.http.close()
        if self.proc.poll() is not None:
            self._log.close()
            pytest.fail(f"durable serve had already exited with {self.proc.returncode}:\n{self.log()}")
        began = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            pytest.fail(f"durable serve did not exit within 8 s of SIGINT:\n{self.log()}")
        took = time.monotonic() - began
        self._log.close()
        log = self.log()
        assert code == 0, f"durable serve exited with {code}:\n{log}"
        assert "Traceback" not in log, f"durable serve logged an exception:\n{log}"
        assert "stopping on SIGINT" in log and log.rstrip().endswith("stopped"), log
        return took


def _child_env() -> dict[str, str]:
    """The environment, with the code under test importable from the child (as pytest imports it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flows") / "browser_flows.py"
    path.write_text(FLOWS)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, flows: Path) -> Iterator[Server]:
    """The module's server (no token), stopped with SIGINT once its tests are done."""
    s = Server(tmp_path_factory.mktemp("serve"), flows)
    try:
        yield s
    finally:
        s.stop()


# ----------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
    try:
        yield b
    finally:
        b.close()


class Watch:
    """The page errors and console errors of a test's pages."""

    def __init__(self) -> None:
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.allowed: set[int] = set()
        self.allowed_texts: list[str] = []

    def attach(self, page: Page) -> Page:
        page.on("pageerror", lambda exc: self.page_errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: self._console(page, msg))
        return page

    def _console(self, page: Page, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.console_errors.append(f"{page.url}: {msg.text}")

    def allow(self, *statuses: int) -> None:
        """A 'Failed to load resource' console error with one of these statuses is expected (deliberate)."""
        self.allowed.update(statuses)

    def allow_text(self, text: str) -> None:
        """A console error containing ``text`` is expected."""
        self.allowed_texts.append(text)

    def unexpected_console_errors(self) -> list[str]:
        out = []
        for text in self.console_errors:
            if any(allowed in text for allowed in self.allowed_texts):
                continue
            m = re.search(r"Failed to load resource: the server responded with a status of (\d{3})", text)
            if m and 400 <= int(m.group(1)) < 500 and int(m.group(1)) in self.allowed:
                continue
            out.append(text)
        return out


# Records, from the first parse on, every value #status and the graph's nodes take: the tests check
# the page moved through its states by itself (a reload would start a new window, and a new log).
TRACKER = """
window.__history = [];
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target;
    if (r.type !== 'attributes' || !(el instanceof Element)) continue;
    if (el.id === 'status') window.__history.push('status=' + el.getAttribute('data-status'));
    else if (el.matches('.node[data-state]')) {
      window.__history.push(el.getAttribute('data-state') + '=' + el.getAttribute('data-status'));
    }
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-status'] });
"""


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def new_page(browser: Browser, watch: Watch) -> Iterator[Callable[[], Page]]:
    """Opens pages (each in a fresh context: no cookies) that ``watch`` watches; checks them at the end."""
    contexts = []

    def make() -> Page:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(TRACKER)
        contexts.append(context)
        return watch.attach(context.new_page())

    yield make
    for context in contexts:
        context.close()
    assert not watch.page_errors, "errors in the page:\n" + "\n".join(watch.page_errors)
    unexpected = watch.unexpected_console_errors()
    assert not unexpected, "console errors:\n" + "\n".join(unexpected)


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    return new_page()


def mark_document(page: Page) -> None:
    """Marks the loaded document: :func:`same_document` then tells whether it is still the one shown."""
    page.evaluate("window.__marker = 'first load'")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__marker === 'first load'"))


def screenshot(page: Page, name: str) -> None:
    """The documentation's screenshot ``docs/images/<name>``, only with DURABLE_SCREENSHOTS=1."""
    if os.environ.get("DURABLE_SCREENSHOTS") != "1":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(SHOTS / name), full_page=False)


def node(page: Page, state: str, status: str | None = None) -> Locator:
    selector = f'#graph svg .node[data-state="{state}"]'
    return page.locator(selector + (f'[data-status="{status}"]' if status else ""))


# ------------------------------------------------------------------------------------- the tests


def test_start_form_shows_field_errors_then_opens_the_new_instance(server: Server, page: Page, watch: Watch) -> None:
    watch.allow(422)  # the malformed e-mail's answer
    before = server.ids()
    page.goto(server.url + "/")
    mark_document(page)
    page.click('a[data-nav="workflows"]')
    form = page.locator("form#start-form-user-onboarding")
    expect(form).to_be_visible()
    form.locator("[name=email]").fill("not an e-mail")
    form.locator("[name=name]").fill("Ada Lovelace")
    form.locator("[name=plan]").select_option(label="pro")
    form.locator("button[type=submit]").click()

    email_error = form.locator('.field-error[data-field="email"]')
    expect(email_error).to_contain_text("pattern")
    expect(form.locator('.field[data-field="email"]')).to_have_class(re.compile(r"\binvalid\b"))
    expect(form.locator("[name=email]")).to_have_attribute("aria-invalid", "true")
    expect(form.locator('.field-error[data-field="name"]')).to_have_text("")
    assert page.url.endswith("#/workflows")
    assert server.ids() == before, "a start the server refused created an instance"

    form.locator("[name=email]").fill("ada@example.com")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"#/instances/[^/?]+$"))
    new_id = unquote(page.url.split("#/instances/", 1)[1])
    assert server.ids() - before == {new_id}
    expect(page.locator("h1")).to_have_text(new_id)
    expect(page.locator("#status")).to_have_attribute("data-status", re.compile(r"^(pending|running|waiting)$"))
    assert server.instance(new_id)["input"] == {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"}
    expect(page.locator("#input")).to_contain_text('"email": "ada@example.com"')
    assert same_document(page), "the start form reloaded the page instead of routing to the instance"


def test_instance_page_follows_the_run_and_sends_the_signal(server: Server, page: Page) -> None:
    # The start waits 1 s in its queue: the page is open before the first step runs.
    instance_id = server.start("user-onboarding", {"email": "grace@example.com", "name": "Grace", "plan": "pro"},
                               delay=1.0)
    page.goto(f"{server.url}/#/instances/{instance_id}")
    mark_document(page)
    expect(page.locator("h1")).to_have_text(instance_id)
    expect(node(page, "parallel")).to_have_count(1)
    # The parallel box's branch names (source text, long) fit their branches instead of running over each other.
    overflow = page.evaluate("""() => [...document.querySelectorAll('#graph .branch-title')].flatMap((t) => {
        const b = t.previousElementSibling.getBBox(), r = t.getBBox();
        return r.x >= b.x && r.x + r.width <= b.x + b.width ? [] : [t.textContent];
    })""")
    assert overflow == [], overflow

    expect(node(page, "create-account", "completed")).to_have_count(1)
    expect(node(page, "send-welcome-email", "completed")).to_have_count(1)
    expect(node(page, "signal:email-verified")).to_have_attribute("data-status", re.compile(r"^(running|waiting)$"))
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    # Waiting for the signal: nothing past it has run.
    for state in ("setup-workspace", "setup-billing"):
        expect(node(page, state)).to_have_attribute("data-status", "pending")
    expect(page.locator("#status")).not_to_have_attribute("data-status", "completed")
    assert server.instance(instance_id)["status"] in ("running", "waiting")

    page.fill("#signal-name", "email-verified")
    page.fill("#signal-payload", "true")
    page.click("#signal-send")
    expect(page.locator("#signal-result")).to_have_text(re.compile(r"^sent\b"))

    expect(page.locator("#status")).to_have_attribute("data-status", "completed")
    expect(page.locator("#status")).to_have_text("completed")
    for state in ("signal:email-verified", "parallel", "setup-workspace", "setup-billing"):
        expect(node(page, state, "completed")).to_have_count(1)
    expect(page.locator('#events .event[data-name="workflow.completed"]')).to_have_count(1)
    expect(page.locator('#events .event[data-name="workflow.step.completed"]')).to_have_count(6)
    for key in ("create-account#0", "send-welcome-email#0", "signal:email-verified#0",
                "parallel#0/0/setup-workspace#0", "parallel#0/1/setup-billing#0"):
        expect(page.locator(f'#steps tr[data-key="{key}"]')).to_have_attribute("data-status", "completed")
    expect(page.locator("#timeline .tl-bar")).to_have_count(6)
    expect(page.locator("#output")).to_contain_text('"verified": true')
    expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    expect(page.locator("#cancel")).to_be_hidden()
    assert server.instance(instance_id)["output"]["verified"] is True

    # It all came from the event stream: the document is the first one, and it saw the states change.
    assert same_document(page), "the instance page reloaded"
    history = page.evaluate("window.__history")
    assert history.index("status=completed") > history.index("status=running"), history
    assert "setup-workspace=completed" in history and "setup-billing=completed" in history, history
    page.wait_for_timeout(300)  # the last refresh's layout settles
    screenshot(page, "dashboard-instance.png")


def test_hostile_output_is_shown_as_text(server: Server, page: Page) -> None:
    instance_id = server.start("hostile-output")
    page.goto(f"{server.url}/#/instances/{instance_id}")
    expect(page.locator("#status")).to_have_attribute("data-status", "completed")
    expect(page.locator('#steps tr[data-key="render-note#0"]')).to_have_attribute("data-status", "completed")

    # The output pane shows the string as JSON: the markup, literally.
    expect(page.locator("#output")).to_have_text(json.dumps(HOSTILE))
    expect(page.locator("#output")).to_contain_text("<script>window.__pwned = 1</script><img src=x onerror=")
    # The steps table shows it cut short; expanded, whole.
    toggle = page.locator('#steps tr[data-key="render-note#0"] .out-toggle')
    expect(toggle).to_contain_text('"<script>window.__pwned = 1</script>')
    toggle.click()
    expect(page.locator('#steps tr[data-key="render-note#0"] pre.out-full')).to_have_text(json.dumps(HOSTILE))
    expect(page.locator('#events .event[data-name="workflow.completed"]')).to_contain_text("<img src=x onerror=")

    assert page.evaluate("typeof window.__pwned") == "undefined"
    # No element came from the data: the one script is the app's, and the page has no image at all.
    scripts = page.evaluate("[...document.scripts].map((s) => s.getAttribute('src'))")
    assert scripts == ["static/app.js"], scripts
    assert page.locator("img").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_token_guidance_then_cookie(tmp_path: Path, flows: Path, new_page: Callable[[], Page], watch: Watch) -> None:
    watch.allow(401)  # the page opened without the token, and the API call after the cookie is dropped
    guarded = Server(tmp_path / "guarded", flows, "--token", TOKEN)
    page = new_page()
    try:
        instance_id = guarded.start("hostile-output")

        # Without the token: the 401's guidance, and no dashboard.
        response = page.goto(guarded.url + "/")
        assert response is not None and response.status == 401
        expect(page.locator("body")).to_contain_text("/?token=")
        assert page.locator("#main").count() == 0
        assert page.context.cookies() == []

        # With it: a cookie (HttpOnly, SameSite=Strict), the token out of the address bar, and a working dashboard.
        page.goto(f"{guarded.url}/?token={TOKEN}")
        assert page.url == guarded.url + "/"
        cookies = page.context.cookies()
        assert [(c["name"], c["value"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("durable_token", TOKEN, True, "Strict")]
        row = page.locator(f'#instances tr[data-id="{instance_id}"]')
        expect(row).to_have_attribute("data-status", "completed")
        expect(page.locator("#live")).to_have_attribute("data-state", "open")
        expect(page.locator("#banner")).to_be_hidden()
        page.click('a[data-nav="workflows"]')
        expect(page.locator("form#start-form-user-onboarding")).to_be_visible()

        # The cookie gone, the next API call's 401 shows the banner's guidance.
        page.context.clear_cookies()
        page.click('a[data-nav="instances"]')
        expect(page.locator("#banner")).to_be_visible()
        expect(page.locator("#banner")).to_contain_text("?token=YOUR_TOKEN")
    finally:
        page.context.close()  # its event stream too (see test_shutdown_with_an_open_stream_is_prompt)
        guarded.stop()


def test_shutdown_with_an_open_stream_is_prompt(tmp_path: Path, flows: Path, page: Page, watch: Watch) -> None:
    # Streams.close() ends every stream first on shutdown; the Gate shields each response's last message, so
    # the connections of a finished stream and of the page's files close at once (see _security._last_shielded).
    watch.allow_text("net::ERR_CONNECTION_REFUSED")  # the page's reconnection, once the server is gone
    s = Server(tmp_path / "stopping", flows)
    try:
        page.goto(s.url + "/")
        expect(page.locator("#live")).to_have_attribute("data-state", "open")
    finally:
        took = s.stop()
    expect(page.locator("#live")).to_have_attribute("data-state", "connecting", timeout=1000)
    page.context.close()  # before its next reconnection
    assert took < 2.0, f"durable serve took {took:.1f} s to stop with a stream open (its graceful timeout is 3 s)"


def test_instance_list_updates_live(server: Server, page: Page) -> None:
    page.goto(server.url + "/")
    mark_document(page)
    expect(page.locator("#live")).to_have_attribute("data-state", "open")
    expect(page.locator("#instances tbody tr").first).to_be_visible()
    known = server.ids()
    for existing in known:
        expect(page.locator(f'#instances tr[data-id="{existing}"]')).to_have_count(1)

    instance_id = server.start("user-onboarding", {"email": "linus@example.com", "name": "Linus"})
    row = page.locator(f'#instances tr[data-id="{instance_id}"]')
    expect(row).to_have_count(1)
    expect(page.locator("#instances tbody tr").first).to_have_attribute("data-id", instance_id)  # newest first
    expect(row.locator("td.step-cell")).to_have_text(re.compile(r"^(send-welcome-email|signal:email-verified)$"))
    expect(row).not_to_have_attribute("data-status", "completed")

    deadline = time.monotonic() + 10
    while server.instance(instance_id)["current_step"] != "signal:email-verified":
        assert time.monotonic() < deadline, server.instance(instance_id)
        time.sleep(0.05)
    r = server.http.post(f"/api/instances/{instance_id}/signal", json={"name": "email-verified", "payload": True})
    assert r.status_code == 202, r.text
    expect(row).to_have_attribute("data-status", "completed")
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row.locator(".progress-text")).to_have_text("100%")
    assert same_document(page), "the list page reloaded"
    page.wait_for_timeout(300)
    screenshot(page, "dashboard-list.png")
