"""Chapter 4: the "long" benchmark suite: row schema, refusal of wrong exact forms, slopes,
crossovers."""

import importlib
import warnings

import numpy as np
import pytest
import torch

from attnbook.bench import load_result
from attnbook.bench import long as long_suite
from attnbook.checks import CorrectnessError

registry = importlib.import_module(
    "attnbook.registry"
)  # the module: attnbook.registry is also the function

KEYS = {
    "method": str,
    "n": int,
    "batch": int,
    "heads": int,
    "head_dim": int,
    "causal": bool,
    "min_s": float,
    "q10_s": float,
    "median_s": float,
    "q25_s": float,
    "q75_s": float,
    "peak_bytes": (int, type(None)),
    "rel_error": float,
}
MINIMA = {"min_s", "q10_s"}  # recorded since the measurement policy; older stored rows lack them


def _check_schema(row, stored=False):
    assert set(row) == set(KEYS) or (stored and set(row) == set(KEYS) - MINIMA), sorted(row)
    for key, kind in KEYS.items():
        assert key not in row or isinstance(row[key], kind), (key, row[key])


@pytest.mark.parametrize(
    "method, causal", [("dense", True), ("flash", False), ("sliding_window", True)]
)
def test_measure_method_row(method, causal):
    row = long_suite.measure_method(method, 256, causal, torch.device("cpu"), repeats=1)
    _check_schema(row)
    assert row["n"] == 256 and row["causal"] is causal
    assert row["min_s"] <= row["q10_s"] <= row["q25_s"] <= row["median_s"] <= row["q75_s"]
    assert row["peak_bytes"] > 0
    if method != "sliding_window":
        assert row["rel_error"] < 1e-5
    else:  # window 128 < n: a different function from exact attention, and the error says so
        assert row["rel_error"] > 1e-3


def _wrong(q, k, v, *, causal=False):
    """Exact attention with the keys reversed: plausible shape, wrong values."""
    return registry.attention(q, k.flip(2), v, method="dense", causal=causal)


def test_refuses_to_time_a_wrong_exact_method(monkeypatch):
    monkeypatch.setitem(
        registry.METHODS, "wrong", registry.Method("wrong", _wrong, "04", "wrong", exact=True)
    )
    with pytest.raises(CorrectnessError, match="wrong"):
        long_suite.measure_method("wrong", 256, False, torch.device("cpu"), repeats=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = long_suite.sweep_method("wrong", False, [256, 512], torch.device("cpu"), 1, 1.0)
    assert rows == [] and any("not timed" in str(w.message) for w in caught)


def _synthetic():
    rows = []
    for n in [256, 512, 1024, 2048, 4096]:
        for method, t in (("sdpa", 1e-9 * n**2), ("linear", 4e-6 * n)):
            rows.append(
                {
                    "method": method,
                    "n": n,
                    "batch": 1,
                    "heads": 1,
                    "head_dim": 8,
                    "causal": True,
                    "median_s": t,
                    "q25_s": t,
                    "q75_s": t,
                    "peak_bytes": 10 * n,
                    "rel_error": 0.1,
                }
            )
    return rows


def test_slopes_crossovers_and_table_on_known_rows():
    rows = _synthetic()
    fits = long_suite.slopes(rows, min_n=256)
    assert (
        abs(fits[("sdpa", True)].slope - 2) < 1e-9 and abs(fits[("linear", True)].slope - 1) < 1e-9
    )
    assert long_suite.crossovers(rows) == {("linear", True): 4096}  # 4e-6 n < 1e-9 n² from n > 4000
    table = {r["method"]: r for r in long_suite.comparison_table(rows, min_n=256)}
    assert (
        table["linear"]["crossover_n"] == 4096 and abs(table["linear"]["memory_slope"] - 1) < 1e-9
    )


def test_stored_cpu_result():
    result = load_result("long", "cpu")
    assert result is not None, "run: python -m attnbook bench long --device cpu"
    for row in result["rows"]:
        _check_schema(row, stored=True)
        if registry.method_info(row["method"]).exact:
            assert row["rel_error"] < 1e-4, row
    sub_quadratic = {r["method"] for r in result["rows"] if r["n"] >= 16384}
    assert "sliding_window" in sub_quadratic or result["quick"]
    assert long_suite.sizes(True)[0] == 256 and long_suite.sizes(False)[-1] == 16384
    assert np.all([r["median_s"] > 0 for r in result["rows"]])
