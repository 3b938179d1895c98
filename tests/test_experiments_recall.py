"""Chapter 5: the recall comparison harness (attnbook.experiments.recall)."""

import numpy as np
import pytest
import torch

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
