"""The reader's experience: sources that every page shares, and the built site in a real browser.

Two kinds of test live here.

* Source checks (no build needed; part of the unit tests): every notebook starts with the shared
  set-up cell and includes the device note, every chapter has exercises, the device note tells the
  truth about the stored results, and the configuration keeps math offline and notebooks runnable.
* Browser checks (marked ``browser``; run after the site is built, ``make test`` does both): the
  site in ``_build/html`` is served from 127.0.0.1 and every page opened in headless Chromium
  through the DevTools protocol: no JavaScript errors, every image loads, every formula typeset by
  the MathJax copy inside the site, nothing requested from outside the site, no broken internal
  link, search finds the chapter on FlashAttention, screenshots saved to ``_build/screenshots``;
  every image keeps its aspect ratio at 1400 px and 420 px; one search box; the device note
  folded; edit and issue buttons and the build's date and commit on every page; the execution
  status page; the download-.ipynb is the readable notebook; the executed notebooks' outputs are
  clean (no line over 100 characters, no stray reprs, no library log lines); the PDF.

The site is ``_build/html`` or the folder in ``$ATTNBOOK_SITE`` (e.g. a build made with
``jupyter-book build . --path-output /tmp/site``: then ``ATTNBOOK_SITE=/tmp/site/_build/html``).
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
HTML = Path(os.environ.get("ATTNBOOK_SITE", ROOT / "_build" / "html")).resolve()
SHOTS = HTML.parent / "screenshots"
EXECUTED = HTML.parent / "jupyter_execute"  # the notebooks as myst-nb executed them
MAX_LINE = 100
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.md"))
CHAPTERS = [f"{i:02d}" for i in range(1, 10)]


# ----------------------------------------------------------------------------- source checks
def _code_cells(text: str) -> list[str]:
    return re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shares_the_setup_cell_and_the_device_note(path):
    reference = _code_cells(
        (ROOT / "notebooks" / "01_self_attention.md").read_text(encoding="utf-8")
    )[0]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\njupytext:"), f"{path.name}: missing the Jupytext header"
    cells = _code_cells(text)
    assert cells and cells[0] == reference, (
        f"{path.name}: the first code cell must be the shared set-up cell"
    )
    assert "```{include} ../book/_device_note.md\n```" in text, (
        f"{path.name}: include book/_device_note.md"
    )
    assert re.match(r"0[1-9]", path.name), (
        f"{path.name}: no chapter prefix 01..09, so no chapter lists it"
    )


@pytest.mark.parametrize("nn", CHAPTERS)
def test_chapter_has_exercises_with_gated_solutions(nn):
    files = sorted((ROOT / "book").glob(f"ch{nn}_*.md")) + sorted(
        (ROOT / "notebooks").glob(f"{nn}*.md")
    )
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    labels = re.findall(r"^```\{exercise\}.*\n:label: (\S+)", text, flags=re.M)
    assert labels, f"chapter {nn}: no exercise"
    for label in labels:
        assert re.search(r"^```\{solution-start\} %s\s*$" % re.escape(label), text, flags=re.M), (
            f"chapter {nn}: exercise {label} has no gated solution"
        )


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
        assert "no gpu" not in note.lower(), (
            f"stored results include {sorted(kinds)}: update the device note"
        )
    else:
        assert "CPU" in note and "no GPU" in note, (
            "stored results are CPU-only: the note must say so"
        )


def test_config_keeps_math_offline_and_notebooks_runnable():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["timeout"] >= 300 and config["execute"]["allow_errors"] is False
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["repository"] == {
        "url": "https://github.com/attnbook/attnbook",
        "path_to_book": "",
        "branch": "main",
    }
    assert config["only_build_toc_files"] is True
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    chapters = [
        c for part in toc["parts"] if part["caption"] == "Chapters" for c in part["chapters"]
    ]
    assert [c["sections"][0]["glob"] for c in chapters] == [f"notebooks/{nn}*" for nn in CHAPTERS]


def _toc_chapters() -> dict[str, list[str]]:
    """{chapter docname: [its section docnames]}, the globs of _toc.yml expanded."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    chapters = {}
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            sections = []
            for entry in chapter.get("sections") or []:
                sections += (
                    [entry["file"]]
                    if "file" in entry
                    else sorted(
                        p.relative_to(ROOT).with_suffix("").as_posix()
                        for p in ROOT.glob(entry["glob"] + ".md")
                    )
                )
            chapters[chapter["file"]] = sections
    return chapters


