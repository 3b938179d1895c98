"""The registry, the package layout and the bad inputs found in review (issue: one house for attnbook)."""

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import cost, measure, reference
from attnbook.checks import rel_error
from attnbook.mechanisms.dense import MultiHeadSelfAttention
from attnbook.registry import METHODS, Method, add, decode, method_info, methods, mixer_names

PACKAGE = pathlib.Path(attnbook.__file__).parent


def _qkv(B, H, N, D, seed=0, M=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    M = N if M is None else M
    return (
        torch.randn(B, H, N, D, generator=g, dtype=dtype),
        torch.randn(B, H, M, D, generator=g, dtype=dtype),
        torch.randn(B, H, M, D, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("method", methods(device="cpu"))
@pytest.mark.parametrize("causal", [False, True])
def test_every_method_returns_the_right_shape_and_exact_ones_equal_dense(method, causal):
    info = method_info(method)
    q, k, v = _qkv(2, 2, 70, 8, seed=len(method))  # N >= linformer's default k = 64
    if (info.causal == "causal" and not causal) or (info.causal == "noncausal" and causal):
        with pytest.raises(ValueError, match="causal"):
            attnbook.attention(q, k, v, method=method, causal=causal)
        return
    out = attnbook.attention(q, k, v, method=method, causal=causal)
    assert tuple(out.shape) == (2, 2, 70, 8)  # shapes first
    if info.exact:
        ref = reference.attention(*(x.double().numpy() for x in (q, k, v)), causal=causal)
        assert rel_error(out, ref) < 1e-5


@pytest.mark.parametrize("method", methods(exact=True, device="cpu"))
def test_every_exact_method_refuses_causal_with_more_keys_than_queries(method):
    q, k, v = _qkv(1, 2, 8, 4, M=12)
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        attnbook.attention(q, k, v, method=method, causal=True)
    out = attnbook.attention(
        q, k, v, method=method, causal=False
    )  # non-causal cross-attention is fine
    assert rel_error(out, reference.attention(*(x.double().numpy() for x in (q, k, v)))) < 1e-5


@settings(max_examples=15, deadline=None)
@given(
    method=st.sampled_from([m for m in methods() if method_info(m).step_target is not None]),
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 24),
    D=st.integers(1, 8),
    seed=st.integers(0, 999),
)
def test_decode_equals_the_parallel_causal_form(method, B, H, N, D, seed):
    q, k, v = _qkv(B, H, N, D, seed=seed, dtype=torch.float64)
    parallel = attnbook.attention(q, k, v, method=method, causal=True)
    stepped = decode(method, q, k, v)
    assert stepped.shape == parallel.shape
    assert rel_error(stepped, parallel) < 1e-10


@pytest.mark.parametrize(
    "method", [m for m in methods() if method_info(m).prefill_target is not None]
)
def test_prefill_then_step_continues_the_sequence(method):
    info = method_info(method)
    q, k, v = _qkv(1, 2, 10, 4, seed=3, dtype=torch.float64)
    state = info.prefill(k[:, :, :9], v[:, :, :9])
    _, o = info.step(state, q[:, :, 9], k[:, :, 9], v[:, :, 9])
    full = attnbook.attention(q, k, v, method=method, causal=True)
    assert o.shape == full[:, :, 9].shape and rel_error(o, full[:, :, 9]) < 1e-10


def test_decode_refuses_methods_without_a_step():
    q, k, v = _qkv(1, 1, 4, 2)
    with pytest.raises(ValueError, match="no recurrent step"):
        decode("performer", q, k, v)


def test_lists_come_from_the_records():
    assert methods(family="sparse") == ["sliding_window", "strided", "longformer", "block_sparse"]
    assert "sdpa" not in methods(variants=False) and "dense" in methods(variants=False)
    assert "linformer" not in methods(causal=True) and "retention" not in methods(causal=False)
    assert mixer_names()[-2:] == ["generative", "generative+avg"]
    assert set(methods()) - set(methods(device="cpu")) == {"flash_triton", "linear_triton"}
    for name in methods():
        info = method_info(name)
        assert callable(info.fn) and info.doc and info.causal in ("both", "causal", "noncausal")


def test_a_reader_can_add_a_method():
    def doubled(q, k, v, *, causal=False):
        return 2 * attnbook.attention(q, k, v, causal=causal)

    add(Method("doubled", doubled, "01", "twice dense attention"))
    try:
        q, k, v = _qkv(1, 1, 5, 3)
        torch.testing.assert_close(
            attnbook.attention(q, k, v, method="doubled"), 2 * attnbook.attention(q, k, v)
        )
        with pytest.raises(ValueError, match="already registered"):
            add(Method("dense", doubled, "01", "clash"))
    finally:
        METHODS.pop("doubled")


# --------------------------------------------------------------------------- bad input found in review
def test_elementwise_order_zero_non_causal_keeps_every_query():
    q, k, v = _qkv(2, 2, 7, 4)
    out = attnbook.attention(q, k, v, method="elementwise", order=0)
    assert out.shape == (2, 2, 7, 4)
    mha = MultiHeadSelfAttention(8, 2, method="elementwise", causal=False, order=0)
    assert mha(torch.randn(1, 5, 8)).shape == (1, 5, 8)


def test_reference_attention_refuses_mismatched_batch_or_heads():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 5, 4))
    with pytest.raises(ValueError, match="leading"):
        reference.attention(q, rng.standard_normal((1, 3, 5, 4)), rng.standard_normal((1, 3, 5, 4)))
    with pytest.raises(ValueError, match="leading"):
        reference.attention(q, q, rng.standard_normal((2, 1, 5, 4)))


