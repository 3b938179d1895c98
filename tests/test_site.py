"""The reader's experience: sources that every page shares, and the built site in a real browser.

Two kinds of test live here.

* Source checks (no build needed; part of the unit tests): every notebook starts with the shared
  set-up cell and includes the device note, every chapter has exercises, the device note tells the
  truth about the stored results, and the configuration keeps math offline and notebooks runnable.
* Browser checks (marked ``browser``; run after the site is built, ``make test`` does both): the
  site in ``_build/html`` is served from 127.0.0.1 and every page opened in headless Chromium
  through the DevTools protocol: no JavaScript errors, every image loads, every formula typeset by
  the MathJax copy inside the site, nothing requested from outside the site, no broken internal
  link, search finds the chapter on FlashAttention, screenshots saved to ``_build/screenshots``.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.md"))
CHAPTERS = [f"{i:02d}" for i in range(1, 9)]


# ----------------------------------------------------------------------------- source checks
def _code_cells(text: str) -> list[str]:
    return re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shares_the_setup_cell_and_the_device_note(path):
    reference = _code_cells((ROOT / "notebooks" / "01_self_attention.md").read_text(encoding="utf-8"))[0]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\njupytext:"), f"{path.name}: missing the Jupytext header"
    cells = _code_cells(text)
    assert cells and cells[0] == reference, f"{path.name}: the first code cell must be the shared set-up cell"
    assert "```{include} ../book/_device_note.md\n```" in text, f"{path.name}: include book/_device_note.md"
    assert re.match(r"0[1-8]", path.name), f"{path.name}: no chapter prefix 01..08, so no chapter lists it"


@pytest.mark.parametrize("nn", CHAPTERS)
def test_chapter_has_exercises_with_gated_solutions(nn):
    files = sorted((ROOT / "book").glob(f"ch{nn}_*.md")) + sorted((ROOT / "notebooks").glob(f"{nn}*.md"))
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    labels = re.findall(r"^```\{exercise\}.*\n:label: (\S+)", text, flags=re.M)
    assert labels, f"chapter {nn}: no exercise"
    for label in labels:
        assert re.search(r"^```\{solution-start\} %s\s*$" % re.escape(label), text, flags=re.M), (
            f"chapter {nn}: exercise {label} has no gated solution")


def test_device_note_matches_the_stored_results():
    note = (ROOT / "book" / "_device_note.md").read_text(encoding="utf-8")
    kinds = set()
    for path in sorted((ROOT / "attnbook" / "results").glob("*.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))["meta"]
        assert meta.get("device"), f"{path.name}: meta.device is empty"
        kinds.add(meta.get("device_kind", path.stem.rsplit("-", 1)[-1]))
    assert kinds, "no stored results in attnbook/results"
    assert "live cells" in note.lower() and "stored results" in note.lower()
    if kinds - {"cpu"}:
        assert "no gpu" not in note.lower(), f"stored results include {sorted(kinds)}: update the device note"
    else:
        assert "CPU" in note and "no GPU" in note, "stored results are CPU-only: the note must say so"


def test_config_keeps_math_offline_and_notebooks_runnable():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["timeout"] >= 300 and config["execute"]["allow_errors"] is False
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["repository"] == {"url": "https://github.com/attnbook/attnbook", "path_to_book": "", "branch": "main"}
    assert config["only_build_toc_files"] is True
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    chapters = [c for part in toc["parts"] if part["caption"] == "Chapters" for c in part["chapters"]]
    assert [c["sections"][0]["glob"] for c in chapters] == [f"notebooks/{nn}*" for nn in CHAPTERS]


# ----------------------------------------------------------------------------- the built site
def _pages() -> list[Path]:
    skip = ("_static", "_sources", "_images")
    return sorted(p for p in HTML.rglob("*.html") if not p.relative_to(HTML).parts[0] in skip)


@pytest.fixture(scope="module")
def site() -> Path:
    if not (HTML / "index.html").is_file():
        pytest.fail(f"{HTML} has no index.html: build the site first (`make site`, or `make test`, "
                    "which builds it before this test)", pytrace=False)
    return HTML


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.external_assets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        url = attrs.get("href") if tag in ("a", "link") else attrs.get("src")
        if url is not None and tag in ("a", "link", "img", "script", "source", "iframe"):
            self.links.append((tag, url))
            asset = tag in ("script", "img", "iframe", "source") or (tag == "link" and "stylesheet" in (attrs.get("rel") or ""))
            if asset and re.match(r"(https?:)?//", url):
                self.external_assets.append(f"<{tag}> {url}")


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Parser:
    parser = _Parser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


@pytest.mark.browser
def test_no_asset_is_loaded_from_outside_the_site(site):
    offenders = [f"{p.relative_to(site)}: {a}" for p in _pages() for a in _parse(p).external_assets]
    assert not offenders, "scripts/styles/images from a CDN (the site must work offline):\n" + "\n".join(offenders[:20])
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not shipped in _static/mathjax"


@pytest.mark.browser
def test_no_broken_internal_link(site):
    broken = []
    checked = 0
    for page in _pages():
        for tag, url in _parse(page).links:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme or url.startswith("//") or not url.strip():
                continue
            target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if parts.path.endswith("/"):
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                if urllib.parse.unquote(parts.fragment) not in _parse(target).ids:
                    broken.append(f"{page.relative_to(site)}: <{tag}> {url} (no such anchor)")
    assert checked > 100, f"only {checked} internal links found"
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:30])


@pytest.mark.browser
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_section_has_download_and_colab_buttons(site, path):
    page = site / "notebooks" / f"{path.stem}.html"
    assert page.is_file(), f"{path.name} was not built into the site"
    links = [url for _, url in _parse(page).links]
    ipynb = [u for u in links if u.endswith(f"_sources/notebooks/{path.stem}.ipynb")]
    assert ipynb, f"{page.name}: no download-.ipynb button"
    assert (page.parent / ipynb[0]).resolve().is_file(), f"{page.name}: the .ipynb download is missing"
    colab = f"https://colab.research.google.com/github/attnbook/attnbook/blob/main/notebooks/{path.stem}.ipynb"
    assert colab in links, f"{page.name}: no Colab button opening the generated .ipynb (run `make notebooks` before the build)"


# ------------------------------------------------------------------ headless Chromium over CDP
class _Server:
    """The built site on http://127.0.0.1:PORT/, in a thread."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Browser:
    """A minimal Chrome DevTools Protocol client for one headless Chromium tab."""

    def __init__(self, executable: str, profile: str):
        import websocket  # websocket-client

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check",
             "--disable-component-update", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{executable} did not start (exit code {self.proc.returncode})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            tab = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.events: list[dict] = []
        self._id = 0
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        for message in self.events:
            if message["method"] == event:
                return message
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = json.loads(self.ws.recv())
            except Exception:  # websocket timeout
                break
            finally:
                self.ws.settimeout(60)
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return message
        raise TimeoutError(f"no {event} within {timeout} s ({len(self.events) - seen} other events)")

    def evaluate(self, expression: str, await_promise: bool = False):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30.0):
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", timeout)

    def screenshot(self, path: Path, clip: dict | None = None):
        import base64

        extra = {"clip": {**clip, "scale": 1}, "captureBeyondViewport": True} if clip else {}
        self.call("Page.bringToFront")
        # a screenshot waits for a fresh compositor frame: allow a busy machine time for one
        self.ws.settimeout(180)
        try:
            data = self.call("Page.captureScreenshot", format="png", fromSurface=True, **extra)["data"]
        finally:
            self.ws.settimeout(60)
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()