def test_chapter_pages_list_all_their_sections():
    missing = []
    for chapter, sections in _toc_chapters().items():
        text = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
        listing = re.search(r"^## Sections\s*$(.*?)(?=^#{1,2} |\Z)", text, flags=re.M | re.S)
        if sections and not listing:
            missing.append(f"{chapter}.md has no '## Sections' list")
            continue
        linked = (
            {Path(m).name for m in re.findall(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", listing.group(1))}
            if listing
            else set()
        )
        missing += [
            f"{chapter}.md: its '## Sections' list lacks {s}"
            for s in sections
            if Path(s).name not in linked
        ]
    assert not missing, "chapter pages must list every section ({doc} links):\n" + "\n".join(
        missing
    )


def test_page_titles_are_distinct():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    docs = [toc["root"]] + [d for c, sections in _toc_chapters().items() for d in [c, *sections]]
    titles: dict[str, list[str]] = {}
    for doc in docs:
        title = (
            re.search(r"^# (.+)$", (ROOT / f"{doc}.md").read_text(encoding="utf-8"), flags=re.M)
            .group(1)
            .strip()
        )
        titles.setdefault(title, []).append(doc)
    shared = {t: d for t, d in titles.items() if len(d) > 1}
    assert not shared, f"pages sharing a title: {shared}"


def test_code_lines_fit_the_page():
    """Every code line a reader sees is at most 100 characters (no scrollbar hides the end)."""
    long = [
        f"{p.name}, code cell {i}: {line.strip()[:70]}... ({len(line)} chars)"
        for p in NOTEBOOKS
        for i, cell in enumerate(_code_cells(p.read_text(encoding="utf-8")), 1)
        for line in cell.splitlines()
        if len(line) > MAX_LINE
    ]
    assert not long, f"{len(long)} code lines over {MAX_LINE} characters:\n" + "\n".join(long)


def test_device_note_is_folded_by_the_sphinx_extension():
    """book/_device_note.md is an admonition of class attnbook-device; the extension adds 'dropdown'."""
    note = (ROOT / "book" / "_device_note.md").read_text(encoding="utf-8")
    assert re.search(r"^:class: .*\battnbook-device\b", note, flags=re.M)
    assert "fold_device_note" in (ROOT / "book" / "_ext" / "attnbook_sphinx.py").read_text(
        encoding="utf-8"
    )


# ----------------------------------------------------------------------------- the built site
def _pages() -> list[Path]:
    skip = (
        "_static",
        "_sources",
        "_images",
        "print.html",
    )  # print.html: the PDF's source, tested on its own
    return sorted(p for p in HTML.rglob("*.html") if p.relative_to(HTML).parts[0] not in skip)


@pytest.fixture(scope="module")
def site() -> Path:
    if not (HTML / "index.html").is_file():
        pytest.fail(
            f"{HTML} has no index.html: build the site first (`make site`, or `make test`, "
            "which builds it before this test)",
            pytrace=False,
        )
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
            asset = tag in ("script", "img", "iframe", "source") or (
                tag == "link" and "stylesheet" in (attrs.get("rel") or "")
            )
            if asset and re.match(r"(https?:)?//", url):
                self.external_assets.append(f"<{tag}> {url}")


@functools.cache
def _parse(path: Path) -> _Parser:
    parser = _Parser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


@pytest.mark.browser
def test_no_asset_is_loaded_from_outside_the_site(site):
    offenders = [f"{p.relative_to(site)}: {a}" for p in _pages() for a in _parse(p).external_assets]
    assert not offenders, (
        "scripts/styles/images from a CDN (the site must work offline):\n"
        + "\n".join(offenders[:20])
    )
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), (
        "MathJax is not shipped in _static/mathjax"
    )


@pytest.mark.browser
def test_no_broken_internal_link(site):
    broken = []
    checked = 0
    for page in _pages():
        for tag, url in _parse(page).links:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme or url.startswith("//") or not url.strip():
                continue
            target = (
                page
                if not parts.path
                else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            )
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
    assert (page.parent / ipynb[0]).resolve().is_file(), (
        f"{page.name}: the .ipynb download is missing"
    )
    colab = f"https://colab.research.google.com/github/attnbook/attnbook/blob/main/notebooks/{path.stem}.ipynb"
    assert colab in links, f"{page.name}: no Colab button opening notebooks/{path.stem}.ipynb"
    assert path.with_suffix(".ipynb").is_file(), (
        f"the Colab button opens notebooks/{path.stem}.ipynb: run `make colab`"
    )
    # the download is the readable notebook (the Colab copy) with the build's outputs
    download = json.loads((page.parent / ipynb[0]).resolve().read_text(encoding="utf-8"))
    committed = json.loads(path.with_suffix(".ipynb").read_text(encoding="utf-8"))
    assert [c["source"] for c in download["cells"]] == [c["source"] for c in committed["cells"]], (
        f"{page.name}: the download-.ipynb differs from notebooks/{path.stem}.ipynb"
    )
    assert any(c.get("outputs") for c in download["cells"] if c["cell_type"] == "code"), (
        f"{page.name}: download has no outputs"
    )


@pytest.mark.browser
def test_pages_have_edit_and_issue_buttons_and_provenance(site):
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo, branch = (
        config["repository"]["url"].rstrip("/"),
        config["repository"].get("branch", "main"),
    )
    problems = []
    for page in _pages():
        rel = page.relative_to(site).with_suffix("").as_posix()
        text = page.read_text(encoding="utf-8")
        if (ROOT / f"{rel}.md").is_file():  # a page built from a source (not search, genindex)
            links = [url for _, url in _parse(page).links]
            if f"{repo}/edit/{branch}/{rel}.md" not in links:
                problems.append(f"{rel}: no edit-this-page button")
            if not any(u.startswith(f"{repo}/issues/new") for u in links):
                problems.append(f"{rel}: no open-an-issue button")
        footer = re.search(r'<p class="attnbook-provenance">(.*?)</p>', text, flags=re.S)
        if (
            not footer and 'http-equiv="Refresh"' in text
        ):  # index.html: a redirect to the landing page
            continue
        if not footer:
            problems.append(f"{rel}: no build date and commit in the footer")
            continue
        date = re.search(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2} UTC", footer.group(1))
        commit = re.search(rf'href="{re.escape(repo)}/commit/([0-9a-f]{{40}})"', footer.group(1))
        if not date or not (commit or "outside git" in footer.group(1)):
            problems.append(f"{rel}: footer lacks the date or the commit: {footer.group(1)[:200]}")
    assert not problems, "\n".join(problems[:30])


@pytest.mark.browser
def test_execution_status_page(site):
    page = site / "book" / "execution.html"
    assert page.is_file(), "no execution status page (book/execution.md in _toc.yml)"
    text = page.read_text(encoding="utf-8")
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", text, flags=re.S)
    documented = {
        m for row in rows for m in re.findall(r"notebooks/(\d\w*?)(?:\.html|\.md|<|\b)", row)
    }
    assert {p.stem for p in NOTEBOOKS} <= documented, (
        f"missing from the table: {sorted({p.stem for p in NOTEBOOKS} - documented)}"
    )
    failed = [re.sub(r"<[^>]+>|\s+", " ", row).strip()[:120] for row in rows if "❌" in row]
    assert not failed, f"notebooks that failed to execute: {failed}"
    assert sum("✅" in row for row in rows) >= len(NOTEBOOKS)


_BAD_OUTPUT = [
    (
        re.compile(r"<(?:Axes|Figure|matplotlib)[^>]*>|<[\w.]+ (?:object )?at 0x[0-9a-f]+>"),
        "stray object repr",
    ),
    (re.compile(r"\bnp\.(?:float|int|uint|bool|complex|str)\w*\("), "NumPy scalar repr"),
    (
        re.compile(r"\bUSDT\b|\bSTAGE:|^\[[WE]\d{4} |\w+Warning:|^WARNING:"),
        "library log or warning line",
    ),
]


def _output_texts(cell: dict) -> list[str]:
    """What a reader sees of a cell's outputs as text: streams, and text/plain where nothing richer is shown."""
    texts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            texts.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and not any(
                k.startswith(("image/", "text/html", "text/markdown", "text/latex")) for k in data
            ):
                plain = data["text/plain"]
                texts.append("".join(plain) if isinstance(plain, list) else plain)
        elif out.get("output_type") == "error":
            texts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return texts


@pytest.mark.browser
def test_executed_outputs_are_clean(site):
    """No printed or code line over 100 characters, no stray reprs, no library log lines, in any executed notebook."""
    executed = sorted(EXECUTED.glob("**/*.ipynb"))
    assert len(executed) >= len(NOTEBOOKS), f"only {len(executed)} executed notebooks in {EXECUTED}"
    problems = []
    for path in executed:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code_cells = [c for c in cells if c["cell_type"] == "code"]
        for number, cell in enumerate(code_cells, 1):
            where = f"{path.stem}, code cell {number}"
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            shown = "remove-cell" not in cell.get("metadata", {}).get(
                "tags", []
            ) and "remove-input" not in cell.get("metadata", {}).get("tags", [])
            if shown:
                problems += [
                    f"{where}: code line of {len(line)} chars: {line.strip()[:80]}"
                    for line in source.splitlines()
                    if len(line) > MAX_LINE
                ]
            for text in _output_texts(cell):
                for line in text.splitlines():
                    if len(line) > MAX_LINE:
                        problems.append(f"{where}: output line of {len(line)} chars: {line[:80]}")
                    problems += [
                        f"{where}: {why}: {line.strip()[:100]}"
                        for pattern, why in _BAD_OUTPUT
                        if pattern.search(line)
                    ]
    assert not problems, f"{len(problems)} problems in the executed outputs:\n" + "\n".join(
        problems
    )


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
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-component-update",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
        self.ws = websocket.create_connection(
            tab["webSocketDebuggerUrl"], timeout=60, suppress_origin=True
        )
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
        raise TimeoutError(
            f"no {event} within {timeout} s ({len(self.events) - seen} other events)"
        )

    def evaluate(self, expression: str, await_promise: bool = False):
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
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
            data = self.call("Page.captureScreenshot", format="png", fromSurface=True, **extra)[
                "data"
            ]
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
        pytest.fail(
            f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; `make test` installs it)",
            pytrace=False,
        )
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


