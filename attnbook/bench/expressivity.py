"""Suite "expressivity": Zoology-style MQAR, every mechanism, accuracy against pairs and width (chapter 5).

Two sweeps on one training budget (:data:`BUDGET`, :data:`STEPS`): the number of key-value pairs at a
fixed width (:data:`WIDTH`), and the width at a fixed number of pairs (:data:`PAIRS`). Each row is one run
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

#: Shared training budget: one-layer GPTs with a short convolution (kernel 4) in front of the mixer, as
#: Zoology's backbones have, on fresh Zoology MQAR batches with blanks between the queries, AdamW with
#: warm-up then cosine decay from 3e-3 to 3e-4, no early stop (a run on its plateau would stop before
#: it learns). Found by short runs of dense attention on 2 cores, each change needed:
#:
#: * two layers without the convolution (the previous edition) left dense attention on its plateau
#:   for 1,500 steps at P = 8 and at one of three seeds at P = 4: it must first build an induction
#:   circuit across two layers; with the convolution one layer sees each key beside its value and
#:   dense attention leaves the plateau within 150-750 steps;
#: * random ids between the queries (Zoology's default) with a 64-id vocabulary repeat some key before
#:   its query about one time in four, so the model must also find the *first* occurrence: dense
#:   attention stayed below 0.3 accuracy at P = 4 after 1,000 steps; blanks (Zoology's
#:   ``random_non_queries=False``) remove that ambiguity, not the recall;
#: * width 32 or 16 left dense attention below 0.95 at P = 8 within 1,500 steps, so the width sweep
#:   goes up from :data:`WIDTH`, not down.
BUDGET = dict(
    task="mqar",
    seq_len=64,
    vocab_size=64,
    n_layer=1,
    n_head=2,
    short_conv=4,
    batch_size=32,
    lr=3e-3,
    warmup_steps=100,
    min_lr=3e-4,
    weight_decay=0.0,
    eval_size=512,
    task_options={"random_non_queries": False},
)
STEPS = 1500  #: training steps of every run of the full sweep
WIDTH = 64  #: d_model of the pairs sweep
PAIRS = 8  #: pairs of the width sweep
#: Left out: at n = 64 block_sparse's default block (64) covers the whole sequence, so it is dense attention.
LEFT_OUT = ("block_sparse",)


def settings(quick: bool) -> tuple[list[dict], tuple[int, ...], int, list[str]]:
    """(settings, seeds, steps, methods): the pairs sweep P = 4, 8, 16 at width :data:`WIDTH` and the
    width sweep d_model = 64, 128 at :data:`PAIRS` pairs (the point they share is run once).
    ``quick`` shrinks the sweep, the seeds, the steps and the method list."""
    pairs, widths = ((2, 4), ()) if quick else ((4, 8, 16), (WIDTH, 128))
    grid = [dict(sweep="pairs", num_pairs=p, d_model=WIDTH) for p in pairs]
    grid += [
        dict(sweep="width", num_pairs=PAIRS, d_model=w)
        for w in widths
        if not (PAIRS in pairs and w == WIDTH)
    ]
    methods = [m for m in recall_methods() if m not in LEFT_OUT]
    if quick:
        methods = [m for m in methods if m in ("dense", "sliding_window", "linear", "retention")]
    return grid, ((0,) if quick else (0, 1, 2)), (300 if quick else STEPS), methods


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
        jobs += [
            {
                **BUDGET,
                **setting,
                "method": method,
                "seed": seed,
                "steps": steps,
                "device": str(device),
                "eval_every": max(1, steps // 10),
            }
            for setting in grid
            for seed in seeds
        ]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers > 1 and device.type == "cpu":
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(
                pool.map(_one, jobs)
            )  # results in job order: the rows do not depend on scheduling
    else:
        threads = torch.get_num_threads()
        try:
            rows = [_one(dict(job)) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    rows += [{"method": m, "skipped": reason} for m, reason in skipped.items()]
    return rows
