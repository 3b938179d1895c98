"""Readable notebooks for Colab, Jupyter and the site's download button, from the MyST sources.

`make colab` (``python book/_ext/colab.py``) writes ``notebooks/NN_*.ipynb`` next to each Jupytext
source ``notebooks/NN_*.md``: the path the site's Colab button opens in the repository. In those
copies the MyST-only syntax reads as plain notebook Markdown:

* ``{include}`` fragments are inlined (an admonition becomes a collapsed ``<details>``);
* each ``{exercise}`` is a headed section, its solution a collapsed ``<details>``; a solution's code
  cells still run, their source collapsed (a ``#@title`` form in Colab, ``source_hidden`` in
  Jupyter);
* ``{cite}`` becomes author-year text linked to the paper, ``{ref}``/``{doc}`` links to the
  published page, ``{literalinclude}`` the real function's source, ``{glue:text}`` the glued name;
* Jupyter Book's cell tags (``remove-cell``, ``hide-input``...) become Jupyter's collapsed-source
  metadata, except on the set-up cell, which a reader must see because it installs ``attnbook``.

The set-up cell's install line is rebuilt from ``_config.yml`` (``repository.url``) and the package
version (``pyproject.toml``), so both live in one place. ``python book/_ext/colab.py --check`` exits
non-zero when a committed copy is stale (tests/test_colab.py does the same).
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
INSTALL_RE = re.compile(r'^(\s*)%pip install -q "attnbook @ git\+(\S+?)@v([\w.]+)"\s*$', re.M)
GLUE_IMPORT = "from myst_nb import glue"
GLUE_SHIM = (
    "def glue(name, value, display=True):  # the book's myst_nb.glue; here it prints the value\n"
    '    print(name, "=", value)'
)
SOLUTION_TITLE = "#@title Solution (the code is collapsed: double-click or expand to read it)"
_HIDING_TAGS = {
    "remove-cell": ("source_hidden", "outputs_hidden"),
    "hide-cell": ("source_hidden", "outputs_hidden"),
    "remove-input": ("source_hidden",),
    "hide-input": ("source_hidden",),
    "remove-output": ("outputs_hidden",),
    "hide-output": ("outputs_hidden",),
}


# ----------------------------------------------------------------------------- settings
@functools.cache
def book_config(root: Path = ROOT) -> dict:
    import yaml

    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def repository_url(root: Path = ROOT) -> str:
    """The one repository URL (``_config.yml`` ``repository.url``), without a trailing slash."""
    return book_config(root)["repository"]["url"].rstrip("/")


def package_version(root: Path = ROOT) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]


def site_url(root: Path = ROOT) -> str:
    """The published site: ``html.baseurl`` if set, else GitHub Pages of the repository."""
    base = (book_config(root).get("html") or {}).get("baseurl")
    if base:
        return base.rstrip("/") + "/"
    org, repo = repository_url(root).split("/")[-2:]
    return f"https://{org}.github.io/{repo}/"


def install_spec(root: Path = ROOT) -> str:
    """What the set-up cell installs: ``attnbook`` from the repository at the book's version tag."""
    return f"attnbook @ git+{repository_url(root)}@v{package_version(root)}"


def install_line(root: Path = ROOT) -> str:
    return f'    %pip install -q "{install_spec(root)}"'


# ----------------------------------------------------------------------------- the book's labels
def _title(text: str) -> str:
    match = re.search(r"^# (.+)$", text, flags=re.M)
    return match.group(1).strip() if match else ""


