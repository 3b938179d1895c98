"""Suite "expressivity": Zoology-style MQAR, every mechanism, accuracy against pairs and width (chapter 5).

Two sweeps on one training budget (:data:`BUDGET`): the number of key-value pairs at a fixed width
(:data:`WIDTH`), and the width at a fixed number of pairs (:data:`PAIRS`). Each row is one run
(method, seed, setting) with its accuracy on held-out sequences; ``sweep`` says which sweep it
belongs to. The rows of dense attention carry the claim the sweep is built for: dense attention is
trained until it solves the task, and every other mechanism gets the same budget.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import torch

from attnbook.experiments.recall import causal_problem, method_options, recall_methods, train_recall

#: Shared training budget: 2-layer GPTs on fresh Zoology MQAR batches (random non-queries, power-law
#: query gaps), AdamW with warm-up then cosine decay, no early stop (a run on its plateau would stop
#: before it learns). Found by short runs of dense attention on 2 cores: at width 64, lr 1e-3 and a
#: 32-id vocabulary it leaves its plateau and solves P = 2 and P = 4 within 1,500 steps for most seeds
#: (not all: one of three initialisations stayed on the plateau for 2,500 steps at P = 4); it stays on
#: the plateau for thousands of steps at lr 3e-3 with weight decay 0.1, with a 64-id vocabulary, or at
#: widths 16 and 32.
BUDGET = dict(task="mqar", seq_len=32, vocab_size=32, n_layer=2, n_head=2, batch_size=32, lr=1e-3,
              warmup_steps=100, min_lr=1e-4, weight_decay=0.0, eval_size=512)
WIDTH = 64  #: d_model of the pairs sweep
PAIRS = 4  #: pairs of the width sweep
#: Left out to fit 20 minutes on 2 cores: at n = 32 block_sparse (default block 64) is dense attention,
#: and strided and longformer add a few strided or global keys to a short window.
LEFT_OUT = ("strided", "longformer", "block_sparse")


def settings(quick: bool) -> tuple[list[dict], tuple[int, ...], int, list[str]]:
    """(settings, seeds, steps, methods): the pairs sweep at width :data:`WIDTH` and the width sweep at
    :data:`PAIRS` pairs. The full sweep has no width sweep: dense attention does not solve the task at
    widths 16 or 32 within the budget, and width 128 (solved by the last steps) does not fit the time.
    ``quick`` shrinks the sweep, the seeds, the steps and the method list."""
    pairs, widths = ((1, 4), (32,)) if quick else ((1, 2, 4), ())
    grid = [dict(sweep="pairs", num_pairs=p, d_model=WIDTH) for p in pairs]
    grid += [dict(sweep="width", num_pairs=PAIRS, d_model=w) for w in widths if not (PAIRS in pairs and w == WIDTH)]
    methods = [m for m in recall_methods() if m not in LEFT_OUT]
    if quick:
        methods = [m for m in methods if m in ("dense", "sliding_window", "linear", "retention")]
    return grid, ((0,) if quick else (0, 1, 2)), (300 if quick else 1500), methods


def _one(job: dict) -> dict:
    """One training run in a worker process (one thread: tiny models are fastest on one core)."""
    torch.set_num_threads(1)
    sweep = job.pop("sweep")
    return {**train_recall(**job), "sweep": sweep}


def run(device, quick: bool, workers: int | None = None) -> list[dict]:
    """Every (method, setting, seed) run, ``workers`` at a time (default: one per core, at most 2)."""
    grid, seeds, steps, methods = settings(quick)
    device = torch.device(device)
    rows, skipped, jobs = [], {}, []
    for method in methods:
        reason = causal_problem(method, method_options(method, BUDGET["seq_len"]))
        if reason is not None:
            skipped[method] = reason
            continue
        jobs += [{**BUDGET, **setting, "method": method, "seed": seed, "steps": steps, "device": str(device),
                  "eval_every": max(1, steps // 10)} for setting in grid for seed in seeds]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers > 1 and device.type == "cpu":
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(_one, jobs))  # results in job order: the rows do not depend on scheduling
    else:
        threads = torch.get_num_threads()
        try:
            rows = [_one(dict(job)) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    rows += [{"method": m, "skipped": reason} for m, reason in skipped.items()]
    return rows
