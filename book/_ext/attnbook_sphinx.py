"""Small additions to the Jupyter Book 1.x site (loaded through `sphinx.local_extensions` in
_config.yml).

* Each script is emitted once per page. With Sphinx 7.4, sphinx-thebe's inline configuration
  script (`const THEBE_JS_URL = ...`) and sphinx-togglebutton's are registered twice (once with
  filename None, once with ""), and the second THEBE copy throws "SyntaxError: Identifier
  'THEBE_JS_URL' has already been declared" on every page.
* The download-.ipynb button gives the readable notebook of book/_ext/colab.py (the copy Colab
  opens) with the outputs of the build, not the raw MyST that myst-nb executed.
* Provenance in every page's footer: the build date (UTC) and the commit, linked to the repository
  of `_config.yml`.
* The shared device note (an admonition with class `attnbook-device`) is folded into a dropdown.
* The execution table's status marks are text (✓ and ✗, in DejaVu Sans and most text fonts), not
  emoji, which render as empty boxes where no emoji font is installed.
* One search box: the theme's sidebar field (pydata-sphinx-theme would add a second one to the
  header, since sphinx-book-theme leaves `navbar_persistent` unset).
* The bibliography uses author-year labels (the style `attnbook`: "Vaswani et al., 2017"), one
  arXiv link per entry, and `$...$` in titles typeset as math.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parent))
import colab  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- scripts
def _script_key(js) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    return (
        str(getattr(js, "filename", js) or ""),
        tuple(sorted((k, str(v)) for k, v in attributes.items())),
    )


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


# ----------------------------------------------------------------------------- download .ipynb
def readable_download(app, pagename, templatename, context, doctree):
    """Replace `_sources/<page>.ipynb` (copied by the theme's launch buttons) with the readable
    copy."""
    if not context.get("ipynb_source") or not pagename.startswith("notebooks/"):
        return  # the sections have readable copies; a back-matter page (results gallery) has none
    source = Path(app.srcdir) / f"{pagename}.md"
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    if not source.is_file() or not target.is_file():
        return
    import nbformat

    readable = colab.convert(source, Path(app.srcdir))
    executed = nbformat.read(target, as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    ours = [c for c in readable.cells if c.cell_type == "code"]
    if len(ran) == len(ours):  # same cells in the same order: carry the build's outputs over
        for cell, done in zip(ours, ran):
            cell.outputs = [
                o
                for o in done.get("outputs", [])
                if o.get("output_type") != "display_data"
                or "application/papermill.record/text/plain" not in o.get("data", {})
            ]
            cell.execution_count = done.get("execution_count")
    nbformat.write(readable, target)


# ----------------------------------------------------------------------------- footer
def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> tuple[str, str, bool]:
    """(build date UTC, full commit or "", whether the work tree differs from it)."""
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git("rev-parse", "HEAD")
    dirty = bool(commit) and bool(_git("status", "--porcelain", "--untracked-files=no"))
    return date, commit, dirty


def add_provenance(app, config):
    date, commit, dirty = provenance()
    url = colab.repository_url(Path(app.srcdir))
    if commit:
        link = f'<a href="{url}/commit/{commit}"><code>{commit[:12]}</code></a>'
        made = f"commit {link}" + (" with uncommitted changes" if dirty else "")
    else:
        made = "a copy outside git (no commit)"
    line = (
        f'<p class="attnbook-provenance">Built on <span class="attnbook-build-date">{date}</span> '
        "from "
        f'{made} of <a href="{url}">{url.split("://", 1)[-1]}</a>.</p>'
    )
    options = config.html_theme_options
    options["extra_footer"] = (options.get("extra_footer") or "") + "\n" + line


def one_search_box(app, config):
    config.html_theme_options.setdefault("navbar_persistent", [])


# ----------------------------------------------------------------------------- device note
def fold_device_note(app, doctree):
    for node in doctree.findall(nodes.admonition):
        if "attnbook-device" in node["classes"] and "dropdown" not in node["classes"]:
            node["classes"].append("dropdown")


# ----------------------------------------------------------------------------- status marks
STATUS_MARKS = {"\u2705": "\u2713", "\u274c": "\u2717"}  # ✅ -> ✓, ❌ -> ✗


def text_status_marks(app, doctree, docname):
    """myst-nb's execution table marks runs with emoji; write them as text marks."""
    for node in list(doctree.findall(nodes.Text)):
        text = str(node)
        if any(mark in text for mark in STATUS_MARKS):
            for emoji, mark in STATUS_MARKS.items():
                text = text.replace(emoji, mark)
            node.parent.replace(node, nodes.Text(text))


# ----------------------------------------------------------------------------- bibliography
def _register_bibliography_style():
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.plain import Style as Plain
    from pybtex.style.labels import BaseLabelStyle
    from pybtex.style.template import optional, sentence

    class AuthorYearLabels(BaseLabelStyle):
        """ "Vaswani et al., 2017"; a, b, ... after the year where two entries would share a
        label."""

        def format_labels(self, sorted_entries):
            sorted_entries = list(sorted_entries)
            labels = ["{}, {}".format(*colab.author_year(e)) for e in sorted_entries]
            counts, seen = Counter(labels), Counter()
            for label in labels:
                if counts[label] > 1:
                    seen[label] += 1
                    yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
                else:
                    yield label

    class Style(Plain):
        """pybtex's plain style, author-year labels, one link per paper."""

        default_label_style = "attnbook-author-year"

        def format_web_refs(self, e):
            url, eprint = e.fields.get("url", ""), e.fields.get("eprint", "")
            if eprint and eprint in url:  # the same arXiv page twice: keep "arXiv:NNNN"
                return sentence[optional[self.format_eprint(e)], optional[self.format_doi(e)]]
            return super().format_web_refs(e)

    register_plugin("pybtex.style.labels", "attnbook-author-year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "attnbook", Style)


def typeset_math_in_citations(app, doctree, docname):
    """`$O(n^2)$` in a bibliography entry's title becomes a math node (MathJax typesets it)."""
    for citation in list(doctree.findall(nodes.citation)):
        for text in list(citation.findall(nodes.Text)):
            parts = re.split(r"\$([^$]+)\$", str(text))
            if len(parts) == 1 or isinstance(text.parent, (nodes.literal, nodes.math)):
                continue
            new = [
                nodes.math(part, part) if i % 2 else nodes.Text(part)
                for i, part in enumerate(parts)
                if part
            ]
            text.parent.replace(text, new)
            # the page must load MathJax: Sphinx decided that when it read the page, before the
            # bibliography
            app.env.get_domain("math").data["has_equations"][docname] = True


# ----------------------------------------------------------------------------- set-up
def setup(app):
    _register_bibliography_style()
    app.connect("config-inited", add_provenance)
    app.connect("config-inited", one_search_box)
    app.connect("doctree-read", fold_device_note)
    app.connect("doctree-resolved", typeset_math_in_citations)
    app.connect("doctree-resolved", text_status_marks)
    app.connect(
        "html-page-context", readable_download, priority=600
    )  # after the theme's copy (501)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
