"""The reader's experience: sources that every page shares, and the built site in a real browser.

Two kinds of test live here.

* Source checks (no build needed; part of the unit tests): every notebook starts with the shared
  set-up cell and includes the device note, every chapter has exercises, the device note tells the
  truth about the stored results, and the configuration keeps math offline and notebooks runnable.
* Browser checks (marked ``browser``; run after the site is built, ``make test`` does both): the
  site in ``_build/html`` is served from 127.0.0.1 and every page opened in headless Chromium
  driven by Selenium (Debian's chromedriver): no JavaScript errors, every image loads, every
  formula typeset by the MathJax copy inside the site, nothing requested from outside the site, no
  broken internal link, no code block scrolling at 1400 px, no figure text under 9 px, no plumbing
  on the page, search finds the chapter on FlashAttention, screenshots saved to
  ``_build/screenshots``; every image keeps its aspect ratio at 1400 px and 420 px; one search
  box; the device note folded; edit and issue buttons and the build's date and commit on every
  page; the execution status page; the download-.ipynb is the readable notebook; the executed
  notebooks' outputs are clean (no line over 100 characters, no stray reprs, no library log
  lines); the PDF is a book (title page, contents with page numbers, bookmarks, page numbers).

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
import unicodedata
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("ATTNBOOK_SITE", ROOT / "_build" / "html")).resolve()
SHOTS = HTML.parent / "screenshots"
EXECUTED = HTML.parent / "jupyter_execute"  # the notebooks as myst-nb executed them
MAX_LINE = 100
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.md"))
CHAPTERS = [f"{i:02d}" for i in range(1, 11)]


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
    assert re.match(r"0[1-9]|10", path.name), (
        f"{path.name}: no chapter prefix 01..10, so no chapter lists it"
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
        pattern = r"^```\{solution-start\} " + re.escape(label) + r"\s*$"
        assert re.search(pattern, text, flags=re.M), (
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


def _cell_tags(cell: str) -> set[str]:
    match = re.search(r"^:tags: \[(.*)\]", cell, flags=re.M)
    return {t.strip() for t in match.group(1).split(",")} if match else set()


def test_glue_calls_are_in_hidden_cells():
    """Bookkeeping is not shown: a cell that glues values is removed from the page (the values
    appear in the prose)."""
    visible = [
        f"{p.name}, code cell {i}"
        for p in NOTEBOOKS
        for i, cell in enumerate(_code_cells(p.read_text(encoding="utf-8")), 1)
        if re.search(r"\bglue\(", cell) and not _cell_tags(cell) & {"remove-cell", "remove-input"}
    ]
    assert not visible, "cells that show glue(...) calls (tag them remove-cell):\n" + "\n".join(
        visible
    )


CHAPTER_PAGES = {nn: sorted((ROOT / "book").glob(f"ch{nn}_*.md")) for nn in CHAPTERS}


# A chapter page's opening figure: a container with a name, myst-nb's {glue} directive pasting a
# notebook's figure (glued as inline SVG: myst-nb pastes no SVG image from another page), a caption.
KEY_FIGURE = re.compile(
    r"^:::\{container\} attnbook-key-figure\n:name: \S+\n\n"
    r"```\{glue\} (\w+)\n:doc: (/notebooks/\S+\.md)\n```\n\n\S.*?\n:::$",
    flags=re.M | re.S,
)


@pytest.mark.parametrize("nn", CHAPTERS)
def test_chapter_page_opens_with_a_figure_and_ends_with_what_to_remember(nn):
    """A glued figure with a caption before the first ``## `` heading; the chapter's "What to
    remember" fragment included."""
    (page,) = CHAPTER_PAGES[nn]
    text = page.read_text(encoding="utf-8")
    intro = re.split(r"^## ", text, maxsplit=1, flags=re.M)[0]
    figure = KEY_FIGURE.search(intro)
    assert figure, f"{page.name}: no attnbook-key-figure container before the first ## heading"
    key, path = figure.groups()
    notebook = (ROOT / path.lstrip("/")).read_text(encoding="utf-8")
    glued = (
        r"""\bglue\(["']""" + key + r"""["'], attnbook\.plot\.inline_svg\(\w+\), display=False\)"""
    )
    assert re.search(glued, notebook), f"{page.name}: {path} glues no inline_svg figure {key!r}"
    assert re.search(
        r"^## What to remember\n\n```\{include\} _remember_ch" + nn + r"\.md\n```", text, flags=re.M
    ), f"{page.name}: include _remember_ch{nn}.md under '## What to remember'"