@functools.cache
def labels(root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """``{label: (docname, title)}`` for every ``(label)=`` target and every document."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted((root / "book").glob("*.md")) + sorted((root / "notebooks").glob("*.md")):
        docname = path.relative_to(root).with_suffix("").as_posix()
        text = path.read_text(encoding="utf-8")
        found["doc:" + docname] = (docname, _title(text))
        for match in re.finditer(r"^\(([\w.-]+)\)=\s*\n+(#+ (.+))?", text, flags=re.M):
            found[match.group(1)] = (docname, (match.group(3) or match.group(1)).strip())
    return found


@functools.cache
def bibliography(root: Path = ROOT):
    from pybtex.database import parse_file

    return parse_file(str(root / "book" / "references.bib")).entries


def _latex_text(value: str) -> str:
    from pybtex.richtext import Text

    return Text.from_latex(value).render_as("text")


def author_year(entry) -> tuple[str, str]:
    """``("Vaswani et al.", "2017")``: the book's author-year label parts for a pybtex entry."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_latex_text(" ".join(p.prelast_names + p.last_names)) for p in people]
    if not names:
        authors = _latex_text(entry.fields.get("institution", entry.fields.get("title", entry.key)))
    elif len(names) == 1:
        authors = names[0]
    elif len(names) == 2:
        authors = f"{names[0]} and {names[1]}"
    else:
        authors = f"{names[0]} et al."
    return authors, entry.fields.get("year", "n.d.")


def paper_url(entry) -> str | None:
    fields = entry.fields
    if fields.get("url"):
        return fields["url"]
    if fields.get("eprint") and fields.get("archivePrefix", "arXiv").lower() == "arxiv":
        return f"https://arxiv.org/abs/{fields['eprint']}"
    if fields.get("doi"):
        return f"https://doi.org/{fields['doi']}"
    return None


# ----------------------------------------------------------------------------- Markdown rewriting
def _page_url(root: Path, docname: str, anchor: str = "") -> str:
    return f"{site_url(root)}{docname}.html" + (f"#{anchor}" if anchor else "")


def _resolve_doc(root: Path, current: str, target: str) -> str:
    base = Path(current).parent
    return (base / target).as_posix() if not target.startswith("/") else target.lstrip("/")


def _split_role(content: str) -> tuple[str | None, str]:
    match = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, flags=re.S)
    return (match.group(1), match.group(2)) if match else (None, content)


def _norm(docname: str) -> str:
    parts: list[str] = []
    for part in docname.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _rewrite_roles(text: str, root: Path, docname: str) -> str:
    known = labels(root)
    entries = bibliography(root)

    def cite(match):
        kind, keys = match.group(1), [k.strip() for k in match.group(2).split(",")]
        parts = []
        for key in keys:
            if key not in entries:
                raise KeyError(f"{docname}: unknown citation key {key!r}")
            authors, year = author_year(entries[key])
            url = paper_url(entries[key])
            label = f"{authors} ({year})" if kind == ":t" else f"{authors}, {year}"
            parts.append(f"[{label}]({url})" if url else label)
        return "; ".join(parts) if kind == ":t" else "(" + "; ".join(parts) + ")"

    def ref(match):
        title, label = _split_role(match.group(1))
        if label not in known:
            raise KeyError(f"{docname}: unknown reference {label!r}")
        target, heading = known[label]
        return f"[{title or heading}]({_page_url(root, target, label)})"

    def doc(match):
        title, target = _split_role(match.group(1))
        target = _norm(_resolve_doc(root, docname, target))
        if "doc:" + target not in known:
            raise KeyError(f"{docname}: unknown document {target!r}")
        return f"[{title or known['doc:' + target][1]}]({_page_url(root, target)})"

    text = re.sub(r"\{cite(:t|:p)?\}`([^`]+)`", cite, text)
    text = re.sub(r"\{ref\}`([^`]+)`", ref, text)
    text = re.sub(r"\{doc\}`([^`]+)`", doc, text)
    text = re.sub(r"\{glue(?::text)?\}`([\w.-]+)(?::[^`]*)?`", r"`\1`", text)
    text = re.sub(r"\{(?:math|eq)\}`([^`]+)`", r"$\1$", text)
    return text


_FENCE = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}[ \t]*(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ "
    r"\t]*$\n?",
    flags=re.S | re.M,
)


def _options(body: str) -> tuple[dict[str, str], str]:
    options, lines = {}, body.split("\n")
    while lines and re.match(r"^:[\w-]+:", lines[0]):
        key, _, value = lines.pop(0)[1:].partition(":")
        options[key] = value.strip()
    return options, "\n".join(lines).strip("\n")


def _pyobject(path: Path, name: str) -> str:
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.name == name
        ):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return "\n".join(source.splitlines()[start - 1 : node.end_lineno])
    raise KeyError(f"{path}: no object {name!r} to include")