def _settle(browser) -> None:
    """Wait for images and MathJax; a page that redirects (index.html) is followed to its target."""
    for attempt in range(3):
        try:
            browser.evaluate(SETTLE_JS, await_promise=True)
            return
        except RuntimeError as error:
            if "navigated" not in str(error) or attempt == 2:
                raise
            browser.events.clear()
            browser.wait_for("Page.loadEventFired", 30)


def _problems(events: list[dict], base: str) -> list[str]:
    problems = []
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])
            )
            problems.append(f"console.{p['type']}: {text[:200]}")
        elif method == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            problems.append(
                f"exception: {details.get('exception', {}).get('description', details.get('text'))}"[
                    :300
                ]
            )
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            problems.append(
                f"log error: {p['entry'].get('text', '')[:200]} {p['entry'].get('url', '')}"
            )
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if re.match(r"(https?|wss?)://", url) and not url.startswith(base):
                problems.append(f"request outside the site: {url}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"failed to load: {p.get('errorText')} ({p.get('type')})")
        elif (
            method == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400
        ):
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
        _settle(browser)
        info = browser.evaluate(INSPECT_JS)
        problems = _problems(browser.events, browser.base)
        problems += [f"image did not load: {i['src']}" for i in info["images"] if not i["ok"]]
        if info["untypeset"]:
            problems.append(
                f"{len(info['untypeset'])} of {info['maths']} formulas not typeset, e.g. {info['untypeset'][0]!r}"
            )
        if info["maths"]:
            typeset_pages += 1
        images += len(info["images"])
        failures += [f"{rel}: {p}" for p in problems]
    assert not failures, f"{len(failures)} problems on {len(pages)} pages:\n" + "\n".join(
        failures[:40]
    )
    assert typeset_pages >= 3, f"math typeset on only {typeset_pages} pages"
    print(
        f"{len(pages)} pages, {typeset_pages} with math (all typeset), {images} images (all loaded)"
    )


@pytest.mark.browser
def test_search_finds_the_chapter_on_flashattention(site, browser):
    sources = sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md")) + NOTEBOOKS
    expected = {
        p.relative_to(ROOT).with_suffix(".html").as_posix()
        for p in sources
        if "FlashAttention" in p.read_text(encoding="utf-8")
    }
    assert expected, "no chapter or section mentions FlashAttention"
    browser.open(browser.base + "search.html?q=FlashAttention")
    deadline, hits = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        hits = browser.evaluate(
            "[...document.querySelectorAll('#search-results li a')].map(a => a.getAttribute('href'))"
        )
        done = browser.evaluate("!!document.querySelector('#search-results .search-summary')")
        if done:
            break
        time.sleep(0.2)
    found = {urllib.parse.urlsplit(h).path.lstrip("./") for h in hits}
    assert found & expected, (
        f"search for FlashAttention returned {sorted(found)}, expected one of {sorted(expected)}"
    )
    assert not _problems(browser.events, browser.base)


# Each visible image: its content box against its natural size (1.0 = undistorted).
ASPECT_JS = """(() => [...document.images].filter(i => i.naturalWidth > 0 && i.getClientRects().length).map(i => {
  const r = i.getBoundingClientRect(), s = getComputedStyle(i);
  const px = k => parseFloat(s[k]) || 0;
  const w = r.width - px('paddingLeft') - px('paddingRight') - px('borderLeftWidth') - px('borderRightWidth');
  const h = r.height - px('paddingTop') - px('paddingBottom') - px('borderTopWidth') - px('borderBottomWidth');
  return {src: i.currentSrc || i.src, w, h, nw: i.naturalWidth, nh: i.naturalHeight,
          ratio: (w / h) / (i.naturalWidth / i.naturalHeight)};
}).filter(i => i.w > 1 && i.h > 1))()"""

ASPECT_TOLERANCE = 0.02


def _viewport(browser, width: int, height: int = 900) -> None:
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=width < 600,
    )


