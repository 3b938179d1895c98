"""The notebooks a reader opens in Colab or downloads: present, fresh, readable, installing the
right attnbook.

* Every section has ``notebooks/NN_*.ipynb`` committed next to its source (the path of the site's
  Colab button) and it equals what ``make colab`` (book/_ext/colab.py) writes from the source now.
* No MyST-only syntax is left in them; each exercise is a heading, each solution collapsed; every
  code cell of the source is there, in order.
* Every source's set-up cell installs ``attnbook`` from ``_config.yml``'s repository at the
  package version, and only where it is missing.
* ``test_colab_path_in_a_fresh_environment`` (marked ``slow``, about two minutes; runs in `make
test`) runs one converted
  notebook in a new virtual environment without ``attnbook``: its set-up cell installs the package
  from this checkout (git's ``url.<base>.insteadOf`` set through ``GIT_CONFIG_*`` environment
  variables rewrites the repository URL to a local snapshot) and every cell's asserts must pass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import colab  # noqa: E402

SOURCES = colab.sources(ROOT)
SMOKE = "01_self_attention"  # the notebook the simulated Colab run executes


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_source_has_a_notebook():
    assert len(SOURCES) >= 20
    missing = [p.name for p in SOURCES if not p.with_suffix(".ipynb").is_file()]
    assert not missing, f"no committed notebook for {missing}: run `make colab`"


def test_committed_notebooks_are_fresh(tmp_path):
    assert colab.main(["--out", str(tmp_path)]) == 0
    stale = [
        p.name
        for p in SOURCES
        if not p.with_suffix(".ipynb").is_file()
        or p.with_suffix(".ipynb").read_text(encoding="utf-8")
        != (tmp_path / f"{p.stem}.ipynb").read_text(encoding="utf-8")
    ]
    assert not stale, f"stale notebooks/*.ipynb (edit the .md, then run `make colab`): {stale}"


def test_install_line_follows_the_config_and_the_version():
    import attnbook

    config = colab.book_config(ROOT)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    assert attnbook.__version__ == version
    expected = (
        f'%pip install -q "attnbook @ git+{config["repository"]["url"].rstrip("/")}@v{version}"'
    )
    for path in SOURCES:
        setup = re.search(
            r"^```\{code-cell\}[^\n]*\n(.*?)^```",
            path.read_text(encoding="utf-8"),
            flags=re.S | re.M,
        ).group(1)
        assert expected in setup, f"{path.name}: the set-up cell must read {expected!r}"
        assert 'if importlib.util.find_spec("attnbook") is None:' in setup, (
            f"{path.name}: install only where missing"
        )
        first = next(c for c in _cells(path.with_suffix(".ipynb")) if c["cell_type"] == "code")
        assert expected in _text(first), (
            f"{path.with_suffix('.ipynb').name}: the first code cell must install attnbook"
        )
        assert "jupyter" not in first["metadata"], "the set-up cell must be visible in the notebook"


MYST_ONLY = [
    r"```\{",
    r":::\{",
    r"\{cite(:\w+)?\}`",
    r"\{ref\}`",
    r"\{doc\}`",
    r"\{glue(:\w+)?\}`",
    r"^\([\w.-]+\)=\s*$",
    r"^:(label|class|tags|pyobject):",
    r"from myst_nb import",
]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_notebook_reads_as_plain_markdown(path):
    source = path.read_text(encoding="utf-8")
    cells = _cells(path.with_suffix(".ipynb"))
    text = "\n".join(_text(c) for c in cells)
    for pattern in MYST_ONLY:
        hit = re.search(pattern, text, flags=re.M)
        assert not hit, f"{path.stem}.ipynb still holds MyST syntax {hit.group(0)!r}"
    exercises = re.findall(r"^```\{exercise\}", source, flags=re.M)
    assert len(re.findall(r"^### Exercise\b", text, flags=re.M)) == len(exercises)
    solutions = len(re.findall(r"^```\{solution-start\}", source, flags=re.M))
    titled = sum(
        _text(c).startswith(colab.SOLUTION_TITLE + "\n") for c in cells if c["cell_type"] == "code"
    )
    assert text.count("<summary>Solution</summary>") + titled >= solutions
    assert text.count("<details>") == text.count("</details>")
    assert cells[0]["cell_type"] == "markdown" and _text(cells[0]).startswith("# ")
    assert colab.site_url(ROOT) in _text(cells[0]), "the first cell must link the published page"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_notebook_keeps_every_code_cell(path):
    import jupytext

    source = [c.source.strip() for c in jupytext.read(path).cells if c.cell_type == "code"]
    copy = [
        _text(c).strip().removeprefix(colab.SOLUTION_TITLE + "\n")
        for c in _cells(path.with_suffix(".ipynb"))
        if c["cell_type"] == "code"
    ]
    assert len(copy) == len(source), (
        f"{path.stem}: {len(source)} code cells in the source, {len(copy)} in the copy"
    )
    for ours, theirs in zip(source, copy):
        ours = ours.replace(colab.GLUE_IMPORT, colab.GLUE_SHIM)
        assert colab.INSTALL_RE.sub("", ours) == colab.INSTALL_RE.sub("", theirs)


def test_converter_rewrites_roles_and_solutions(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "book" / "references.bib", tmp_path / "book")
    (tmp_path / "book" / "_note.md").write_text(
        "```{admonition} A note\n:class: note\n\nSee {ref}`sec-b`.\n```\n"
    )
    (tmp_path / "book" / "other.md").write_text("# Other page\n\n(sec-b)=\n## Section B\n")
    src = tmp_path / "notebooks" / "01_x.md"
    src.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# "
        "Title\n\n"
        "```{code-cell} ipython3\n:tags: [remove-cell]\nimport importlib.util\n"
        'if importlib.util.find_spec("attnbook") is None:\n'
        '    %pip install -q "attnbook @ git+https://example.org/old/repo@v0.0.1"\n```\n\n'
        "```{include} ../book/_note.md\n```\n\nAs {cite:t}`vaswani2017attention` and "
        "{cite}`dao2022flashattention` show; "
        "{doc}`../book/other` and {doc}`the other page <../book/other>`; "
        "{glue:text}`value:.2f`.\n\n"
        '```{code-cell} ipython3\nfrom myst_nb import glue\nglue("value", 1.5, '
        "display=False)\n```\n\n"
        "```{exercise} Try it\n:label: ex-x\n\nDo it.\n```\n\n```{solution-start} ex-x\n:class: "
        "dropdown\n```\n\nFirst.\n\n"
        "```{code-cell} ipython3\n:tags: [remove-cell]\nx = "
        "1\n```\n\nSecond.\n\n```{solution-end}\n```\n\nAfter.\n"
    )
    colab.book_config.cache_clear(), colab.labels.cache_clear(), colab.bibliography.cache_clear()
    try:
        nb = colab.convert(src, tmp_path)
    finally:
        (
            colab.book_config.cache_clear(),
            colab.labels.cache_clear(),
            colab.bibliography.cache_clear(),
        )
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = [c for c in nb.cells if c.cell_type == "code"]
    site = "https://attnbook.github.io/attnbook/"
    assert (
        'git+https://github.com/attnbook/attnbook@v0.2.0"' in code[0].source
        and "jupyter" not in code[0].metadata
    )
    assert "<summary>A note</summary>" in md and f"[Section B]({site}book/other.html#sec-b)" in md
    assert "[Vaswani et al. (2017)](https://arxiv.org/abs/1706.03762)" in md
    assert "([Dao et al., 2022](" in md
    assert (
        f"[Other page]({site}book/other.html)" in md
        and f"[the other page]({site}book/other.html)" in md
    )
    assert "`value`" in md and "def glue(name, value" in code[1].source
    assert "### Exercise 1.1 (Try it)\n\nDo it." in md  # numbered as the site numbers it
    assert (
        "<summary>Solution</summary>\n\nFirst." in md
        and "<summary>Solution (continued)</summary>\n\nSecond." in md
    )
    assert "After." in md and "After." not in md.split("</details>")[-2]
    assert code[2].metadata["jupyter"] == {"outputs_hidden": True, "source_hidden": True}
    assert (
        code[2].source == f"{colab.SOLUTION_TITLE}\nx = 1"
        and code[2].metadata["cellView"] == "form"
    )


# ------------------------------------------------------------------------ the Colab path, simulated
def _snapshot(dest: Path) -> None:
    """This checkout's files (tracked and new, not ignored) as a git repository tagged
    v<version>."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    git = [
        "git",
        "-c",
        "user.name=attnbook-test",
        "-c",
        "user.email=test@localhost",
        "-c",
        "init.defaultBranch=main",
    ]
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["commit", "-q", "-m", "snapshot"],
        ["tag", f"v{colab.package_version(ROOT)}"],
    ):
        subprocess.run(git + args, cwd=dest, check=True, capture_output=True)


