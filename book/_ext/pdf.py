"""The whole book as one PDF from the built site: ``python book/_ext/pdf.py _build/html``.

The pages of the HTML build, in the order of ``_toc.yml``, are joined into one page, ``print.html``
at the top of the site (their articles only: no navigation; links between pages become links inside
the page; solutions shown; the device note once), behind a title page (title, version, commit, date)
and a table of contents. The same Debian Chromium that the browser test uses, driven by Selenium
through Debian's chromedriver, prints it to ``attnbook.pdf`` beside it, MathJax typeset first, with
page numbers in the footer; pypdf adds the bookmarks (a chapter, its sections) and the document
information. It prints twice: the first print tells on which page each chapter and section starts
(the named destinations of the PDF, read with pypdf), and the second prints the contents with those
numbers. Code is set small enough that a 100-character line fits the A4 text width. ``make pdf``
runs it (``make build`` too). Nothing is executed again: the PDF shows the outputs of the site
build.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import functools
import html
import http.server
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get(
    "CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver"
)
PRINT_CSS = """
html, body { background: #fff !important; }
body { font-size: 10.5pt; margin: 0; }
.attnbook-print-page { break-before: page; }
.attnbook-print-cover { text-align: center; padding-top: 28vh; break-after: page; }
.attnbook-print-cover h1 { font-size: 26pt; margin-bottom: 1.5em; }
.attnbook-print-cover p { font-size: 11pt; margin: 0.3em 0; }
.attnbook-print-contents { break-after: page; }
.attnbook-print-contents ol { list-style: none; padding-left: 0; }
.attnbook-print-contents ol ol { padding-left: 1.6em; }
.attnbook-print-contents li { margin: 0.15em 0; }
.attnbook-print-contents li.chapter { font-weight: 600; margin-top: 0.5em; }
.attnbook-print-contents li.chapter li { font-weight: normal; }
.attnbook-print-contents a { display: flex; color: inherit; text-decoration: none; }
.attnbook-print-contents a .title { flex: 0 1 auto; }
.attnbook-print-contents a .dots { flex: 1 1 auto; border-bottom: 1px dotted #999;
  margin: 0 0.4em 0.3em; }
.attnbook-print-contents a .page { flex: 0 0 auto; }
.headerlink, .toggle-button, button, .copybtn { display: none !important; }
pre, div.highlight pre, .cell_output pre { font-size: 7.6pt !important; line-height: 1.3;
  padding: 6px 8px !important; white-space: pre-wrap; overflow: visible !important; }
div.cell_output, div.output { overflow: visible !important; max-height: none !important; }
img { max-width: 100%; height: auto; break-inside: avoid; }
figure, .cell_output img { break-inside: avoid; }
h1, h2, h3 { break-after: avoid; }
details > * { display: block; }
"""
#: A4 with margins; the footer shows the page number (Chrome fills the ``pageNumber`` span).
PDF_OPTIONS = {
    "paperWidth": 8.27,
    "paperHeight": 11.69,
    "marginTop": 0.55,
    "marginBottom": 0.7,
    "marginLeft": 0.55,
    "marginRight": 0.55,
    "printBackground": True,
    "displayHeaderFooter": True,
    "headerTemplate": "<span></span>",
    "footerTemplate": '<div style="font-size:8pt;width:100%;text-align:center;color:#555">'
    '<span class="pageNumber"></span></div>',
}


def toc_order(root: Path = ROOT) -> list[str]:
    """Docnames in reading order: the root, then each chapter and its sections (globs expanded)."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    order = [toc["root"]]

    def add(entries):
        for entry in entries or []:
            if "file" in entry:
                order.append(entry["file"])
            elif "glob" in entry:
                order.extend(
                    sorted(
                        p.relative_to(root).with_suffix("").as_posix()
                        for p in root.glob(entry["glob"] + ".md")
                    )
                )
            add(entry.get("sections"))

    for part in toc.get("parts", []):
        add(part.get("chapters"))
    return list(dict.fromkeys(order))


def _anchor(docname: str) -> str:
    return "page-" + re.sub(r"[^\w-]", "-", docname)


def _rewrite(url: str, page: Path, site: Path, docs: set[str]) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or url.startswith(("//", "#", "data:", "mailto:")) or not parts.path:
        return url
    target = (page.parent / urllib.parse.unquote(parts.path)).resolve()
    try:
        rel = target.relative_to(site.resolve()).as_posix()
    except ValueError:
        return url
    if rel.endswith(".html") and rel[:-5] in docs:
        return "#" + (parts.fragment or _anchor(rel[:-5]))
    return urllib.parse.quote(rel) + (f"#{parts.fragment}" if parts.fragment else "")


def _title(soup) -> str:
    h1 = soup.select_one("article.bd-article h1")
    return re.sub(r"\s+", " ", h1.get_text(" ", strip=True)).strip("#¶ ") if h1 else ""


def _book_facts(root: Path) -> dict:
    """Title, version, commit (``+dirty`` when tracked files differ) and today's date (UTC)."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    init = (root / "attnbook" / "__init__.py").read_text(encoding="utf-8")
    version = re.search(r'^__version__ = "([^"]+)"', init, flags=re.M).group(1)

    def git(*args):
        run = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return {
        "title": config["title"],
        "author": config.get("author", ""),
        "version": version,
        "commit": commit,
        "date": date,
    }


def _contents(entries: list[tuple[str, str]], pages: dict[str, int] | None) -> str:
    """The table of contents: chapters (``book/chNN_*``) with their sections (``notebooks/NN*``)
    nested, other pages at the top level; page numbers from ``pages`` (anchor -> page) if known."""

    def item(docname, title, cls=""):
        anchor = _anchor(docname)
        number = "" if pages is None else pages.get(anchor, "")
        return (
            f'<li class="{cls}"><a href="#{anchor}"><span class="title">{html.escape(title)}'
            f'</span><span class="dots"></span><span class="page">{number}</span></a>'
        )

    out, open_chapter = ['<ol class="toc">'], None
    for docname, title in entries:
        chapter = re.match(r"book/ch(\d\d)_", docname)
        section = re.match(r"notebooks/(\d\d)", docname)
        if section and open_chapter == section.group(1):
            out.append(item(docname, title) + "</li>")
            continue
        if open_chapter is not None:
            out.append("</ol></li>")
            open_chapter = None
        if chapter:
            open_chapter = chapter.group(1)
            out.append(item(docname, title, "chapter") + "<ol>")
        else:
            out.append(item(docname, title) + "</li>")
    if open_chapter is not None:
        out.append("</ol></li>")
    return "\n".join(out + ["</ol>"])


def combine(
    site: Path, root: Path = ROOT, pages: dict[str, int] | None = None
) -> tuple[Path, list]:
    """Write ``site/print.html``: a title page, the contents (with ``pages``' numbers when given),
    then every page's article in book order, URLs made relative to the site. Returns the file and
    the (docname, title) of each page."""
    from bs4 import BeautifulSoup

    docnames = [d for d in toc_order(root) if (site / f"{d}.html").is_file()]
    missing = [d for d in toc_order(root) if d not in docnames]
    if missing:
        raise FileNotFoundError(f"pages missing from {site}: {missing}")
    docs = set(docnames)
    facts = _book_facts(root)
    first = BeautifulSoup((site / f"{docnames[0]}.html").read_text(encoding="utf-8"), "html.parser")
    head = [
        '<meta charset="utf-8">',
        f"<title>{html.escape(facts['title'])}</title>",
        f'<meta name="author" content="{html.escape(facts["author"])}">',
    ]
    for link in first.find_all("link", rel="stylesheet"):
        href = _rewrite(link["href"], site / (docnames[0] + ".html"), site, docs)
        head.append(f'<link rel="stylesheet" href="{href}">')
    for script in first.find_all("script"):
        src, text = script.get("src"), script.string or ""
        if (src and "mathjax" in src.lower()) or (not src and "MathJax" in text):
            if src:
                script["src"] = _rewrite(src, site / (docnames[0] + ".html"), site, docs)
            head.append(str(script))
    head.append(f"<style>{PRINT_CSS}</style>")
    body, entries, seen_note = [], [], False
    for docname in docnames:
        page = site / f"{docname}.html"
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        entries.append((docname, _title(soup) or docname))
        article = soup.select_one("article.bd-article") or soup.body
        for tag in article.find_all(["img", "a", "source"]):
            for key in ("src", "href"):
                if tag.get(key):
                    tag[key] = _rewrite(tag[key], page, site, docs)
        for note in article.select(".attnbook-device"):
            if seen_note:
                note.decompose()
            else:
                seen_note = True
                note["class"] = [c for c in note.get("class", []) if c != "dropdown"]
        for node in article.select(".dropdown"):
            node["class"] = [c for c in node.get("class", []) if c != "dropdown"]
        for details in article.find_all("details"):
            details["open"] = ""
        body.append(
            f'<section class="attnbook-print-page" id="{_anchor(docname)}">'
            f"{article.decode_contents()}</section>"
        )
    cover = (
        f'<section class="attnbook-print-cover"><h1>{html.escape(facts["title"])}</h1>'
        f"<p>{html.escape(facts['author'])}</p><p>attnbook {facts['version']}</p>"
        f"<p>commit {facts['commit']}</p><p>printed {facts['date']}</p></section>"
    )
    contents = (
        f'<section class="attnbook-print-contents"><h1>Contents</h1>{_contents(entries, pages)}'
        "</section>"
    )
    out = site / "print.html"
    out.write_text(
        '<!DOCTYPE html>\n<html lang="en" data-theme="light">\n<head>\n'
        + "\n".join(head)
        + '\n</head>\n<body class="attnbook-print">\n<main class="bd-article">\n'
        + cover
        + contents
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return out, entries


def anchor_pages(pdf: bytes) -> dict[str, int]:
    """{element id: 1-based page} for the named destinations Chromium writes for link targets."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    return {
        str(name).lstrip("/"): reader.get_destination_page_number(dest) + 1
        for name, dest in reader.named_destinations.items()
    }


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


SETTLE_JS = """return (async () => {
  const images = [...document.images];
  images.forEach(i => { i.loading = 'eager'; });
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  const mj = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (mj) { await mj; }
  return document.querySelectorAll('mjx-container').length;
})();"""


def print_pdf(page: Path, site: Path, timeout: float = 900) -> bytes:
    """``page`` printed by headless Chromium (Selenium, chromedriver) over http://127.0.0.1, after
    its images and MathJax have settled (MathJax loads its fonts from the site)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{page.relative_to(site).as_posix()}"
    try:
        with tempfile.TemporaryDirectory(prefix="attnbook-pdf-") as profile:
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for arg in (
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={profile}/p",
            ):
                options.add_argument(arg)
            driver = webdriver.Chrome(
                options=options, service=Service(executable_path=CHROMEDRIVER)
            )
            try:
                driver.command_executor.client_config.timeout = timeout
                driver.set_page_load_timeout(timeout)
                driver.set_script_timeout(timeout)
                driver.get(url)
                driver.execute_script(SETTLE_JS)
                data = driver.execute_cdp_cmd("Page.printToPDF", PDF_OPTIONS)["data"]
            finally:
                driver.quit()  # before the profile folder is removed
    finally:
        server.shutdown()
        server.server_close()
    pdf = base64.b64decode(data)
    if pdf[:5] != b"%PDF-":
        raise RuntimeError(f"Chromium printed no PDF for {url}")
    return pdf


def finish(pdf: bytes, facts: dict, entries: list[tuple[str, str]], pages: dict[str, int]) -> bytes:
    """Bookmarks (front matter, chapters with their sections, back matter) and the document
    information (one title, the author, the version and commit)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.add_outline_item("Title page", 0)
    writer.add_outline_item("Contents", 1)
    chapter = None
    for docname, title in entries:
        page = pages[_anchor(docname)] - 1
        section = re.match(r"notebooks/(\d\d)", docname)
        if section and chapter is not None and chapter[0] == section.group(1):
            writer.add_outline_item(title, page, parent=chapter[1])
            continue
        item = writer.add_outline_item(title, page)
        number = re.match(r"book/ch(\d\d)_", docname)
        chapter = (number.group(1), item) if number else None
    writer.add_metadata(
        {
            "/Title": facts["title"],
            "/Author": facts["author"],
            "/Subject": f"attnbook {facts['version']}, commit {facts['commit']}",
        }
    )
    writer.page_mode = "/UseOutlines"
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the built site as one PDF.")
    parser.add_argument("site", type=Path, nargs="?", default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=None, help="default: SITE/attnbook.pdf")
    args = parser.parse_args(argv)
    for tool, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(tool).exists():
            print(
                f"no {Path(tool).name} at {tool} (Debian: apt-get install {package})",
                file=sys.stderr,
            )
            return 1
    start = time.monotonic()
    out = args.out or args.site / "attnbook.pdf"
    first = print_pdf(combine(args.site)[0], args.site)  # where each page starts
    pages = anchor_pages(first)
    page, entries = combine(args.site, pages=pages)
    pdf = print_pdf(page, args.site)  # the contents with their page numbers
    if anchor_pages(pdf) != pages:
        raise RuntimeError("the page numbers moved between the two prints")
    out.write_bytes(finish(pdf, _book_facts(ROOT), entries, pages))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