@pytest.mark.browser
def test_images_keep_their_aspect_ratio(site, browser):
    """At a desktop (1400 px) and a phone (420 px) width, no image is stretched or squashed by more than 2 %."""
    pages = _pages()
    failures, measured = [], 0
    worst = {1400: 1.0, 420: 1.0}
    try:
        for width in (1400, 420):
            _viewport(browser, width)
            for page in pages:
                rel = page.relative_to(site).as_posix()
                browser.open(browser.base + rel)
                _settle(browser)
                browser.evaluate(
                    "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
                    await_promise=True,
                )
                for image in browser.evaluate(ASPECT_JS):
                    measured += 1
                    if abs(image["ratio"] - 1) > abs(worst[width] - 1):
                        worst[width] = image["ratio"]
                    if abs(image["ratio"] - 1) > ASPECT_TOLERANCE:
                        failures.append(
                            f"{width} px, {rel}: {image['src'].rsplit('/', 1)[-1]} shown {image['w']:.0f}x{image['h']:.0f}"
                            f" for {image['nw']}x{image['nh']}: {image['ratio']:.2f} of its aspect ratio"
                        )
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    print(f"{measured} images measured; worst displayed/natural aspect: {worst}")
    assert measured > len(pages), (
        f"only {measured} images measured on {len(pages)} pages at two widths"
    )
    assert not failures, f"{len(failures)} distorted images:\n" + "\n".join(failures[:40])


