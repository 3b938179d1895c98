"""Suite "expressivity": Zoology-style MQAR, every mechanism, accuracy against the number of pairs
around the state bound (chapter 5).

The sweep tests the chapter's capacity bound: a fixed state of d_k × d_v numbers per head returns at
most r = d_k pairs exactly, so the pairs P run from below r to at least 2·r (:data:`PAIRS`, with
d_k = d_model / n_head = 8). The vocabulary (:data:`BUDGET`) has more key ids than any P needs and
more than d_k, so keys can be told apart. Every model (:data:`MODELS`: one-layer mixers, the 2-layer
dense model and the 2-layer hybrid of one dense and one Gated DeltaNet layer) gets its own learning
rate: each model is trained at every rate of :data:`LR_GRID` on seed 0 at the largest P, where
recall is hardest (``phase`` "lr-search"); the rate with the best accuracy is kept (``chosen``), and
every other (P, seed) is trained at that rate (``phase`` "seeds"). The rows with ``chosen`` True are
the result: 3 seeds per point.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import torch

from attnbook.experiments.recall import summarize, train_recall

__all__ = [
    "BUDGET",
    "STEPS",
    "PAIRS",
    "LR_GRID",
    "SEEDS",
    "MODELS",
    "settings",
    "choose_lr",
    "run",
    "result_rows",
    "point_summary",
]

#: One budget for every model: GPTs with a short convolution (kernel 4) in front of each mixer, as
#: Zoology's backbones have, 8 heads of width 8, on fresh MQAR batches whose non-query positions
#: are blanks (``random_non_queries=False``, the setting of Zoology's paper sweep), AdamW with
#: warm-up then cosine decay to a tenth of the rate, no early stop (a run on its plateau would stop
#: before it learns). Vocabulary 256: 127 key ids, far more than d_k = 8 and than any swept P.
BUDGET = dict(
    task="mqar",
    seq_len=64,
    vocab_size=256,
    n_layer=1,
    n_head=8,
    d_model=64,
    short_conv=4,
    batch_size=32,
    warmup_steps=100,
    weight_decay=0.0,
    eval_size=512,
    task_options={"random_non_queries": False},
)
STEPS = 1500  #: training steps of every run of the full sweep
PAIRS = (4, 8, 16)  #: P below, at (d_k = 8) and above the state bound, up to 2·d_k
LR_GRID = (1e-3, 3e-3, 1e-2)  #: learning rates searched per model on seed 0, at the largest P
SEEDS = (0, 1, 2)  #: seed 0 chooses the rate; all three are trained at it
#: label -> how the model differs from BUDGET (the mixer, and layers for the 2-layer models). The
#: delta rule, Gated DeltaNet and GLA are trained as their layers (β and gates projected from x, q
#: and k L2-normalised); the windowed methods and the Performer get the options of
#: :func:`~attnbook.experiments.recall.method_options`; block_sparse is left out (at this length its
#: default layout is dense).
MODELS = {
    "dense": dict(method="dense"),
    "dense_2layer": dict(method="dense", n_layer=2),
    "hybrid": dict(method="dense", n_layer=2, layer_mixers=("dense", "gated_delta_layer")),
    "linear": dict(method="linear"),
    "delta": dict(method="delta_layer"),
    "gated_delta": dict(method="gated_delta_layer"),
    "gla": dict(method="gla_layer"),
    "retention": dict(method="retention"),
    "selective_scan": dict(method="selective_scan"),
    "performer": dict(method="performer"),
    "elementwise": dict(method="elementwise"),
    "sliding_window": dict(method="sliding_window"),
}
_QUICK = dict(
    pairs=(4, 16),
    lrs=(3e-3, 1e-2),
    seeds=(0, 1),
    steps=300,
    models=("dense", "linear", "gated_delta", "hybrid"),
)


def settings(quick: bool) -> dict:
    """The sweep: ``pairs``, ``lrs``, ``seeds``, ``steps`` and ``models`` (labels of
    :data:`MODELS`); ``quick`` shrinks every one of them."""
    if quick:
        return dict(_QUICK)
    return dict(pairs=PAIRS, lrs=LR_GRID, seeds=SEEDS, steps=STEPS, models=tuple(MODELS))


def _job(label: str, num_pairs: int, lr: float, seed: int, steps: int, device) -> dict:
    model = dict(MODELS[label])
    return {
        **BUDGET,
        **model,
        "label": label,
        "num_pairs": num_pairs,
        "lr": lr,
        "min_lr": lr / 10,
        "seed": seed,
        "steps": steps,
        "device": str(device),
        "eval_every": max(1, steps // 10),
    }


def _one(job: dict) -> dict:
    """One training run in a worker process (one thread: tiny models are fastest on one core)."""
    torch.set_num_threads(1)
    job = dict(job)
    label = job.pop("label")
    row = train_recall(**job)
    return {
        **row,
        "method": label,
        "mixer": job["method"],
        "d_k": row["d_model"] // row["n_head"],
        "heads": row["n_head"],
    }


def choose_lr(rows: list[dict]) -> dict:
    """{method: rate} from the search rows: best accuracy, ties to the lower loss."""
    best = {}
    for r in rows:
        key = r["method"]
        score = (r["accuracy"], -r["val_loss"])
        if key not in best or score > best[key][0]:
            best[key] = (score, r["lr"])
    return {key: lr for key, (_, lr) in best.items()}


def _map(jobs: list[dict], workers: int, device) -> list[dict]:
    if workers > 1 and device.type == "cpu":
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_one, jobs))  # job order: the rows do not depend on scheduling
    threads = torch.get_num_threads()
    try:
        return [_one(job) for job in jobs]
    finally:
        torch.set_num_threads(threads)


def run(device, quick: bool, workers: int | None = None) -> list[dict]:
    """The learning-rate search on the first seed at the largest P, then every other (P, seed) at
    the chosen rates, ``workers`` runs at a time (default: one per core, at most 2)."""
    plan = settings(quick)
    device = torch.device(device)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    first, hardest = plan["seeds"][0], max(plan["pairs"])
    search = [
        _job(label, hardest, lr, first, plan["steps"], device)
        for label in plan["models"]
        for lr in plan["lrs"]
    ]
    rows = [{**r, "phase": "lr-search"} for r in _map(search, workers, device)]
    chosen = choose_lr(rows)
    for r in rows:
        r["chosen"] = r["lr"] == chosen[r["method"]]
    seeds = [
        _job(label, p, chosen[label], seed, plan["steps"], device)
        for label in plan["models"]
        for p in plan["pairs"]
        for seed in plan["seeds"]
        if (p, seed) != (hardest, first)
    ]
    rows += [{**r, "phase": "seeds", "chosen": True} for r in _map(seeds, workers, device)]
    return rows


def result_rows(result: dict) -> list[dict]:
    """The rows of a stored run that are its result: each model trained at its chosen rate."""
    if not isinstance(result, dict) or result.get("suite") != "expressivity":
        raise ValueError("result must be a stored result of the suite 'expressivity'")
    return [r for r in result["rows"] if r.get("chosen")]


def point_summary(rows: list[dict]) -> dict:
    """{(method, num_pairs): accuracy over seeds (mean, std, min, max, seeds) and the rate ``lr``}
    of :func:`result_rows`."""
    rates = {}
    for r in rows:
        if rates.setdefault(r["method"], r["lr"]) != r["lr"]:
            raise ValueError(f"{r['method']}: rows at two learning rates; pass result_rows()")
    stats = summarize(rows, by=("method", "num_pairs"))
    return {(s["method"], s["num_pairs"]): {**s, "lr": rates[s["method"]]} for s in stats}