class _State:
    """Where a solution opened in one cell closes in a later one, and the next exercise's number."""

    def __init__(self, chapter: int | None = None, exercises_before: int = 0):
        self.in_solution = False
        self.parts = 0  # <details> blocks written for the open solution
        self.chapter = chapter
        self.exercise = exercises_before  # exercises of the chapter's earlier pages

    def next_exercise(self) -> str:
        """ "4.3": the number the site gives the next exercise (chapter, then its place in the
        chapter's pages in book order), or "" outside a numbered chapter."""
        self.exercise += 1
        return "" if self.chapter is None else f"{self.chapter}.{self.exercise}"


_EXERCISE = re.compile(r"^```\{exercise\}", flags=re.M)


def exercise_numbering(path: Path, root: Path = ROOT) -> tuple[int | None, int]:
    """(chapter, exercises on the chapter's pages before ``path``) for a section ``notebooks/NN*``:
    the site numbers exercises per chapter, across the chapter page and its sections in order."""
    match = re.match(r"(\d\d)", path.name)
    if match is None:
        return None, 0
    chapter = int(match.group(1))
    pages = sorted((root / "book").glob(f"ch{match.group(1)}_*.md")) + sources(root)
    pages = [p for p in pages if p.parent.name == "book" or p.name.startswith(match.group(1))]
    before = 0
    for page in pages:
        if page.resolve() == Path(path).resolve():
            break
        before += len(_EXERCISE.findall(page.read_text(encoding="utf-8")))
    return chapter, before


def _details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body.strip()}\n\n</details>"


def _rewrite_markdown(text: str, root: Path, path: Path, state: _State) -> str:
    docname = path.relative_to(root).with_suffix("").as_posix()
    opened, parts = state.in_solution, state.parts

    def directive(match):
        name, arg = match.group("name"), match.group("arg").strip()
        options, body = _options(match.group("body"))
        if name == "include":
            included = (path.parent / arg).resolve()
            return (
                _rewrite_markdown(included.read_text(encoding="utf-8"), root, included, _State())
                + "\n"
            )
        if name == "literalinclude":
            source = (path.parent / arg).resolve()
            code = (
                _pyobject(source, options["pyobject"])
                if "pyobject" in options
                else source.read_text(encoding="utf-8")
            )
            caption = f"*{options['caption']}*\n\n" if options.get("caption") else ""
            return f"{caption}```{options.get('language', 'python')}\n{code}\n```\n"
        if name == "exercise":
            number = state.next_exercise()
            heading = f"Exercise {number}".rstrip() + (f" ({arg})" if arg else "")
            return f"### {heading}\n\n{_convert_blocks(body)}\n"
        if name == "solution":
            return _details("Solution", _convert_blocks(body)) + "\n"
        if name == "solution-start":
            state.in_solution, state.parts = True, 0
            return "\x00SOLUTION-START\x00"
        if name == "solution-end":
            state.in_solution = False
            return "\x00SOLUTION-END\x00"
        if name in (
            "admonition",
            "note",
            "tip",
            "warning",
            "important",
            "caution",
            "hint",
            "seealso",
        ):
            title = arg or name.capitalize()
            if name == "admonition" or "dropdown" in options.get("class", ""):
                return _details(title, _convert_blocks(body)) + "\n"
            return (
                "\n".join(
                    f"> {line}" if line else ">"
                    for line in [f"**{title}.**", "", *_convert_blocks(body).split("\n")]
                )
                + "\n"
            )
        if name == "math":
            return f"$$\n{body}\n$$\n"
        if name == "figure":
            return f"![{_convert_blocks(body)}]({arg})\n"
        raise ValueError(f"{path.name}: no plain-notebook form for the {{{name}}} directive")

    def _convert_blocks(block: str) -> str:
        return _FENCE.sub(directive, block)

    text = _convert_blocks(text)
    text = re.sub(
        r"^\([\w.-]+\)=[ \t]*\n", "", text, flags=re.M
    )  # targets: links point to the site
    text = re.sub(r"^%[^\n]*\n?", "", text, flags=re.M)  # MyST comments
    text = _rewrite_roles(text, root, docname)
    # Solutions: a <details> per Markdown cell, since HTML cannot span cells.
    pieces = re.split(r"\x00(SOLUTION-START|SOLUTION-END)\x00", text)
    out, inside = [], opened
    for i, piece in enumerate(pieces):
        if i % 2:
            inside = piece == "SOLUTION-START"
            parts = 0 if inside else parts
            continue
        if inside and piece.strip():
            out.append(_details("Solution" if parts == 0 else "Solution (continued)", piece))
            parts += 1
        else:
            out.append(piece.strip("\n"))
    state.parts = parts
    return re.sub(r"\n{3,}", "\n\n", "\n\n".join(p for p in out if p.strip())).strip() + "\n"