SEARCH_JS = """(() => [...document.querySelectorAll('input[type=search], .search-button-field')]
  .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden' && !e.closest('dialog:not([open])'))
  .map(e => e.className || e.tagName))()"""

NOTE_JS = """(() => { const n = document.querySelector('.attnbook-device');
  if (!n) return null;
  const body = [...n.children].filter(c => !c.classList.contains('admonition-title') && !c.matches('button'));
  return {height: n.getBoundingClientRect().height,
          hidden: body.every(c => !c.getClientRects().length || getComputedStyle(c).display === 'none'
                                || getComputedStyle(c).visibility === 'hidden')}; })()"""


@pytest.mark.browser
def test_one_search_box_and_a_folded_device_note(site, browser):
    section = site / "notebooks" / f"{NOTEBOOKS[0].stem}.html"
    try:
        for width in (1400, 420):
            _viewport(browser, width)
            browser.open(browser.base + section.relative_to(site).as_posix())
            _settle(browser)
            boxes = browser.evaluate(SEARCH_JS)
            assert len(boxes) <= 1, f"{width} px: {len(boxes)} search boxes visible: {boxes}"
            if width == 1400:
                assert len(boxes) == 1, "no search box at 1400 px"
            note = browser.evaluate(NOTE_JS)
            assert note is not None, "the section has no device note"
            assert note["hidden"] and note["height"] < 90, (
                f"{width} px: the device note is not folded: {note}"
            )
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")


