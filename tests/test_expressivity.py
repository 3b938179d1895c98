"""Chapter 5: the recall comparison harness and the generalization / capacity formulas."""

import math

import numpy as np
import pytest
import torch

from attnbook import cost
from attnbook.experiments.recall import (
    causal_problem,
    compare,
    method_options,
    recall_methods,
    summarize,
    train_recall,
)
from attnbook.registry import METHODS, Method, method_info, methods

TINY = dict(
    seq_len=16, num_pairs=2, vocab_size=9, steps=4, batch_size=8, d_model=16, n_head=2, eval_size=16
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not spin-wait on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def noncausal_method(monkeypatch):
    """A registered method that refuses causal=True, like Linformer."""

    def fn(q, k, v, *, causal=False):
        if causal:
            raise ValueError("causal=True is not supported by this method")
        return v

    monkeypatch.setitem(
        METHODS, "_noncausal", Method("_noncausal", fn, "05", "a method with no causal form")
    )
    return "_noncausal"


def test_recall_methods_follow_the_registry():
    got = recall_methods()
    assert got[0] == "dense"
    assert got == [m for m in methods() if m in got]  # catalogue order kept
    for m in methods(
        device="cpu"
    ):  # every mechanism with a causal form, no re-implementation of another
        info = method_info(m)
        assert (m in got) == (info.causal != "noncausal" and info.variant_of is None)


def test_method_options_only_declared():
    assert method_options("dense", 64) == {}
    for m in recall_methods():
        declared = method_info(m).options if m in methods() else {}
        assert set(method_options(m, 64)) <= set(declared)


def test_noncausal_method_is_skipped_with_reason(noncausal_method, capsys):
    assert causal_problem("dense") is None
    reason = causal_problem(noncausal_method)
    assert reason.startswith("ValueError") and "causal" in reason
    rows, skipped = compare(
        [noncausal_method],
        [dict(seq_len=16)],
        seeds=(0,),
        **{k: v for k, v in TINY.items() if k != "seq_len"},
    )
    assert rows == [] and skipped == {noncausal_method: reason}
    assert f"skipped {noncausal_method}" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["mqar", "long_range", "selective_copy"])
def test_train_recall_row_and_determinism(task):
    a = train_recall("dense", task, seed=3, **TINY)
    b = train_recall("dense", task, seed=3, **TINY)
    assert 0.0 <= a["accuracy"] <= 1.0 and a["params"] > 0 and a["train_s"] > 0
    assert (a["accuracy"], a["val_loss"]) == (b["accuracy"], b["val_loss"])
    assert a["method"] == "dense" and a["task"] == task and a["seed"] == 3


def test_dense_learns_long_range_lookup():
    """One pair far back: dense attention must find it; chance is 1/4 (4 value ids)."""
    row = train_recall(
        "dense",
        "long_range",
        seq_len=24,
        num_pairs=1,
        vocab_size=9,
        steps=150,
        batch_size=64,
        d_model=32,
        n_layer=1,
        n_head=1,
        lr=1e-2,
        seed=0,
        eval_size=256,
    )
    assert row["accuracy"] > 0.9, row


def test_summarize_matches_numpy():
    rows = [{"method": "a", "seq_len": 8, "accuracy": x} for x in (0.5, 0.7, 0.9)]
    rows += [{"method": "b", "seq_len": 8, "accuracy": 0.25}]
    s = {r["method"]: r for r in summarize(rows)}
    assert s["a"]["mean"] == pytest.approx(0.7) and s["a"]["std"] == pytest.approx(
        np.std([0.5, 0.7, 0.9], ddof=1)
    )
    assert (s["a"]["min"], s["a"]["max"], s["a"]["seeds"]) == (0.5, 0.9, 3)
    assert s["b"]["std"] == 0.0 and s["b"]["seeds"] == 1


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: train_recall("dense", "nope", **TINY), ValueError, "task"),
        (lambda: train_recall("dense", seed=-1, **TINY), ValueError, "seed"),
        (lambda: train_recall("dense", **{**TINY, "eval_size": 0}), ValueError, "eval_size"),
        (lambda: train_recall("nope", **TINY), ValueError, "mixer"),
        (lambda: train_recall("dense", **{**TINY, "seq_len": 5}), ValueError, "seq_len"),
        (lambda: method_options("dense", 0), ValueError, "seq_len"),
    ],
    ids=["task", "seed", "eval-size", "method", "seq-len", "options-seq-len"],
)
def test_bad_input_names_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# ---- formulas in attnbook.cost.bounds -------------------------------------------------------------


