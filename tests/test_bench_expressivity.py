"""Chapter 5: suite "expressivity": the sweep it plans, its learning-rate search, its workers."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not spin-wait on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_suite_sweeps_pairs_past_the_state_bound_with_a_rate_per_model():
    from attnbook.bench import expressivity
    from attnbook.experiments.tasks import mqar_vocab

    budget = expressivity.BUDGET
    d_k = budget["d_model"] // budget["n_head"]
    full = expressivity.settings(False)
    assert max(full["pairs"]) >= 2 * d_k and min(full["pairs"]) < d_k
    assert budget["vocab_size"] >= 256 and len(mqar_vocab(budget["vocab_size"])[0]) > max(
        full["pairs"]
    )
    assert set(full["lrs"]) == {1e-3, 3e-3, 1e-2} and len(full["seeds"]) >= 3
    assert {"dense", "dense_2layer", "hybrid", "delta", "gated_delta", "gla"} <= set(full["models"])
    assert expressivity.MODELS["hybrid"]["layer_mixers"] == ("dense", "gated_delta_layer")
    for quick in (True, False):
        plan = expressivity.settings(quick)
        assert plan["models"][0] == "dense" and set(plan["models"]) <= set(expressivity.MODELS)
        assert all(4 * p <= budget["seq_len"] for p in plan["pairs"])  # valid MQAR instances


def test_choose_lr_takes_the_best_accuracy_then_the_lower_loss():
    from attnbook.bench.expressivity import choose_lr

    rows = [
        {"method": "a", "num_pairs": 4, "lr": 1e-3, "accuracy": 0.5, "val_loss": 1.0},
        {"method": "a", "num_pairs": 4, "lr": 3e-3, "accuracy": 0.9, "val_loss": 2.0},
        {"method": "a", "num_pairs": 4, "lr": 1e-2, "accuracy": 0.9, "val_loss": 1.5},
        {"method": "a", "num_pairs": 8, "lr": 1e-3, "accuracy": 0.2, "val_loss": 3.0},
    ]
    assert choose_lr(rows) == {"a": 1e-2}
    assert choose_lr(rows[3:]) == {"a": 1e-3}


def test_suite_rows_do_not_depend_on_the_workers(monkeypatch):
    """Two worker processes give the rows one process gives, in the same order; the seeds run at
    the rate the search chose, and every row records lr, d_k, heads and vocabulary."""
    from attnbook.bench import expressivity

    tiny = dict(pairs=(1, 2), lrs=(1e-3, 1e-2), seeds=(0, 1), steps=3, models=("dense", "hybrid"))
    monkeypatch.setattr(expressivity, "settings", lambda quick: dict(tiny))
    for key, value in dict(seq_len=16, vocab_size=16, d_model=16, eval_size=16).items():
        monkeypatch.setitem(expressivity.BUDGET, key, value)
    serial, parallel = (
        expressivity.run("cpu", True, workers=1),
        expressivity.run("cpu", True, workers=2),
    )
    drop = ("train_s", "time_per_iter_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in serial] == [
        {k: v for k, v in r.items() if k not in drop} for r in parallel
    ]
    # the search (2 models x 2 rates at P = 2), then the 3 other (P, seed) per model
    assert len(serial) == 2 * 2 + 2 * 3
    chosen = {r["method"]: r["lr"] for r in serial if r["phase"] == "seeds"}
    for r in serial:
        assert {"lr", "d_k", "heads", "vocab_size"} <= set(r) and r["d_k"] == 16 // r["heads"]
        if r["phase"] == "lr-search":
            assert r["num_pairs"] == 2 and r["seed"] == 0
            assert r["chosen"] == (r["lr"] == chosen[r["method"]])
    result = [(r["method"], r["num_pairs"], r["seed"]) for r in serial if r["chosen"]]
    points = [(m, p, s) for m in tiny["models"] for p in (1, 2) for s in (0, 1)]
    assert sorted(result) == sorted(points)
    hybrid = [r for r in serial if r["method"] == "hybrid"]
    assert all(r["layer_mixers"] == ["dense", "gated_delta_layer"] for r in hybrid)


def test_point_summary_reads_the_chosen_rows():
    from attnbook.bench.expressivity import point_summary, result_rows

    rows = [
        {"method": "a", "num_pairs": 4, "lr": 1e-3, "accuracy": 0.5, "chosen": False},
        {"method": "a", "num_pairs": 4, "lr": 3e-3, "accuracy": 0.75, "chosen": True},
        {"method": "a", "num_pairs": 4, "lr": 3e-3, "accuracy": 0.25, "chosen": True},
    ]
    result = {"suite": "expressivity", "rows": rows}
    points = point_summary(result_rows(result))
    assert points[("a", 4)]["mean"] == 0.5 and points[("a", 4)]["seeds"] == 2
    assert points[("a", 4)]["lr"] == 3e-3
    with pytest.raises(ValueError, match="two learning rates"):
        point_summary(rows)
    with pytest.raises(ValueError, match="suite 'expressivity'"):
        result_rows({"suite": "long", "rows": rows})
