"""The mechanism chooser (chapter 6) on a stored-results fixture, the live fallback, and bad
input."""

from __future__ import annotations

import json

import pytest
import torch

from attnbook.experiments.chooser import RULE_OF_THUMB, estimate, recommend, rule_of_thumb

NS = [256, 512, 1024, 2048, 4096]
MiB = 2**20
# method, causal, time(n) in s, peak(n) in bytes, error against exact attention: power laws, so that
# interpolation and extrapolation on log-log axes must be exact.
LAWS = [
    ("sdpa", True, lambda n: 1e-9 * n**2, lambda n: 8 * n**2, 1e-7),
    ("dense", True, lambda n: 2e-9 * n**2, lambda n: 16 * n**2, 1e-7),
    ("flash", True, lambda n: 1.5e-9 * n**2, lambda n: 1000 * n, 1e-7),
    ("sliding_window", True, lambda n: 4e-6 * n, lambda n: 2000 * n, 0.3),
    ("sdpa", False, lambda n: 0.5e-9 * n**2, lambda n: 8 * n**2, 1e-7),
    ("linformer", False, lambda n: 2e-6 * n, lambda n: 500 * n, 0.05),
]


def _rows():
    return [
        {
            "method": m,
            "n": n,
            "batch": 1,
            "heads": 2,
            "head_dim": 64,
            "causal": c,
            "median_s": t(n),
            "q25_s": 0.9 * t(n),
            "q75_s": 1.1 * t(n),
            "peak_bytes": p(n),
            "rel_error": e,
        }
        for m, c, t, p, e in LAWS
        for n in NS
    ]


@pytest.fixture
def stored(tmp_path):
    """A stored 'long' result for the CPU, in the format the benchmark runner writes."""
    result = {
        "suite": "long",
        "quick": True,
        "meta": {"device": "fixture CPU", "date": "2025-01-01 00:00 UTC"},
        "rows": _rows(),
    }
    (tmp_path / "long-cpu.json").write_text(json.dumps(result))
    return tmp_path


def test_short_sequences_get_sdpa(stored):
    rec = recommend(256, 2**30, "cpu", results_dir=stored)
    assert rec.method == "sdpa"
    assert rec.chosen.time_s == pytest.approx(1e-9 * 256**2) and not rec.chosen.extrapolated
    assert (
        "Recommended: sdpa" in str(rec)
        and "long-cpu.json" in rec.source
        and "fixture CPU" in rec.source
    )


def test_memory_budget_moves_to_flash(stored):
    rec = recommend(4096, 64 * MiB, "cpu", results_dir=stored)
    assert rec.method == "flash"
    rejected = {e.method: e.rejected for e in rec.estimates}
    assert "budget" in rejected["sdpa"] and "budget" in rejected["dense"]
    assert "tolerance" in rejected["sliding_window"]


def test_error_tolerance_admits_approximations(stored):
    rec = recommend(4096, 64 * MiB, "cpu", max_rel_error=0.5, results_dir=stored)
    assert rec.method == "sliding_window"  # 4e-6·4096 s < 1.5e-9·4096² s
    assert rec.chosen.rel_error == 0.3


def test_causality_selects_the_rows(stored):
    rec = recommend(4096, 64 * MiB, "cpu", causal=False, max_rel_error=0.1, results_dir=stored)
    assert rec.method == "linformer"
    assert {e.method for e in rec.estimates} == {"sdpa", "linformer"}


@pytest.mark.parametrize("n", [3000, 700, 300], ids=["N3000", "N700", "N300"])
def test_interpolation_is_exact_on_power_laws(stored, n):
    rows = json.loads((stored / "long-cpu.json").read_text())["rows"]
    est = estimate(rows, "flash", n, True)
    assert est.time_s == pytest.approx(1.5e-9 * n**2, rel=1e-9)
    assert est.peak_bytes == pytest.approx(1000 * n, rel=1e-9)
    assert not est.extrapolated


