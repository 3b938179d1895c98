"""A reader's own mechanism and suite, added from outside the package with one record each, run
through ``attention()``, ``decode()``, the bench runner and the chooser (README: "Adding a
mechanism", "Adding a suite")."""

from typing import NamedTuple

import pytest
import torch
from helpers import random_qkv

import attnbook
from attnbook import registry
from attnbook.bench import run_suite
from attnbook.checks import check_qkv, check_step_inputs, rel_error
from attnbook.experiments.chooser import recommend
from attnbook.registry import Method, Suite


def prefix_mean_attention(q, k, v, *, causal=False, scale=1.0):
    """Uniform weights: o_i = scale · mean of the v_j that i may see. (B, H, N, Dv) out."""
    check_qkv(q, k, v)
    if not causal:
        return scale * v.mean(2, keepdim=True).expand(*q.shape[:3], v.shape[-1])
    counts = torch.arange(1, v.shape[2] + 1, dtype=v.dtype, device=v.device)[:, None]
    return scale * v.cumsum(2) / counts


class MeanState(NamedTuple):
    total: torch.Tensor
    count: int


def prefix_mean_step(state, q_t, k_t, v_t, *, scale=1.0):
    check_step_inputs(q_t, k_t, v_t)
    state = MeanState(v_t, 1) if state is None else MeanState(state.total + v_t, state.count + 1)
    return state, scale * state.total / state.count


def reader_suite(device, quick):
    from attnbook.bench.long import measure_method

    return [measure_method("prefix_mean", n, True, device, repeats=1) for n in (64, 128)]


@pytest.fixture
def reader_entries():
    registry.add(
        Method(
            "prefix_mean",
            prefix_mean_attention,
            "00",
            "a reader's method: the mean of the values seen",
            family="reader",
            options={"scale": "output scale (float, default 1)"},
            step_target=prefix_mean_step,
            linear_in_n=True,
        )
    )
    registry.add(Suite("reader-suite", reader_suite, "00", "the reader's method vs n"))
    yield
    registry.METHODS.pop("prefix_mean")
    registry.SUITES.pop("reader-suite")


def test_a_reader_method_runs_through_attention_and_decode(reader_entries):
    q, k, v = random_qkv((1, 2, 12, 4), seed=3)
    assert "prefix_mean" in attnbook.methods() and "prefix_mean" in attnbook.methods(
        family="reader"
    )
    out = attnbook.attention(q, k, v, method="prefix_mean", causal=True, scale=2.0)
    assert rel_error(out[:, :, 0], 2 * v[:, :, 0]) == 0
    stepped = attnbook.decode("prefix_mean", q, k, v, scale=2.0)
    assert rel_error(stepped, out) < 1e-12
    with pytest.raises(ValueError, match="unknown option 'window'"):
        attnbook.attention(q, k, v, method="prefix_mean", window=3)


def test_a_reader_suite_runs_through_the_bench_runner(reader_entries, tmp_path):
    result = run_suite("reader-suite", "cpu", quick=True, out_dir=tmp_path)
    assert [r["n"] for r in result["rows"]] == [64, 128]
    assert all(r["method"] == "prefix_mean" and r["min_s"] > 0 for r in result["rows"])
    assert (tmp_path / "reader-suite-cpu.json").exists()
    assert "reader-suite" in attnbook.suites()


def test_the_chooser_weighs_a_reader_method(reader_entries):
    rec = recommend(
        256,
        1e9,
        "cpu",
        causal=True,
        max_rel_error=10.0,
        live_sizes=(64, 128),
        live_methods=("dense", "prefix_mean"),
        results=None,
        results_dir="/nonexistent",
    )
    assert {"dense", "prefix_mean"} <= {e.method for e in rec.estimates}


#: Method-name dispatch left outside the registry (file -> sites), each a behaviour still to move
#: into its record (issue 23, §2): a new site anywhere fails the test below.
DISPATCH_LEFT = {
    "attnbook/bench/flash.py": 2,  # the suite's forms (bare and through the API), as row labels
    "attnbook/bench/generative.py": 3,
    "attnbook/bench/generative_converged.py": 3,
    "attnbook/bench/long.py": 1,  # sdpa, the non-causal baseline
    "attnbook/bench/memory.py": 2,  # sdpa's fused activations
    "attnbook/cost/bounds.py": 2,  # the state's feature dimension per method
    "attnbook/experiments/capacity.py": 2,
    "attnbook/experiments/chooser.py": 1,
    "attnbook/experiments/elementwise_tasks.py": 4,  # the weights each mixer exposes
}


def test_no_new_method_name_dispatch_outside_the_registry():
    import pathlib
    import re

    names = "|".join(map(re.escape, attnbook.methods() + attnbook.mixers()))
    pattern = re.compile(
        r"\b(method|mixer|name|m|fam)\s*(==|!=|in)\s*[(\[{]?\s*[\"'](" + names + r")[\"']"
    )
    root = pathlib.Path(attnbook.__file__).parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        if rel == "attnbook/registry.py":
            continue
        hits = sum(1 for line in path.read_text().splitlines() if pattern.search(line))
        if hits:
            found[rel] = hits
    grown = {f: n for f, n in found.items() if n > DISPATCH_LEFT.get(f, 0)}
    assert not grown, f"method-name dispatch outside the registry: {grown}; read the record instead"
