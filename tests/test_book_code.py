"""The book shows the code it teaches: every chapter page includes real package code
(literalinclude)."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md"))
INCLUDE = re.compile(r"```\{literalinclude\} (?P<path>\S+)\n(?P<options>(?::\w+:.*\n)*)")


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_shows_package_code(page):
    includes = list(INCLUDE.finditer(page.read_text()))
    assert includes, f"{page.name} shows no package code with literalinclude"
    for m in includes:
        path = (page.parent / m.group("path")).resolve()
        assert path.is_relative_to(ROOT / "attnbook") and path.exists(), m.group("path")
        obj = re.search(r":pyobject: (\S+)", m.group("options"))
        assert obj, f"{page.name}: include {m.group('path')} without :pyobject:"
        names = {
            n.name
            for n in ast.parse(path.read_text()).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        }
        assert obj.group(1) in names, f"{page.name}: {obj.group(1)} is not defined in {path.name}"
