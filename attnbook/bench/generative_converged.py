"""Suite "generative-converged" (chapter 8): the generative function against attention, converged.

The configuration is nanoGPT's CPU recipe for tiny Shakespeare (4 layers, 4 heads, width 128,
context 64, batch 12, no dropout, 2000 iterations, learning rate 1e-3 with 100 warm-up steps and a
cosine decay to 1e-4). Dense attention and both generative mixers run with 3 seeds, linear and
element-wise attention with 1 as reference points; every run evaluates every 100 steps on 20
batches and keeps its best validation loss. The count-based n-gram baselines (orders 1–5) are rows
too (``mixer`` = ``ngram-K``). A smaller part trains at context lengths 64, 256 and 1024 (a fixed
number of tokens per batch, 400 steps).

Part "long" (:func:`run_long`) trains dense attention and both generative mixers once each for
:data:`LONG_STEPS` steps, scoring the **whole** validation split at every checkpoint
(:func:`attnbook.models.train.split_loss`, as the n-grams are scored), and dense attention again at
context 256 (the same 768 tokens per batch).

Suite "generative-cost" (:func:`run_cost`, measured apart on a quiet machine) holds the time and
peak memory of one training iteration per mixer and context length, and the paper's ×4 inner
dimension of the generative function as ratios.
"""

from __future__ import annotations

import functools
import multiprocessing
import os

import torch

from attnbook.bench import sweep
from attnbook.experiments.data import CharCorpus, load_tinyshakespeare
from attnbook.experiments.ngram import ngram_rows
from attnbook.measure import count_flops, peak_memory_bytes, time_fn
from attnbook.models.gpt import GPT, GPTConfig
from attnbook.models.train import split_loss, train
from attnbook.registry import methods, mixers

__all__ = [
    "SHAPE",
    "SCHEDULE",
    "LONG_STEPS",
    "converged_mixers",
    "train_row",
    "iteration_cost",
    "run",
    "run_long",
    "run_cost",
]

SHAPE = {"n_layer": 4, "n_head": 4, "d_model": 128, "block_size": 64, "dropout": 0.0}
SCHEDULE = {
    "steps": 2000,
    "batch_size": 12,
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup_steps": 100,
    "eval_every": 100,
    "eval_batches": 20,
}
CONTEXTS = (64, 256, 1024)
TOKENS_PER_BATCH = 768  # 12 × 64: the main runs' batch, kept fixed across context lengths
LONG_STEPS = 12_000  # part "long": 9.2 M training tokens, about 9 passes over the training split
LONG_EVAL_EVERY = 500


def converged_mixers() -> dict[str, int]:
    """{mixer: seeds}: dense and the generative mixers with 3 seeds, the linear-time references
    with 1."""
    seeds = {"dense": 3, **{m: 3 for m in mixers(family="generative")}}
    seeds.update(
        {m: 1 for m in methods(family="linear", variants=False) + methods(family="elementwise")}
    )
    return seeds


@functools.lru_cache(maxsize=1)
def _corpus() -> CharCorpus:
    """The corpus, loaded once per process (the runs of a suite, and each worker, share it)."""
    return CharCorpus(load_tinyshakespeare())


def _get_batch(corpus: CharCorpus, batch_size: int, block: int, device):
    def get_batch(split, generator):
        return corpus.get_batch(split, batch_size, block, generator=generator, device=device)

    return get_batch


def train_row(
    corpus: CharCorpus,
    mixer: str,
    seed: int,
    device,
    schedule: dict,
    shape: dict,
    *,
    return_model: bool = False,
    full_val: bool = False,
    **mixer_options,
):
    """Train one model and return its row: best and final losses, curve, time, FLOPs per iteration
    (``(row, model)`` with ``return_model``)."""
    config = GPTConfig(
        vocab_size=corpus.vocab_size, mixer=mixer, mixer_options=mixer_options, **shape
    )
    s = dict(schedule)
    batch_size = s.pop("batch_size")
    get_batch = _get_batch(corpus, batch_size, config.block_size, device)
    val_loss_fn = (
        (lambda model: split_loss(model, corpus.val, config.block_size)) if full_val else None
    )
    result = train(
        lambda: GPT(config).to(device),
        get_batch,
        progress=False,
        seed=seed,
        val_loss_fn=val_loss_fn,
        **s,
    )
    x, y = get_batch("train", torch.Generator().manual_seed(seed))
    flops = count_flops(
        lambda: result.model(x, y)[1].backward()
    )  # one iteration, forward and backward
    best = result.best
    row = {
        "part": "converged",
        "mixer": mixer,
        "seed": seed,
        "steps": result.steps,
        "best_step": best["step"],
        "val_loss": best["val_loss"],
        "train_loss": best["train_loss"],
        "final_val_loss": result.final_val_loss,
        "history": result.history,
        "params": result.params,
        "batch_size": batch_size,
        "block_size": config.block_size,
        "mixer_options": mixer_options,
        "time_per_iter_s": result.time_per_iter_s,
        "train_s": result.train_s,
        "flops_per_iter": flops,
        "peak_memory_bytes": result.peak_memory_bytes,
        "full_val": full_val,
        "tokens_per_iter": batch_size * config.block_size,
    }
    return (row, result.model) if return_model else row