@pytest.mark.parametrize("nn", CHAPTERS)
def test_what_to_remember_has_three_to_five_points(nn):
    fragment = ROOT / "book" / f"_remember_ch{nn}.md"
    bullets = re.findall(r"^- ", fragment.read_text(encoding="utf-8"), flags=re.M)
    assert 3 <= len(bullets) <= 5, f"{fragment.name}: {len(bullets)} points, not 3 to 5"


def test_key_numbers_page_gathers_every_chapter():
    text = (ROOT / "book" / "key_numbers.md").read_text(encoding="utf-8")
    for nn, (page,) in CHAPTER_PAGES.items():
        section = text.split(f"```{{include}} _remember_ch{nn}.md\n```", 1)
        assert len(section) == 2, f"key_numbers.md: does not include _remember_ch{nn}.md"
        heading = section[0].rsplit("\n## ", 1)[1]
        assert f"{{doc}}`{page.stem}`" in heading, f"key_numbers.md: no link to {page.stem}"
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert toc.index("file: book/key_numbers") < toc.index("file: book/results_gallery")
    assert "{doc}`key_numbers`" in (ROOT / "book" / "intro.md").read_text(encoding="utf-8")


GPU_SECTIONS = [
    ("04b_flash.md", "### On a GPU: the Triton kernel against SDPA's flash backend"),
    ("04g_roofline.md", "## Stored GPU results"),
]


@pytest.mark.parametrize("name,heading", GPU_SECTIONS, ids=[n for n, _ in GPU_SECTIONS])
def test_gpu_sections_fold_until_a_result_is_stored(name, heading):
    """A section that shows a stored CUDA result opens with one folded admonition (what will
    appear, and `make gpu` to produce it), and its code is folded; its output comes from the
    stored file, so it shows the result once attnbook/results/kernels-cuda.json exists."""
    text = (ROOT / "notebooks" / name).read_text(encoding="utf-8")
    assert heading in text, f"{name}: no section {heading!r}"
    section = re.split(r"^#{1,3} ", text.split(heading, 1)[1], maxsplit=1, flags=re.M)[0]
    note = re.search(r"^```\{admonition\} .+\n:class: dropdown\n(.*?)^```$", section, re.M | re.S)
    assert note and "make gpu" in note.group(1), f"{name}: {heading}: no folded note on `make gpu`"
    cells = _code_cells(section)
    assert cells and all(
        _cell_tags(c) & {"hide-input", "remove-input", "remove-cell"} for c in cells
    )
    assert any('load_result("kernels", "cuda")' in c for c in cells)


_NUMBER_WORDS = {
    w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())
}


def test_landing_page_counts_its_ways_to_run_the_book():
    """'Four ways' is followed by four bullets: the landing page keeps its own promises."""
    text = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    section = text.split("## How to run it", 1)[1].split("\n## ", 1)[0]
    word = re.search(r"\b(\w+) ways\b", section).group(1).lower()
    bullets = re.findall(r"^- \*\*", section, flags=re.M)
    assert _NUMBER_WORDS[word] == len(bullets), f"says {word} ways, lists {len(bullets)}"


def test_device_note_is_folded_by_the_sphinx_extension():
    """book/_device_note.md is an admonition of class attnbook-device; the extension adds
    'dropdown'."""
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
    failed = [re.sub(r"<[^>]+>|\s+", " ", row).strip()[:120] for row in rows if "✗" in row]
    assert not failed, f"notebooks that failed to execute: {failed}"
    assert sum("✓" in row for row in rows) >= len(NOTEBOOKS)  # text marks, see the extension


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
    """What a reader sees of a cell's outputs as text: streams, and text/plain where nothing
    richer is shown."""
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
    """No printed or code line over 100 characters, no stray reprs, no library log lines, in any
    executed notebook."""
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