RUNNER = """
import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
resources = {"metadata": {"path": sys.argv[2]}}
nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources=resources).execute()
nbformat.write(nb, sys.argv[3])
"""


@pytest.mark.slow
def test_colab_path_in_a_fresh_environment(tmp_path):
    base = getattr(sys, "_base_executable", sys.executable)
    venv, repo, run = tmp_path / "venv", tmp_path / "repo", tmp_path / "run"
    repo.mkdir(), run.mkdir()
    _snapshot(repo)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # what Colab has before the first cell runs: torch (the pinned local CPU wheel), NumPy,
    # matplotlib, a kernel
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "torch==2.13.0",
            "numpy",
            "matplotlib",
            "tqdm",
            "ipykernel",
            "nbclient",
            "nbformat",
        ],
        check=True,
    )
    probe = subprocess.run(
        [py, "-c", "import importlib.util; print(importlib.util.find_spec('attnbook'))"],
        cwd=run,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "None", "the fresh environment must not see attnbook"

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "GIT_CONFIG"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The install cell fetches git+<repository.url>; git rewrites that URL to the snapshot.
    env.update(
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0=f"url.{repo.as_uri()}.insteadOf",
        GIT_CONFIG_VALUE_0=colab.repository_url(ROOT),
        ATTNBOOK_QUICK="1",
        MPLBACKEND="agg",
    )
    notebook = ROOT / "notebooks" / f"{SMOKE}.ipynb"
    out = tmp_path / "executed.ipynb"
    result = subprocess.run(
        [py, "-c", RUNNER, str(notebook), str(run), str(out)],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"the notebook failed in the fresh environment:\n{result.stderr[-4000:]}"
    )
    cells = [c for c in _cells(out) if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in cells), "not every code cell ran"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    where = subprocess.run(
        [py, "-c", "import attnbook; print(attnbook.__file__, attnbook.__version__)"],
        cwd=run,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == colab.package_version(ROOT), where


def test_exercises_are_numbered_as_on_the_site():
    """Exercise N.K: per chapter, in book order across the chapter's sections, from 1 (the site's
    numbering), with the exercise's title in parentheses."""
    numbers: dict[str, list[str]] = {}
    for path in SOURCES:
        for cell in _cells(path.with_suffix(".ipynb")):
            source = "".join(cell["source"])
            for line in source.splitlines():
                match = re.match(r"### Exercise (\d+)\.(\d+)(?: \(.+\))?$", line)
                if line.startswith("### Exercise"):
                    assert match, f"{path.name}: unnumbered exercise heading {line!r}"
                    assert int(match.group(1)) == int(path.name[:2]), f"{path.name}: {line!r}"
                    numbers.setdefault(match.group(1), []).append(int(match.group(2)))
    assert numbers, "no exercises in the Colab copies"
    for chapter, ks in numbers.items():
        assert ks == list(range(1, len(ks) + 1)), f"chapter {chapter}: exercises numbered {ks}"
