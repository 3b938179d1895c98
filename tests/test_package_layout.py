"""The package's layout: cheap import, no cycles, layering, function size (issue 23)."""

import ast
import os
import pathlib
import re
import subprocess
import sys

import attnbook

PACKAGE = pathlib.Path(attnbook.__file__).parent
ROOT = PACKAGE.parent

#: Functions allowed over MAX_LINES, each with its reason.
LONG_FUNCTIONS = {
    # a Triton kernel body is one unit: splitting it would add launches or device functions
    # that change what the kernel computes on chip
    "attnbook/kernels/flash_triton.py:flash_bwd_dkdv_kernel",
}
MAX_LINES = 60


def test_experiments_do_not_import_bench():
    """experiments/ sits below bench/: a suite may run an experiment, never the reverse."""
    bench_import = re.compile(r"^\s*(from attnbook\.bench\b|import attnbook\.bench\b)", re.M)
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((PACKAGE / "experiments").glob("*.py"))
        if bench_import.search(path.read_text())
    ]
    assert not offenders, f"experiments/ imports bench/ in {offenders}"


def _long_functions() -> dict[str, int]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    found[f"{rel}:{node.name}"] = lines
    return found


def test_no_function_over_sixty_lines():
    too_long = {name: n for name, n in _long_functions().items() if name not in LONG_FUNCTIONS}
    assert not too_long, f"functions over {MAX_LINES} lines (split them): {too_long}"


def test_allow_list_names_only_long_functions():
    """An entry that is no longer long (or no longer exists) is removed from the allow-list."""
    stale = LONG_FUNCTIONS - set(_long_functions())
    assert not stale, f"allow-listed but not over {MAX_LINES} lines: {sorted(stale)}"


def _run(code: str, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_import_is_cheap_and_has_no_side_effects():
    out = _run(
        "import sys, attnbook; print(sorted(m for m in sys.modules if m.startswith(('matplotlib', "
        "'attnbook.bench', 'attnbook.mechanisms', 'attnbook.models', 'attnbook.experiments'))))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_bad_quick_value_is_reported_when_used_not_at_import():
    out = _run("import attnbook\nprint('imported')\nattnbook.config.QUICK", ATTNBOOK_QUICK="maybe")
    assert "imported" in out.stdout and out.returncode != 0
    assert "ATTNBOOK_QUICK must be '0'" in out.stderr and "'maybe'" in out.stderr


def _imports(path: pathlib.Path) -> set[str]:
    """attnbook modules imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attnbook"):
            found.add(node.module)
            for alias in node.names:  # "from attnbook.x import y" where y is a module
                sub = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() or (
                    PACKAGE.parent / sub.replace(".", "/")
                ).is_dir():
                    found.add(sub)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attnbook")}
    return found


def test_no_import_cycles():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        modules[name] = path
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle through the package
    graph = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_at_most_nine_files_at_the_top_and_no_registration_side_effects():
    # __init__, __main__, checks, config, measure, plot, reference, registry, results
    assert len(list(PACKAGE.glob("*.py"))) <= 9
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "@register" not in text and "register_mixer(" not in text, path


def test_the_query_key_length_guard_is_written_once():
    """Every mechanism and the registry call checks.check_same_length instead of its own copy."""
    copies = [
        path.relative_to(ROOT).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        if "as many queries as keys" in path.read_text()
    ]
    assert copies == ["attnbook/checks.py"], copies