_PLUMBING = [
    (re.compile(r"±\s*nan\b"), "a standard error of nan (say '1 seed')"),
    (re.compile(r"\b1 (threads|seeds|runs|layers|heads)\b"), "a singular count with a plural noun"),
]


@pytest.mark.browser
def test_no_plumbing_on_the_page(site):
    """No glue(...) call in a visible code cell, no '± nan', no '1 threads', no listing twice."""
    from bs4 import BeautifulSoup

    problems = []
    for page in _pages():
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        article = soup.select_one("article.bd-article")
        if article is None:
            continue
        rel = page.relative_to(site).as_posix()
        for cell in article.select("div.cell_input"):
            if re.search(r"\bglue\(", cell.get_text()):
                problems.append(f"{rel}: a visible cell calls glue(): {cell.get_text()[:60]!r}")
        text = article.get_text(" ")
        problems += [
            f"{rel}: {why}: {m.group(0)!r}" for rx, why in _PLUMBING for m in rx.finditer(text)
        ]
        captions = [
            c.get_text(" ", strip=True)
            for c in article.select("div.literal-block-wrapper .code-block-caption")
        ]
        problems += [
            f"{rel}: listing shown twice: {c!r}" for c, k in Counter(captions).items() if k > 1
        ]
    assert not problems, f"{len(problems)} bits of plumbing on the pages:\n" + "\n".join(
        problems[:40]
    )


# ------------------------------------------------------------ headless Chromium through Selenium
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


CHROMEDRIVER = os.environ.get(
    "CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver"
)


