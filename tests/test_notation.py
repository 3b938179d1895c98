"""Notation: every symbol a chapter uses in display math is defined on book/notation.md.

A symbol is defined when it appears in the first column of a table row of notation.md
(`| $d_k$ | ... |`). From the display math of every chapter page (book/chNN_*.md) and every
section (notebooks/*.md) -- `$$...$$`, ```{math}``` blocks and amsmath environments -- the check
extracts, after dropping text-like commands (\\operatorname{...}, \\text{...}, ...):

- single Latin letters and Greek letters (\\alpha, \\Omega, ...),
- blackboard and calligraphic symbols (\\mathbb{R}, \\mathcal{O}),
- widths d_{...}: a subscripted d must be one of the widths on the notation page (d_k, d_{ff}, ...),
  so that d_{model}, d_{head}, d_h and friends do not creep in beside d and d_k.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTATION = ROOT / "book" / "notation.md"

GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "pi",
    "varpi",
    "rho",
    "varrho",
    "sigma",
    "varsigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "ell",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Pi",
    "Sigma",
    "Upsilon",
    "Phi",
    "Psi",
    "Omega",
}
# Commands whose braced argument is words, not symbols.
TEXTLIKE = (
    r"operatorname|text|textrm|textit|textbf|texttt|mathrm|mathit|mathsf|mathtt|mbox|label|tag|"
    r"ref|eqref|begin|end|hspace|vspace|quad"
)
DISPLAY = re.compile(
    r"\$\$(?P<dollar>.+?)\$\$"
    r"|^```\{math\}[^\n]*\n(?P<directive>.*?)^```"
    r"|\\begin\{(?P<env>equation|align|gather|multline|eqnarray)\*?\}(?P<ams>.*?)\\end\{(?P=env)\*?\}",
    re.S | re.M,
)
CODE_FENCE = re.compile(r"^```\{code-cell\}.*?^```", re.S | re.M)


def symbols(tex: str) -> set[str]:
    """Symbols of a LaTeX fragment: Latin letters, \\greek, \\mathbb{X}, \\mathcal{X}, d_{sub}
    widths."""
    tex = re.sub(r"\\(?:" + TEXTLIKE + r")\*?\s*\{[^{}]*\}", " ", tex)
    found: set[str] = set()
    for sub in re.findall(r"(?<![A-Za-z\\])d_(\{[^{}]*\}|\\[A-Za-z]+|[A-Za-z0-9])", tex):
        found.add("d_" + sub.strip("{}").replace(" ", ""))
    for font, letter in re.findall(
        r"\\(mathbb|mathcal|mathbf|boldsymbol)\s*\{\s*([A-Za-z])\s*\}", tex
    ):
        if font in ("mathbb", "mathcal"):
            found.add(f"\\{font}{{{letter}}}")
        else:  # bold is the same symbol as plain
            found.add(letter)
    tex = re.sub(r"\\(?:mathbb|mathcal|mathbf|boldsymbol)\s*\{[^{}]*\}", " ", tex)
    for command in re.findall(r"\\([A-Za-z]+)", tex):
        if command in GREEK:
            found.add("\\" + command)
    tex = re.sub(r"\\[A-Za-z]+", " ", tex)
    found.update(re.findall(r"[A-Za-z]", tex))
    return found


def display_math(text: str) -> list[str]:
    """The display-math blocks of a MyST page (code cells removed first)."""
    text = CODE_FENCE.sub("", text)
    blocks = []
    for m in DISPLAY.finditer(text):
        if m.group("directive") is not None:  # drop directive options such as ":label: eq-x"
            blocks.append(re.sub(r"^:[a-z-]+:.*$", "", m.group("directive"), flags=re.M))
        else:
            blocks.append(m.group("dollar") or m.group("ams") or "")
    return blocks


def defined_symbols() -> set[str]:
    """Symbols in the first column of every table row of notation.md."""
    defined: set[str] = set()
    for line in NOTATION.read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            for math in re.findall(r"\$([^$]+)\$", cells[1]):
                defined |= symbols(math)
    return defined


def chapter_sources() -> list[Path]:
    return sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md")) + sorted(
        (ROOT / "notebooks").glob("[0-9]*.md")
    )


def test_symbol_extraction():
    tex = (
        r"\operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V"
        r" + \alpha\, d_{ff} \in \mathbb{R}^{n}"
    )
    assert symbols(tex) == {
        "Q",
        "K",
        "V",
        "d_k",
        "d",
        "k",
        "\\alpha",
        "d_ff",
        "f",
        "\\mathbb{R}",
        "n",
    }
    assert symbols(r"\text{Q, K, V projections:}\quad 6nd^2") == {"n", "d"}


def test_display_math_blocks_are_found():
    text = (
        "a $x$ b\n$$\nQ K\n$$\n```{math}\n:label: eq\n\\zeta\n```\n"
        "```{code-cell} ipython3\nx = '$$Z$$'\n```\n"
    )
    blocks = display_math(text)
    assert [symbols(b) for b in blocks] == [{"Q", "K"}, {"\\zeta"}]


def test_notation_page_defines_the_book_conventions():
    defined = defined_symbols()
    for symbol in [
        "n",
        "d",
        "d_k",
        "H",
        "L",
        "b",
        "d_ff",
        "V",
        "t",
        "k",
        "r",
        "w",
        "s",
        "E",
        "N",
        "D",
        "C",
    ]:
        assert symbol in defined, f"notation.md must define {symbol}"


def test_an_undefined_symbol_is_flagged():
    defined = defined_symbols()
    assert not {"\\zeta", "\\Xi", "d_head", "\\mathcal{Z}"} & defined
    assert symbols(r"\zeta + d_{head}") - defined == {"\\zeta", "d_head"}


@pytest.mark.parametrize("path", chapter_sources(), ids=lambda p: p.name)
def test_display_math_uses_defined_symbols(path):
    defined = defined_symbols()
    undefined: dict[str, str] = {}
    for block in display_math(path.read_text(encoding="utf-8")):
        for symbol in sorted(symbols(block) - defined):
            undefined.setdefault(symbol, block.strip()[:80])
    assert not undefined, (
        f"{path.relative_to(ROOT)} uses symbols that book/notation.md does not define "
        "(add a row there, or use the book's symbol):\n"
        + "\n".join(f"  {s}   in: {ctx}" for s, ctx in undefined.items())
    )