def test_vc_bound_at_llm_scale_is_vacuous():
    n = 1e11
    assert cost.vc_rate(n, n) == pytest.approx(math.sqrt(np.log2(n)))  # independent: log2 of n
    assert cost.vc_rate(n, n) == pytest.approx(6.04, abs=0.01)
    with_constants = np.sqrt(2 * n * np.log(np.e * n / n) / n) + np.sqrt(np.log(1 / 0.05) / (2 * n))
    assert cost.vc_bound(n, n) == pytest.approx(with_constants)
    assert cost.vc_bound(n, n) > 1 and cost.vc_rate(n, n) > 1


def test_vc_bound_shrinks_with_data():
    vals = [cost.vc_bound(1e3, n) for n in (1e4, 1e5, 1e6, 1e7)]
    assert all(a > b for a, b in zip(vals, vals[1:])) and vals[-1] < 0.1


@pytest.mark.parametrize(
    "bits, n", [(1e6, 1e9), (1.6e12, 1e11), (100, 1000)], ids=["small", "raw-llm", "tiny"]
)
def test_occam_and_pac_bayes_agree_on_a_point_prior(bits, n):
    """Occam is Hoeffding + a union bound; PAC-Bayes with KL = bits·ln2 differs only in the log term."""
    occam = cost.occam_bound(bits, n, delta=0.05)
    assert occam == pytest.approx(math.sqrt((bits * math.log(2) + math.log(20)) / (2 * n)))
    pb = cost.pac_bayes_bound(bits * math.log(2), n, delta=0.05)
    assert pb >= occam  # the extra ln(2√n) term


def test_recall_capacity_is_consistent():
    for s, b, c in [(64, 16, 16), (4096, 32, 8192), (10, 1, 2)]:
        p = cost.max_recall_pairs(s, b, c)
        assert cost.recall_state_bits(p, c) <= s * b < cost.recall_state_bits(p + 1, c)
    assert cost.entry_size_threshold(4096) == pytest.approx(np.sqrt(np.log(4096)))


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: cost.vc_bound(2e3, 1e3), ValueError, "d_vc"),
        (lambda: cost.vc_bound(10, 1e3, delta=1.5), ValueError, "delta"),
        (lambda: cost.vc_rate(10, -1), ValueError, "n"),
        (lambda: cost.vc_rate(10, 100, log_base=1), ValueError, "log_base"),
        (lambda: cost.occam_bound(0, 10), ValueError, "bits"),
        (lambda: cost.pac_bayes_bound(-1, 10), ValueError, "kl"),
        (lambda: cost.max_recall_pairs(10, 8, 1), ValueError, "num_values"),
        (lambda: cost.recall_state_bits(0, 4), ValueError, "num_pairs"),
        (lambda: cost.entry_size_threshold(1), ValueError, "n"),
        (lambda: cost.vc_bound("a", 10), TypeError, "d_vc"),
    ],
    ids=["d-gt-n", "delta", "n", "base", "bits", "kl", "values", "pairs", "threshold", "type"],
)
def test_bounds_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# ---- the suite -------------------------------------------------------------------------------------


def test_suite_settings_cover_both_sweeps():
    from attnbook.bench import expressivity

    for quick in (True, False):
        grid, seeds, steps, methods = expressivity.settings(quick)
        assert methods[0] == "dense" and set(methods) <= set(recall_methods())
        assert not set(methods) & set(expressivity.LEFT_OUT)
        assert {g["sweep"] for g in grid} <= {"pairs", "width"} and len(
            {g["num_pairs"] for g in grid}
        ) >= 2
        for (
            g
        ) in grid:  # every setting is a valid MQAR instance (4 P <= n, enough key and value ids)
            assert (
                4 * g["num_pairs"] <= expressivity.BUDGET["seq_len"]
                and g["d_model"] % expressivity.BUDGET["n_head"] == 0
            )
    assert len(expressivity.settings(False)[1]) >= 3


def test_suite_rows_do_not_depend_on_the_workers(monkeypatch):
    """Two worker processes give the rows one process gives, in the same order."""
    from attnbook.bench import expressivity

    tiny = (
        [dict(sweep="pairs", num_pairs=1, d_model=16), dict(sweep="width", num_pairs=2, d_model=8)],
        (0, 1),
        3,
        ["dense", "linear"],
    )
    monkeypatch.setattr(expressivity, "settings", lambda quick: tiny)
    monkeypatch.setitem(expressivity.BUDGET, "eval_size", 16)
    serial, parallel = (
        expressivity.run("cpu", True, workers=1),
        expressivity.run("cpu", True, workers=2),
    )
    drop = ("train_s", "time_per_iter_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in serial] == [
        {k: v for k, v in r.items() if k not in drop} for r in parallel
    ]
    assert [(r["method"], r["sweep"], r["num_pairs"], r["d_model"], r["seed"]) for r in serial][
        :4
    ] == [
        ("dense", "pairs", 1, 16, 0),
        ("dense", "pairs", 1, 16, 1),
        ("dense", "width", 2, 8, 0),
        ("dense", "width", 2, 8, 1),
    ]