@pytest.mark.browser
def test_pdf_has_every_chapter(site):
    """`make pdf`: site/attnbook.pdf, linked from the landing page, every chapter title in its text."""
    pdf = site / "attnbook.pdf"
    assert pdf.is_file(), f"no {pdf}: run `make pdf` (make build runs it)"
    landing = site / "book" / "intro.html"
    assert any(url.endswith("attnbook.pdf") for _, url in _parse(landing).links), (
        "the landing page does not link the PDF"
    )
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, flags=re.M).group(1))
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = re.sub(r"\s+", " ", text)
    chapters = [
        re.search(r"^# (.+)$", p.read_text(encoding="utf-8"), flags=re.M).group(1).strip()
        for p in sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md"))
    ]
    missing = [t for t in chapters if re.sub(r"\s+", " ", t) not in flat]
    print(f"{pdf.name}: {pages} pages, {pdf.stat().st_size / 2**20:.1f} MiB")
    assert pages >= 10 * len(chapters), f"only {pages} pages for {len(chapters)} chapters"
    assert not missing, f"chapter titles not in the PDF: {missing}"


@pytest.mark.browser
def test_print_page_is_complete(site, browser):
    """The page the PDF is printed from: every image loads and every formula is typeset."""
    page = site / "print.html"
    assert page.is_file(), "no print.html: run `make pdf`"
    browser.open(browser.base + "print.html", timeout=120)
    browser.evaluate(SETTLE_JS, await_promise=True)
    info = browser.evaluate(INSPECT_JS)
    assert info["images"] and all(i["ok"] for i in info["images"]), [
        i["src"] for i in info["images"] if not i["ok"]
    ][:10]
    assert info["maths"] > 100 and not info["untypeset"], info["untypeset"][:5]


def _cli_screenshot(url: str, path: Path, dark: bool = False, height: int = 1000) -> None:
    """A screenshot by Chromium's own --screenshot mode: one short-lived process per page.

    (Page.captureScreenshot over the DevTools protocol waits for a compositor frame that
    headless Chromium with --disable-gpu sometimes never delivers; this mode does not hang.)
    """
    with tempfile.TemporaryDirectory() as profile:
        args = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            f"--window-size=1280,{height}",
            "--virtual-time-budget=8000",
            f"--screenshot={path}",
            url,
        ]
        if dark:
            args.insert(1, "--blink-settings=preferredColorScheme=0")  # 0 = dark
        subprocess.run(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True
        )


@pytest.mark.browser
def test_screenshots(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    section = next(
        (
            site / "notebooks" / f"{p.stem}.html"
            for p in NOTEBOOKS
            if re.search(
                r'<img[^>]+src="[^"]*_images/',
                (site / "notebooks" / f"{p.stem}.html").read_text(encoding="utf-8"),
            )
        ),
        site / "notebooks" / f"{NOTEBOOKS[0].stem}.html",
    )
    chapter = sorted((site / "book").glob("ch02_*.html"))[0]
    shots = {
        "1-landing.png": site / "index.html",
        "2-chapter.png": chapter,
        "3-section.png": section,
    }
    for name, page in shots.items():
        _cli_screenshot(browser.base + page.relative_to(site).as_posix(), SHOTS / name)
    # the same section in the dark theme: figures must stay readable
    _cli_screenshot(
        browser.base + section.relative_to(site).as_posix(),
        SHOTS / "4-section-dark.png",
        dark=True,
        height=1600,
    )
    for name in [*shots, "4-section-dark.png"]:
        data = (SHOTS / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name} looks empty"