@pytest.mark.parametrize("n", [16384, 65536, 64], ids=["N16384", "N65536", "N64"])
def test_extrapolation_is_flagged_and_follows_the_slope(stored, n):
    rec = recommend(n, 2**40, "cpu", results_dir=stored)
    sdpa = next(e for e in rec.estimates if e.method == "sdpa")
    assert sdpa.extrapolated and sdpa.time_s == pytest.approx(1e-9 * n**2, rel=1e-9)
    assert "extrapolated" in str(rec)


def test_batch_and_heads_scale_time_and_memory(stored):
    base = recommend(1024, 2**30, "cpu", results_dir=stored).chosen
    big = recommend(1024, 2**30, "cpu", batch=4, heads=8, results_dir=stored).chosen
    assert big.time_s == pytest.approx(16 * base.time_s) and big.peak_bytes == pytest.approx(
        16 * base.peak_bytes
    )


def test_nothing_fits(stored):
    rec = recommend(4096, 1024, "cpu", results_dir=stored)
    assert rec.method is None and rec.chosen is None
    assert "Nothing fits" in str(rec)


def test_results_can_be_passed_directly():
    rec = recommend(512, 2**30, "cpu", results={"rows": _rows()})
    assert rec.method == "sdpa" and rec.source == "results given by the caller"


def test_live_fallback_when_nothing_is_stored(tmp_path):
    with pytest.raises(ValueError, match="live=False"):
        recommend(512, 2**30, "cpu", results_dir=tmp_path, live=False)
    rec = recommend(
        512,
        2**30,
        "cpu",
        results_dir=tmp_path,
        live_sizes=(64, 128),
        live_methods=("sdpa", "dense"),
    )
    assert rec.method in ("sdpa", "dense") and rec.source.startswith("live mini-benchmark")
    assert all(e.measured_n == (64, 128) and e.extrapolated for e in rec.estimates)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message shown when CUDA is absent"
)
def test_cuda_without_results_or_gpu(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        recommend(512, 2**30, "cuda", results_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs,exc,name",
    [
        (dict(n=-5), ValueError, "n must"),
        (dict(n=0), ValueError, "n must"),
        (dict(n=1024.0), TypeError, "n must"),
        (dict(memory_budget_bytes=0), ValueError, "memory_budget_bytes"),
        (dict(memory_budget_bytes=-(2**30)), ValueError, "memory_budget_bytes"),
        (dict(device="tpu"), ValueError, "device"),
        (dict(device="banana"), ValueError, "device"),
        (dict(device=3), TypeError, "device"),
        (dict(causal="yes"), TypeError, "causal"),
        (dict(max_rel_error=-1), ValueError, "max_rel_error"),
        (dict(batch=0), ValueError, "batch"),
        (dict(results={"rows": [{"method": "sdpa", "n": 4}]}), ValueError, "rows"),
        (dict(results={"rows": []}), ValueError, "rows"),
    ],
    ids=[
        "n-negative",
        "n-zero",
        "n-float",
        "budget-zero",
        "budget-negative",
        "device-tpu",
        "device-unknown",
        "device-int",
        "causal-str",
        "error-negative",
        "batch-zero",
        "rows-missing-keys",
        "rows-empty",
    ],
)
def test_bad_input(stored, kwargs, exc, name):
    args = {
        "n": 1024,
        "memory_budget_bytes": 2**30,
        "device": "cpu",
        "results_dir": stored,
        **kwargs,
    }
    with pytest.raises(exc, match=name):
        recommend(**args)


def test_rule_of_thumb_table():
    assert [rule_of_thumb(n) for n in (1, 2047, 2048, 8191, 8192, 65535, 65536, 10**6)] == [
        "dense",
        "dense",
        "flash",
        "flash",
        "sparse/linformer",
        "sparse/linformer",
        "performer/hierarchical",
        "performer/hierarchical",
    ]
    assert RULE_OF_THUMB[-1][1] == "performer/hierarchical"
    with pytest.raises(ValueError, match="n must"):
        rule_of_thumb(-1)