@pytest.fixture(scope="module")
def browser(site):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; `make test` installs it)", pytrace=False)
    server = _Server(site)
    with tempfile.TemporaryDirectory(prefix="attnbook-chromium-") as profile:
        chrome = Browser(CHROMIUM, profile)
        chrome.base = server.url
        try:
            yield chrome
        finally:
            chrome.close()
            server.close()


# After the load event: make lazy images eager, wait for every image and for MathJax's typesetting.
SETTLE_JS = """(async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  return true;
})()"""

INSPECT_JS = """(() => {
  const images = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const maths = [...document.querySelectorAll('span.math, div.math')];
  const untypeset = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 60));
  return {images, maths: maths.length, mjx: document.querySelectorAll('mjx-container').length, untypeset,
          title: document.title};
})()"""


def _problems(events: list[dict], base: str) -> list[str]:
    problems = []
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            problems.append(f"console.{p['type']}: {text[:200]}")
        elif method == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            problems.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}"[:300])
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            problems.append(f"log error: {p['entry'].get('text', '')[:200]} {p['entry'].get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if re.match(r"(https?|wss?)://", url) and not url.startswith(base):
                problems.append(f"request outside the site: {url}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"failed to load: {p.get('errorText')} ({p.get('type')})")
        elif method == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400:
            problems.append(f"HTTP {p['response']['status']}: {p['response'].get('url')}")
    return problems


@pytest.mark.browser
def test_every_page_in_headless_chromium(site, browser):
    pages = _pages()
    assert len(pages) >= 10, f"only {len(pages)} pages built"
    failures, typeset_pages, images = [], 0, 0
    for page in pages:
        rel = page.relative_to(site).as_posix()
        browser.open(browser.base + rel)
        browser.evaluate(SETTLE_JS, await_promise=True)
        info = browser.evaluate(INSPECT_JS)
        problems = _problems(browser.events, browser.base)
        problems += [f"image did not load: {i['src']}" for i in info["images"] if not i["ok"]]
        if info["untypeset"]:
            problems.append(f"{len(info['untypeset'])} of {info['maths']} formulas not typeset, e.g. {info['untypeset'][0]!r}")
        if info["maths"]:
            typeset_pages += 1
        images += len(info["images"])
        failures += [f"{rel}: {p}" for p in problems]
    assert not failures, f"{len(failures)} problems on {len(pages)} pages:\n" + "\n".join(failures[:40])
    assert typeset_pages >= 3, f"math typeset on only {typeset_pages} pages"
    print(f"{len(pages)} pages, {typeset_pages} with math (all typeset), {images} images (all loaded)")


@pytest.mark.browser
def test_search_finds_the_chapter_on_flashattention(site, browser):
    sources = sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md")) + NOTEBOOKS
    expected = {p.relative_to(ROOT).with_suffix(".html").as_posix() for p in sources
                if "FlashAttention" in p.read_text(encoding="utf-8")}
    assert expected, "no chapter or section mentions FlashAttention"
    browser.open(browser.base + "search.html?q=FlashAttention")
    deadline, hits = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        hits = browser.evaluate("[...document.querySelectorAll('#search-results li a')].map(a => a.getAttribute('href'))")
        done = browser.evaluate("!!document.querySelector('#search-results .search-summary')")
        if done:
            break
        time.sleep(0.2)
    found = {urllib.parse.urlsplit(h).path.lstrip("./") for h in hits}
    assert found & expected, f"search for FlashAttention returned {sorted(found)}, expected one of {sorted(expected)}"
    assert not _problems(browser.events, browser.base)



def _cli_screenshot(url: str, path: Path, dark: bool = False, height: int = 1000) -> None:
    """A screenshot by Chromium's own --screenshot mode: one short-lived process per page.

    (Page.captureScreenshot over the DevTools protocol waits for a compositor frame that
    headless Chromium with --disable-gpu sometimes never delivers; this mode does not hang.)
    """
    with tempfile.TemporaryDirectory() as profile:
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
                f"--window-size=1280,{height}", "--virtual-time-budget=8000", f"--screenshot={path}", url]
        if dark:
            args.insert(1, "--blink-settings=preferredColorScheme=0")  # 0 = dark
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)


@pytest.mark.browser
def test_screenshots(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    section = next((site / "notebooks" / f"{p.stem}.html" for p in NOTEBOOKS
                    if re.search(r'<img[^>]+src="[^"]*_images/', (site / "notebooks" / f"{p.stem}.html").read_text(encoding="utf-8"))),
                   site / "notebooks" / f"{NOTEBOOKS[0].stem}.html")
    chapter = sorted((site / "book").glob("ch02_*.html"))[0]
    shots = {"1-landing.png": site / "index.html", "2-chapter.png": chapter, "3-section.png": section}
    for name, page in shots.items():
        _cli_screenshot(browser.base + page.relative_to(site).as_posix(), SHOTS / name)
    # the same section in the dark theme: figures must stay readable
    _cli_screenshot(browser.base + section.relative_to(site).as_posix(), SHOTS / "4-section-dark.png", dark=True, height=1600)
    for name in [*shots, "4-section-dark.png"]:
        data = (SHOTS / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name} looks empty"