class Browser:
    """One headless Chromium tab driven by Selenium through Debian's chromedriver.

    ``events`` are the DevTools events Chromium logged since the last :meth:`open` (the
    ``performance`` log: Network and Page), plus the console's errors (the ``browser`` log) as
    ``Log.entryAdded`` events, so that :func:`_problems` reads one list.
    """

    def __init__(self, executable: str, driver: str, profile: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = executable
        for arg in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-extensions",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-component-update",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        # an explicit driver path: Selenium Manager never looks for (or downloads) a driver
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        self.driver.set_script_timeout(180)
        self._events: list[dict] = []

    def _drain(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            self._events.append({"method": message["method"], "params": message.get("params", {})})
        for entry in self.driver.get_log("browser"):
            if entry["level"] == "SEVERE":
                text = entry["message"]
                self._events.append(
                    {
                        "method": "Log.entryAdded",
                        "params": {"entry": {"level": "error", "text": text, "url": ""}},
                    }
                )

    @property
    def events(self) -> list[dict]:
        self._drain()
        return self._events

    def call(self, method: str, **params):
        """A DevTools command through chromedriver (e.g. ``Emulation.setDeviceMetricsOverride``)."""
        return self.driver.execute_cdp_cmd(method, params)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.events:
                if message["method"] == event:
                    return message
            time.sleep(0.1)
        raise TimeoutError(f"no {event} within {timeout} s")

    def evaluate(self, expression: str, await_promise: bool = False):
        """The value of a JavaScript expression (a returned promise is awaited by WebDriver)."""
        from selenium.common.exceptions import WebDriverException

        try:
            return self.driver.execute_script(f"return ({expression});")
        except WebDriverException as error:
            raise RuntimeError(f"JavaScript error: {error.msg}") from error

    def open(self, url: str, timeout: float = 30.0):
        self._drain()
        self._events.clear()
        self.driver.set_page_load_timeout(timeout)
        self.driver.get(url)

    def close(self):
        self.driver.quit()


@pytest.fixture(scope="module")
def browser(site):
    for tool, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(tool).exists():
            pytest.fail(
                f"no {Path(tool).name} at {tool} (Debian: apt-get install {what}; "
                "`make test` installs it)",
                pytrace=False,
            )
    server = _Server(site)
    with tempfile.TemporaryDirectory(prefix="attnbook-chromium-") as profile:
        chrome = Browser(CHROMIUM, CHROMEDRIVER, profile)
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
  const mj = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (mj) { await mj; }
  return true;
})()"""

INSPECT_JS = """(() => {
  const images = [...document.images].map(
    i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const maths = [...document.querySelectorAll('span.math, div.math')];
  const untypeset = maths.filter(m => !m.querySelector('mjx-container'))
    .map(m => m.textContent.trim().slice(0, 60));
  return {images, maths: maths.length, mjx: document.querySelectorAll('mjx-container').length,
          untypeset, title: document.title};
})()"""


def _settle(browser) -> None:
    """Wait for images and MathJax; a page that redirects (index.html) is followed to its target."""
    for attempt in range(3):
        try:
            browser.evaluate(SETTLE_JS, await_promise=True)
            return
        except RuntimeError:
            if attempt == 2:
                raise
            time.sleep(1.0)  # the page navigated away (a redirect): settle on the next one


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
                "exception: "
                + str(details.get("exception", {}).get("description", details.get("text")))[:300]
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
                f"{len(info['untypeset'])} of {info['maths']} formulas not typeset, "
                f"e.g. {info['untypeset'][0]!r}"
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
            "[...document.querySelectorAll('#search-results li a')]"
            ".map(a => a.getAttribute('href'))"
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


@pytest.mark.browser
def test_search_snippets_show_math_as_text(site, browser):
    """Snippets are cut from the page text, where math is TeX: _static/attnbook-search.js turns it
    into text first (issue 24)."""
    browser.open(browser.base + "search.html?q=softmax")
    deadline, summaries = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        summaries = browser.evaluate(
            "[...document.querySelectorAll('#search-results .context')].map(p => p.textContent)"
        )
        if len(summaries) >= 5:
            break
        time.sleep(0.2)
    assert len(summaries) >= 5, f"search for softmax gave {len(summaries)} snippets"
    raw = [t for t in summaries if re.search(r"\\[()\[\]]|\\(frac|sqrt|cdot|mathrm)", t)]
    assert not raw, f"snippets with raw TeX: {raw[:2]}"
    html_text = (
        '<div role="main"><p>traffic <span class="math notranslate nohighlight">'
        "\\(2 L n b\\, G d_k \\cdot \\sqrt{d}\\)</span> bytes</p></div>"
    )
    text = browser.evaluate(f"Search.htmlToText({json.dumps(html_text)})")
    assert " ".join(text.split()) == "traffic 2 L n b G d_k · sqrt d bytes"


# Each visible image: its content box against its natural size (1.0 = undistorted).
ASPECT_JS = """(() => [...document.images]
  .filter(i => i.naturalWidth > 0 && i.getClientRects().length).map(i => {
  const r = i.getBoundingClientRect(), s = getComputedStyle(i);
  const px = k => parseFloat(s[k]) || 0;
  const w = r.width - px('paddingLeft') - px('paddingRight')
    - px('borderLeftWidth') - px('borderRightWidth');
  const h = r.height - px('paddingTop') - px('paddingBottom')
    - px('borderTopWidth') - px('borderBottomWidth');
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
    """At a desktop (1400 px) and a phone (420 px) width, no image is stretched or squashed by more
    than 2 %."""
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
                            f"{width} px, {rel}: {image['src'].rsplit('/', 1)[-1]} shown "
                            f"{image['w']:.0f}x{image['h']:.0f} for {image['nw']}x{image['nh']}: "
                            f"{image['ratio']:.2f} of its aspect ratio"
                        )
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    print(f"{measured} images measured; worst displayed/natural aspect: {worst}")
    assert measured > len(pages), (
        f"only {measured} images measured on {len(pages)} pages at two widths"
    )
    assert not failures, f"{len(failures)} distorted images:\n" + "\n".join(failures[:40])


# Every pre element of the article (code, outputs) whose content is wider than its box.
OVERFLOW_JS = """(() => [...document.querySelectorAll('article.bd-article pre')]
  .filter(p => p.getClientRects().length && p.scrollWidth > p.clientWidth + 1)
  .map(p => ({width: p.scrollWidth, box: p.clientWidth,
              line: p.textContent.split('\\n')
                      .reduce((a, l) => l.length > a.length ? l : a, '')})))()"""


@pytest.mark.browser
def test_code_fits_its_column_at_1400px(site, browser):
    """At 1400 px no code block or printed output scrolls sideways: every line is seen whole."""
    failures, blocks = [], 0
    try:
        _viewport(browser, 1400)
        for page in _pages():
            rel = page.relative_to(site).as_posix()
            browser.open(browser.base + rel)
            blocks += browser.evaluate("document.querySelectorAll('article.bd-article pre').length")
            failures += [
                f"{rel}: {o['width']} px of text in a {o['box']} px box: {o['line'].strip()[:70]!r}"
                for o in browser.evaluate(OVERFLOW_JS)
            ]
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    print(f"{blocks} code blocks and outputs measured at 1400 px")
    assert blocks > 100, f"only {blocks} pre elements found"
    assert not failures, f"{len(failures)} blocks scroll at 1400 px:\n" + "\n".join(failures[:40])


# Each displayed SVG figure of the article: fetched, its smallest text size in SVG units (matplotlib
# writes `font-size: 9px` in the units of its viewBox), and the scale at which it is shown.
SVG_TEXT_JS = """(async () => {
  const out = [];
  const shownWidth = e => e.getBoundingClientRect().width;
  const imgs = [...document.querySelectorAll('article.bd-article img')]
    .filter(i => i.getClientRects().length && /[.]svg([?#]|$)/.test(i.currentSrc || i.src));
  for (const img of imgs) {
    const src = img.currentSrc || img.src;
    const doc = new DOMParser().parseFromString(await (await fetch(src)).text(), 'image/svg+xml');
    const box = (doc.documentElement.getAttribute('viewBox') || '').trim().split(/[\\s,]+/);
    const sizes = [...doc.querySelectorAll('text, tspan')].map(t => {
      const m = /font-size:\\s*([\\d.]+)px/.exec(t.getAttribute('style') || '')
        || /([\\d.]+)px/.exec(t.getAttribute('font-size') || '');
      return m ? parseFloat(m[1]) : NaN;
    }).filter(s => s > 0);
    const shown = img.getBoundingClientRect().width;
    out.push({src, texts: sizes.length, smallest: sizes.length ? Math.min(...sizes) : null,
              scale: box.length === 4 ? shown / parseFloat(box[2]) : null});
  }
  for (const svg of document.querySelectorAll('article.bd-article .attnbook-key-figure svg')) {
    const box = (svg.getAttribute('viewBox') || '').trim().split(/[\\s,]+/);
    const sizes = [...svg.querySelectorAll('text, tspan')]
      .map(t => parseFloat(t.style.fontSize)).filter(s => s > 0);
    out.push({src: 'inline SVG ' + (svg.closest('[id]') || {}).id, texts: sizes.length,
              smallest: sizes.length ? Math.min(...sizes) : null,
              scale: box.length === 4 ? shownWidth(svg) / parseFloat(box[2]) : null});
  }
  return out;
})()"""
MIN_TEXT_PX = 9.0


@pytest.mark.browser
def test_figure_text_is_legible_at_1400px(site, browser):
    """At 1400 px the smallest text of every SVG figure is shown at least 9 px tall: its font size
    in the SVG's units times the displayed width over the viewBox width (attnbook.plot keeps text
    as <text> elements, svg.fonttype "none", so it can be measured)."""
    failures, figures = [], 0
    try:
        _viewport(browser, 1400)
        for page in _pages():
            rel = page.relative_to(site).as_posix()
            browser.open(browser.base + rel)
            _settle(browser)
            for fig in browser.evaluate(SVG_TEXT_JS, await_promise=True):
                name = fig["src"].rsplit("/", 1)[-1]
                if not fig["texts"]:  # no text to read (or text drawn as paths: not measurable)
                    continue
                if fig["scale"] is None:
                    failures.append(f"{rel}: {name}: no viewBox, so no scale to measure text by")
                    continue
                figures += 1
                shown = fig["smallest"] * fig["scale"]
                if shown < MIN_TEXT_PX:
                    failures.append(
                        f"{rel}: {name}: smallest text {fig['smallest']:g} units shown at "
                        f"{shown:.1f} px (scale {fig['scale']:.2f})"
                    )
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
    print(f"{figures} SVG figures measured at 1400 px")
    assert figures > 20, f"only {figures} SVG figures with text found"
    assert not failures, f"{len(failures)} figures with text under {MIN_TEXT_PX:g} px:\n" + (
        "\n".join(failures[:60])
    )


SEARCH_JS = """(() => [...document.querySelectorAll('input[type=search], .search-button-field')]
  .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden'
               && !e.closest('dialog:not([open])'))
  .map(e => e.className || e.tagName))()"""

NOTE_JS = """(() => { const n = document.querySelector('.attnbook-device');
  if (!n) return null;
  const body = [...n.children]
    .filter(c => !c.classList.contains('admonition-title') && !c.matches('button'));
  return {height: n.getBoundingClientRect().height,
          hidden: body.every(c => !c.getClientRects().length
                                || getComputedStyle(c).display === 'none'
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
def test_pdf_is_a_book(site):
    """`make pdf`: site/attnbook.pdf, linked from the landing page: a title page (title, version,
    commit, date), a table of contents with a page number for every chapter, bookmarks for every
    chapter, page numbers in the footer, one title in the metadata, every chapter title in the
    text."""
    from pypdf import PdfReader

    pdf = site / "attnbook.pdf"
    assert pdf.is_file(), f"no {pdf}: run `make pdf` (make build runs it)"
    landing = site / "book" / "intro.html"
    assert any(url.endswith("attnbook.pdf") for _, url in _parse(landing).links), (
        "the landing page does not link the PDF"
    )
    reader = PdfReader(pdf)
    pages = len(reader.pages)
    raw = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    )
    text = [  # one string a page (pdftotext ends each page with a form feed), ligatures unfolded
        re.sub(r"\s+", " ", unicodedata.normalize("NFKC", page))
        for page in raw.stdout.split("\f")[:pages]
    ]
    flat = " ".join(text)
    chapters = [
        re.search(r"^# (.+)$", p.read_text(encoding="utf-8"), flags=re.M).group(1).strip()
        for p in sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md"))
    ]
    title = re.search(r"^title: (.+)$", (ROOT / "_config.yml").read_text(), flags=re.M).group(1)
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "attnbook/__init__.py").read_text())
    print(f"{pdf.name}: {pages} pages, {pdf.stat().st_size / 2**20:.1f} MiB")
    assert pages >= 10 * len(chapters), f"only {pages} pages for {len(chapters)} chapters"
    assert title in text[0] and version.group(1) in text[0] and "commit" in text[0], text[0][:300]
    assert re.search(r"\d{4}-\d{2}-\d{2}", text[0]), "no date on the title page"
    contents = " ".join(t for t in text[1:4] if "Contents" in text[1])
    for number, name in enumerate(chapters, 1):
        match = re.search(rf"{number}\. {re.escape(name)} (\d+)", contents)
        assert match, f"chapter {number} ({name}) has no numbered entry in the contents"
        start = int(match.group(1))
        assert name in text[start - 1], f"the contents send chapter {number} to page {start}"
    for i in (4, pages // 2, pages - 1):  # the footer's page number ends the page's text
        assert text[i].rstrip().endswith(str(i + 1)), f"page {i + 1} has no page number"
    outline = [item.title for item in reader.outline if not isinstance(item, list)]
    missing = [n for n, name in enumerate(chapters, 1) if not any(name in o for o in outline)]
    assert not missing, f"chapters without a bookmark: {missing}"
    assert reader.metadata.title == title, f"PDF title {reader.metadata.title!r}"
    missing = [t for t in chapters if re.sub(r"\s+", " ", t) not in flat]
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