def test_cost_formulas_are_exact_with_numpy_integers():
    assert cost.mha_flops(np.int64(10**9), np.int64(10**6), 8) == cost.mha_flops(10**9, 10**6, 8)
    assert cost.mha_flops(np.int64(10**9), np.int64(10**6), 8) > 4e24
    assert cost.gpt_params(np.int64(96), np.int64(12288), np.int64(50257)) == cost.gpt_params(
        96, 12288, 50257
    )


def test_fit_loglog_refuses_nan():
    with pytest.raises(ValueError, match="finite"):
        measure.fit_loglog([1, 2, 4], [1.0, np.nan, 4.0])


@pytest.mark.parametrize("method", ["performer", "elementwise", "linear"])
def test_large_inputs_give_a_named_error_not_nan(method):
    q, k, v = _qkv(1, 2, 64, 16, seed=1)
    try:
        out = attnbook.attention(q * 100, k * 100, v, method=method, causal=True)
    except FloatingPointError as err:
        assert method in str(err) and "max |q|" in str(err)
    else:
        assert torch.isfinite(out).all()


def test_bool_arguments_accept_numpy_bools_and_refuse_strings():
    q, k, v = _qkv(1, 1, 4, 2)
    torch.testing.assert_close(
        attnbook.attention(q, k, v, causal=np.bool_(True)), attnbook.attention(q, k, v, causal=True)
    )
    X, W = np.ones((3, 2)), np.ones((2, 2))
    with pytest.raises(TypeError, match="causal must be a bool"):
        reference.self_attention(X, W, W, W, causal="yes")
    with pytest.raises(TypeError, match="causal must be a bool"):
        attnbook.attention(q, k, v, causal="yes")
    with pytest.raises(TypeError, match="bias must be a bool"):
        cost.gpt_params(2, 8, 10, bias="no")


def test_multi_head_attention_validates_at_construction():
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        MultiHeadSelfAttention(8, 2, bogus=1)
    with pytest.raises(TypeError, match="causal must be a bool"):
        MultiHeadSelfAttention(8, 2, causal="no")
    with pytest.raises(ValueError, match="no causal form"):
        MultiHeadSelfAttention(8, 2, method="linformer", causal=True)


# --------------------------------------------------------------------------- layout
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


def test_at_most_eight_files_at_the_top_and_no_registration_side_effects():
    assert len(list(PACKAGE.glob("*.py"))) <= 8
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "@register" not in text and "register_mixer(" not in text, path


def test_a_suite_may_share_a_name_with_a_method():
    from attnbook.registry import SUITES, Suite

    add(Suite("dense", lambda device, quick: [], "01", "a suite named like a method"))
    try:
        assert "dense" in SUITES and method_info("dense").name == "dense"
        with pytest.raises(ValueError, match="already registered"):
            add(Suite("dense", lambda device, quick: [], "01", "clash with the suite"))
    finally:
        SUITES.pop("dense")