def iteration_cost(
    corpus: CharCorpus,
    mixer: str,
    device,
    shape: dict,
    batch_size: int,
    repeats: int = 5,
    **mixer_options,
) -> dict:
    """Time (minimum of ``repeats``) and peak memory of one training iteration.

    The iteration is forward, backward and an AdamW step.
    """
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=corpus.vocab_size, mixer=mixer, mixer_options=mixer_options, **shape
    )
    model = GPT(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = _get_batch(corpus, batch_size, config.block_size, device)(
        "train", torch.Generator().manual_seed(0)
    )

    def step():
        opt.zero_grad(set_to_none=True)
        model(x, y)[1].backward()
        opt.step()

    t = time_fn(step, warmup=1, repeats=repeats, device=device)
    return {
        "mixer": mixer,
        "block_size": config.block_size,
        "batch_size": batch_size,
        "min_s": t.min_s,
        "median_s": t.median_s,
        "peak_bytes": int(peak_memory_bytes(step, device=device)),
        "params": sum(p.numel() for p in model.parameters()),
        "mixer_options": mixer_options,
    }


def _sizes(quick: bool) -> tuple[dict, dict]:
    schedule, shape = dict(SCHEDULE), dict(SHAPE)
    if quick:  # a smoke test of every part, minutes not hours: nothing here converges
        schedule.update(steps=40, eval_every=20, eval_batches=2, warmup_steps=5)
        shape.update(n_layer=1, d_model=32)
    return schedule, shape


def run(device: torch.device, quick: bool) -> list[dict]:
    """Suite "generative-converged": the n-gram rows, the converged runs, validation loss vs
    context length."""
    corpus = _corpus()
    rows = [{"part": "ngram", **r} for r in ngram_rows(corpus)]
    schedule, shape = _sizes(quick)
    jobs = [
        ("converged", m, s, schedule, shape, False)
        for m, seeds in converged_mixers().items()
        for s in range(1 if quick else seeds)
    ]
    context_schedule = {
        **schedule,
        "steps": 40 if quick else 400,
        "eval_every": 20 if quick else 100,
        "warmup_steps": 5 if quick else 50,
    }
    jobs += [
        (
            "context",
            m,
            0,
            {**context_schedule, "batch_size": max(1, TOKENS_PER_BATCH // block)},
            {**shape, "block_size": block},
            False,
        )
        for block in (CONTEXTS[:2] if quick else CONTEXTS)
        for m in ["dense", *mixers(family="generative")]
    ]
    return rows + _run_jobs(device, quick, jobs + long_jobs(quick))


def long_jobs(quick: bool) -> list[tuple]:
    """The runs of part "long": (part, mixer, seed, schedule, shape, full_val)."""
    schedule, shape = _sizes(quick)
    schedule.update(steps=60 if quick else LONG_STEPS, eval_every=30 if quick else LONG_EVAL_EVERY)
    block = 2 * shape["block_size"] if quick else 256
    wide = {**schedule, "batch_size": max(1, TOKENS_PER_BATCH // block)}
    # dense attention at the longer context first: the longest run, so two workers finish together
    return [("long", "dense", 0, wide, {**shape, "block_size": block}, True)] + [
        ("long", m, 0, schedule, shape, True) for m in ["dense", *mixers(family="generative")]
    ]


def run_long(device: torch.device, quick: bool) -> list[dict]:
    """Part "long" of suite "generative-converged" (see the module docstring)."""
    return _run_jobs(device, quick, long_jobs(quick))


def _run_jobs(device: torch.device, quick: bool, jobs: list[tuple]) -> list[dict]:
    if (
        device.type == "cpu" and not quick
    ):  # independent runs: one process per core, one thread each
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(processes=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
            return pool.map(_job, [(device.type, *job) for job in jobs])
    return [_job((device.type, *job)) for job in sweep(jobs, "runs")]


def _job(args) -> dict:
    """One training run (also in a worker process: the runs' times are not used, see suite
    "generative-cost" for time per iteration)."""
    device_type, part, mixer, seed, schedule, shape, full_val = args
    if device_type == "cpu":
        torch.set_num_threads(1)
    row = train_row(
        _corpus(), mixer, seed, torch.device(device_type), schedule, shape, full_val=full_val
    )
    return {**row, "part": part}


def run_cost(device: torch.device, quick: bool) -> list[dict]:
    """Suite "generative-cost": time (minimum) and peak memory of one training iteration per mixer.

    At the converged configuration and against the context length, and the ×4 inner dimension as
    ratios.
    """
    corpus = _corpus()
    _, shape = _sizes(quick)
    rows = []
    for block in sweep(CONTEXTS[:2] if quick else CONTEXTS, "context length"):
        for mixer in converged_mixers():
            batch = max(1, TOKENS_PER_BATCH // block)
            rows.append(
                {
                    "part": "context",
                    **iteration_cost(
                        corpus,
                        mixer,
                        device,
                        {**shape, "block_size": block},
                        batch,
                        repeats=3 if quick else 10,
                    ),
                }
            )
    paper_shape = {
        "n_layer": 6,
        "n_head": 6,
        "d_model": 384,
        "block_size": 256,
        "dropout": 0.0,
    }  # nanoGPT's
    if quick:
        paper_shape.update(n_layer=1, d_model=48, block_size=32)
    for mixer in mixers(family="generative"):
        d = paper_shape["d_model"]
        for hidden in (d, 4 * d):
            rows.append(
                {
                    "part": "inner-dimension",
                    "hidden": hidden,
                    **iteration_cost(
                        corpus,
                        mixer,
                        device,
                        paper_shape,
                        4,
                        repeats=3 if quick else 5,
                        hidden=hidden,
                    ),
                }
            )
    return rows
