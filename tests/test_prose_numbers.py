"""Figures in the prose of the chapter pages come from code (the book's measurement policy, chapter
2).

A chapter page (``book/ch*.md``) may not type a measured figure: a time, a size in bytes, a
percentage, a slope or a speed-up. Such figures are pasted in with myst-nb's ``{glue:text}`` from
the notebook that computes them (reading the stored results at build time), or live in a notebook
whose cell asserts them. Analytic constants that a notebook asserts may be typed: they are listed in
``ALLOWED`` with the cell that asserts them. A second test checks that every glue reference of a
chapter page names a notebook that exists and a key that notebook glues.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the chapter pages, the "What to remember" fragments they include, and the page that gathers them
PAGES = sorted((ROOT / "book").glob("ch*.md")) + sorted((ROOT / "book").glob("_remember_ch*.md"))
PAGES.append(ROOT / "book" / "key_numbers.md")

#: (page, exact phrase) -> where the figure is asserted. Analytic figures only, never measurements.
ALLOWED = {
    (
        "ch03_memory.md",
        "16 bytes",
    ): "per parameter of mixed-precision Adam; notebooks/03_parameters.md, "
    "cost.training_state_bytes",
    (
        "ch03_memory.md",
        "512 KiB",
    ): "notebooks/03c_checkpointing_kv_cache.md: KV cache of a 7B model per token",
    (
        "ch03_memory.md",
        "2 GiB",
    ): "notebooks/03c_checkpointing_kv_cache.md: the same cache at 4k tokens",
    (
        "ch03_memory.md",
        "64 GiB",
    ): "notebooks/03c_checkpointing_kv_cache.md: the same cache at 128k tokens",
    ("ch03_memory.md", "16 GiB"): "notebooks/03c_checkpointing_kv_cache.md: GQA-8 at 128k tokens",
    (
        "ch09_distributed.md",
        "100 Gb",
    ): "the link's name, cost.comm.INTERCONNECTS (not a measurement)",
}

_STRIP = [
    re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M),  # code fences and directives
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"\$[^$\n]+\$"),  # inline math
    re.compile(r"\{[a-z:-]+\}`[^`]*`"),  # roles: glue, doc, ref, cite, ...
    re.compile(r"`[^`]*`"),  # inline code
    re.compile(r"<!--.*?-->", re.S),  # comments
    re.compile(r"https?://\S+"),  # links
]
NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
MEASURED = re.compile(
    rf"{NUMBER}\s*(?:ms|µs|us|ns|s|sec|seconds?|minutes?|hours?|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB|PB|bytes?)\b"
    rf"|{NUMBER}\s*%"
    rf"|\bslopes?\s*(?:of\s*)?(?:about\s*)?{NUMBER}"
    rf"|{NUMBER}\s*(?:×|x\b)"
    rf"|{NUMBER}\s*times\s+(?:faster|slower|larger|smaller|more|less|fewer)",
    re.I,
)


def prose(text: str) -> str:
    """The page with code, math, roles (glue included) and links removed: what a reader sees as
    typed text."""
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    return text


def typed_figures(page: Path) -> list[str]:
    found = []
    for match in MEASURED.finditer(prose(page.read_text())):
        phrase = " ".join(match.group(0).split())
        if (page.name, phrase) not in ALLOWED:
            found.append(phrase)
    return found


def test_the_scanner_finds_typed_figures_and_ignores_glued_ones(tmp_path):
    page = tmp_path / "ch99_test.md"
    page.write_text(
        "It took 48 ms, used 71 MiB, 12 % of the time, a slope of 1.9 and ran 2.3× faster.\n"
        "Glued: {glue:text}`/notebooks/x.md::t:.1f` ms; math $O(n^2)$ and `code 5 ms`.\n"
        "```{code-cell} ipython3\nprint('3 ms')\n```\n"
    )
    assert typed_figures(page) == ["48 ms", "71 MiB", "12 %", "slope of 1.9", "2.3×"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_typed_measured_figure(page):
    found = typed_figures(page)
    assert not found, (
        f"{page.name} types figures that no code produces: {found}. Glue them from the notebook "
        f"that computes them ({{glue:text}}`/notebooks/NN_x.md::key:.2f`), or, for an analytic "
        f"constant asserted in a notebook, add it to ALLOWED in {Path(__file__).name}"
    )


GLUE_REF = re.compile(r"\{glue(?::text|:any|:md|:math)?\}`([^`]*)`")


def _glued_keys(notebook: Path) -> tuple[set, list]:
    """Keys a notebook glues: literal first arguments of glue(...), dict(key=...) literals fed to
    glue in a loop,
    and the literal prefixes of f-string keys."""
    src = notebook.read_text()
    literal = set(re.findall(r"""glue\(\s*["']([\w-]+)["']""", src))
    literal |= set(re.findall(r"\b([a-z][\w]*)=", src))  # dict(key=value, ...)
    literal |= set(re.findall(r"""["']([a-z][\w]*)["']\s*:""", src))  # {"key": value, ...}
    prefixes = re.findall(r"""glue\(\s*f["']([\w-]*)\{""", src)
    return literal, prefixes


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_glue_references_resolve(page):
    for ref in GLUE_REF.findall(page.read_text()):
        target, _, fmt = ref.rpartition(":") if "::" in ref.rpartition(":")[0] else (ref, "", "")
        assert "::" in target and fmt, (
            f"{page.name}: {ref!r}: a cross-page glue needs path::key:format"
        )
        path, key = target.split("::", 1)
        notebook = (
            (ROOT / path.lstrip("/")) if path.startswith("/") else (page.parent / path).resolve()
        )
        assert notebook.exists(), f"{page.name}: glue reference to a missing notebook {path}"
        literal, prefixes = _glued_keys(notebook)
        assert key in literal or any(key.startswith(p) for p in prefixes if p), (
            f"{page.name}: {notebook.name} glues no key {key!r}"
        )
