"""The whole book as one PDF, from the built site: ``python book/_ext/pdf.py _build/html`` (`make pdf`).

The pages of the HTML build, in the order of ``_toc.yml``, are joined into one page,
``print.html`` at the top of the site (their articles only: no navigation; links between pages
become links inside the page; solutions shown; the device note once), and the same Debian
Chromium that the browser test uses prints it to ``attnbook.pdf`` beside it, MathJax typeset
first. Nothing is executed again: the PDF shows the outputs of the site build.
"""

from __future__ import annotations

import argparse
import functools
import http.server
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
PRINT_CSS = """
@page { size: A4; margin: 14mm 14mm 16mm 14mm; }
html, body { background: #fff !important; }
body { font-size: 10.5pt; margin: 0; }
.attnbook-print-page { break-before: page; }
.attnbook-print-page:first-of-type { break-before: avoid; }
.attnbook-print-title { text-align: center; padding-top: 30vh; }
.headerlink, .toggle-button, button, .copybtn { display: none !important; }
pre, div.highlight pre, .cell_output pre { white-space: pre-wrap; word-break: break-word; overflow: visible !important; }
div.cell_output, div.output { overflow: visible !important; max-height: none !important; }
img { max-width: 100%; height: auto; break-inside: avoid; }
figure, .cell_output img { break-inside: avoid; }
h1, h2, h3 { break-after: avoid; }
details > * { display: block; }
"""


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


def combine(site: Path, root: Path = ROOT) -> Path:
    """Write ``site/print.html``: every page's article in book order, URLs made relative to the site."""
    from bs4 import BeautifulSoup

    docnames = [d for d in toc_order(root) if (site / f"{d}.html").is_file()]
    missing = [d for d in toc_order(root) if d not in docnames]
    if missing:
        raise FileNotFoundError(f"pages missing from {site}: {missing}")
    docs = set(docnames)
    first = BeautifulSoup((site / f"{docnames[0]}.html").read_text(encoding="utf-8"), "html.parser")
    head = [
        '<meta charset="utf-8">',
        f"<title>{first.title.string if first.title else 'attnbook'}</title>",
    ]
    for link in first.find_all("link", rel="stylesheet"):
        head.append(
            f'<link rel="stylesheet" href="{_rewrite(link["href"], site / (docnames[0] + ".html"), site, docs)}">'
        )
    for script in first.find_all("script"):
        src, text = script.get("src"), script.string or ""
        if (src and "mathjax" in src.lower()) or (not src and "MathJax" in text):
            if src:
                script["src"] = _rewrite(src, site / (docnames[0] + ".html"), site, docs)
            head.append(str(script))
    head.append(f"<style>{PRINT_CSS}</style>")
    body, seen_note = [], False
    for docname in docnames:
        page = site / f"{docname}.html"
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
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
            f'<section class="attnbook-print-page" id="{_anchor(docname)}">{article.decode_contents()}</section>'
        )
    out = site / "print.html"
    out.write_text(
        '<!DOCTYPE html>\n<html lang="en" data-theme="light">\n<head>\n'
        + "\n".join(head)
        + '\n</head>\n<body class="attnbook-print">\n<main class="bd-article">\n'
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def print_pdf(page: Path, pdf: Path, site: Path, timeout: float = 600) -> None:
    """Chromium's --print-to-pdf over http://127.0.0.1 (MathJax loads its fonts from the site)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{page.relative_to(site).as_posix()}"
    try:
        with tempfile.TemporaryDirectory(prefix="attnbook-pdf-") as profile:
            tmp = Path(profile) / "out.pdf"
            subprocess.run(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    f"--user-data-dir={profile}/p",
                    "--no-pdf-header-footer",
                    "--run-all-compositor-stages-before-draw",
                    "--virtual-time-budget=120000",
                    f"--print-to-pdf={tmp}",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=True,
            )
            if not tmp.is_file() or tmp.read_bytes()[:5] != b"%PDF-":
                raise RuntimeError(f"Chromium wrote no PDF for {url}")
            shutil.move(tmp, pdf)
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the built site as one PDF.")
    parser.add_argument("site", type=Path, nargs="?", default=ROOT / "_build" / "html")
    parser.add_argument("--out", type=Path, default=None, help="default: SITE/attnbook.pdf")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    start = time.monotonic()
    page = combine(args.site)
    out = args.out or args.site / "attnbook.pdf"
    print_pdf(page, out, args.site)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