def _rewrite_code(source: str, root: Path, setup: bool) -> str:
    if setup:
        source, count = INSTALL_RE.subn(install_line(root), source)
        if count != 1:
            raise ValueError(
                'the set-up cell must hold one `%pip install -q "attnbook @ git+URL@vX"` line'
            )
    return source.replace(GLUE_IMPORT, GLUE_SHIM)


# ----------------------------------------------------------------------------- notebooks
def convert(path: Path, root: Path = ROOT):
    """The readable notebook (nbformat v4, no outputs) of one Jupytext MyST source."""
    import jupytext
    import nbformat

    path = Path(path).resolve()
    docname = path.relative_to(root).with_suffix("").as_posix()
    source = jupytext.read(path)
    state, cells, setup_done = _State(*exercise_numbering(path, root)), [], False
    for cell in source.cells:
        if cell.cell_type == "markdown":
            text = _rewrite_markdown(cell.source, root, path, state)
            if text.strip():
                cells.append(nbformat.v4.new_markdown_cell(text.rstrip("\n")))
            continue
        if cell.cell_type != "code":
            continue
        setup = not setup_done and "%pip install" in cell.source
        setup_done = setup_done or setup
        tags = [t for t in cell.metadata.get("tags", []) if t not in _HIDING_TAGS]
        hidden = (
            set()
            if setup
            else {flag for t in cell.metadata.get("tags", []) for flag in _HIDING_TAGS.get(t, ())}
        )
        code = _rewrite_code(cell.source, root, setup).rstrip("\n")
        if state.in_solution:  # collapsed: Colab shows the form title, Jupyter a collapsed source
            hidden.add("source_hidden")
            code = f"{SOLUTION_TITLE}\n{code}"
        new = nbformat.v4.new_code_cell(code)
        if state.in_solution:
            new.metadata["cellView"] = "form"
        if tags:
            new.metadata["tags"] = tags
        if hidden:
            new.metadata["jupyter"] = {flag: True for flag in sorted(hidden)}
        cells.append(new)
    if not setup_done:
        raise ValueError(f"{path.name}: no set-up cell with `%pip install`")
    title = labels(root)["doc:" + docname][1]
    header = (
        f"*A section of [{book_config(root)['title']}]({site_url(root)}), "
        f"published at [{docname}.html]({_page_url(root, docname)}). "
        f"Generated from [`{docname}.md`]({repository_url(root)}/blob/"
        f"{book_config(root)['repository'].get('branch', 'main')}/{docname}.md) by `make colab`: "
        f"edit the source, not this copy.*"
    )
    first = cells[0]
    if first.cell_type == "markdown" and first.source.startswith("# "):
        first.source = first.source.rstrip("\n") + "\n\n" + header
    else:
        cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}\n\n{header}"))
    for i, cell in enumerate(cells):
        cell["id"] = f"{path.stem[:40]}-{i:03d}"
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
    }
    return notebook


def render(path: Path, root: Path = ROOT) -> str:
    import nbformat

    return nbformat.writes(convert(path, root)) + "\n"


def sources(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9]*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="folder to write into (default: next to each source)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; fail when a committed copy is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for path in sources():
        text = render(path)
        target = (args.out or path.parent) / f"{path.stem}.ipynb"
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(
                    target.relative_to(ROOT).as_posix()
                    if target.is_relative_to(ROOT)
                    else str(target)
                )
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print("stale (run `make colab`):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
