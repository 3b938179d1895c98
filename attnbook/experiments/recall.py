"""Train tiny models on the recall tasks, one per mechanism, on the same budget (chapter 5).

The list of mechanisms is read from the registry at run time (:func:`recall_methods`),
so the chapter trains whatever :func:`attnbook.methods` holds when it runs. A method
that cannot run causally (the GPT needs causal mixing) is reported as skipped with
the reason, never hidden.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from attnbook.checks import check_nonnegative_int, check_positive_int
from attnbook.config import DEVICE
from attnbook.experiments.tasks import TASKS, query_accuracy
from attnbook.models.gpt import GPT, GPTConfig
from attnbook.models.train import train
from attnbook.registry import method_info, methods

__all__ = [
    "WINDOW",
    "recall_methods",
    "method_options",
    "causal_problem",
    "train_recall",
    "compare",
    "summarize",
]

#: Local window (tokens) given to the windowed methods: recall fails once answers lie farther back.
WINDOW = 4


def recall_methods() -> list[str]:
    """The mechanisms the chapter compares: one entry per registered
    mechanism with a causal form (variants such as sdpa and flash
    compute dense attention and are left out), in catalogue order."""
    return methods(causal=True, variants=False, device="cpu")


def method_options(method: str, seq_len: int) -> dict:
    """Options the comparison gives ``method`` (window,
    random features), limited to those it declares."""
    check_positive_int("seq_len", seq_len)
    if method not in methods():
        return {}
    candidates = {"window": WINDOW, "features": 32}
    declared = method_info(method).options
    return {name: value for name, value in candidates.items() if name in declared}


def causal_problem(method: str, options: dict | None = None) -> str | None:
    """None if ``method`` runs with causal=True on a tiny
    input, else the error it raises (the reason to skip)."""
    if method not in methods():
        return None  # custom GPT mixers are causal by construction
    from attnbook.registry import attention

    q = torch.randn(1, 1, 16, 4, generator=torch.Generator().manual_seed(0))
    try:
        attention(q, q, q, method=method, causal=True, **(options or {}))
    except (ValueError, NotImplementedError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _task_maker(task: str, task_options: dict, seq_len: int, num_pairs: int, vocab_size: int):
    """The generator of ``task`` with ``task_options`` bound, its parameters checked on one draw."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    make = functools.partial(TASKS[task], **task_options)
    make(1, seq_len, num_pairs, vocab_size, seed=0)  # validate before building anything
    return make


def _batches(make, batch_size: int, seq_len: int, num_pairs: int, vocab_size: int, device):
    """``get_batch(split, generator)`` for :func:`~attnbook.models.train.train`: fresh draws of the
    task, each seeded from ``generator``."""

    def get_batch(split, generator):
        s = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        x, y = make(batch_size, seq_len, num_pairs, vocab_size, seed=s)
        return x.to(device), y.to(device)

    return get_batch


def _accuracy(model, x, y, device) -> float:
    """Query accuracy of ``model`` (put in eval mode) on held-out x, y: (B, N)."""
    model.eval()
    with torch.no_grad():
        return query_accuracy(model(x.to(device))[0], y.to(device))


def _recall_row(result, accuracy: float, config: GPTConfig, run: dict, sizes: dict) -> dict:
    """The row of :func:`train_recall`: ``run`` (method, task, num_pairs, task options) and the
    config's shape, accuracy and losses, ``sizes``, the schedule, mixers, options and costs, in the
    order of the stored results."""
    schedule = result.config["train"]
    return {
        "method": run["method"],
        "task": run["task"],
        "seq_len": config.block_size,
        "num_pairs": run["num_pairs"],
        "vocab_size": config.vocab_size,
        "seed": result.seed,
        "accuracy": accuracy,
        "train_loss": result.history[-1]["train_loss"],
        "val_loss": result.final_val_loss,
        "steps": schedule["steps"],
        "steps_run": result.steps,
        **sizes,
        **{key: schedule[key] for key in ("lr", "warmup_steps", "min_lr", "weight_decay")},
        "patience": schedule["patience"],
        "short_conv": config.short_conv,
        "layer_mixers": list(config.layer_mixers),
        "options": config.mixer_options,
        "task_options": run["task_options"],
        "params": result.params,
        "train_s": result.train_s,
        "time_per_iter_s": result.time_per_iter_s,
        "device": result.device,
    }


def train_recall(
    method: str,
    task: str = "mqar",
    *,
    seq_len: int = 32,
    num_pairs: int = 4,
    vocab_size: int = 33,
    steps: int = 300,
    batch_size: int = 128,
    d_model: int = 64,
    n_layer: int = 2,
    n_head: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    eval_size: int = 512,
    options: dict | None = None,
    device=None,
    return_model: bool = False,
    warmup_steps: int = 0,
    min_lr: float | None = None,
    weight_decay: float = 0.0,
    patience: int | None = None,
    eval_every: int | None = None,
    task_options: dict | None = None,
    short_conv: int = 0,
    layer_mixers: tuple = (),
):
    """Train a tiny GPT with mixer ``method`` on ``task`` and score query accuracy on held-out data.

    Training batches are fresh draws of the task (seeds from the run's generator); the held-out set
    is ``eval_size`` sequences with seed 10**9 + seed, never drawn in training. ``warmup_steps``,
    ``min_lr`` (cosine decay), ``weight_decay`` and ``patience`` (early stop on the validation loss,
    evaluated every ``eval_every`` steps, default ``steps``) go to
    :func:`attnbook.models.train.train`; ``task_options`` to the task generator (e.g. ``power_a``);
    ``short_conv`` to :class:`attnbook.models.gpt.GPTConfig` (the kernel size of the convolution in
    front of every mixer); ``layer_mixers``: one mixer per layer, a hybrid, in place of ``method``
    in every layer. Returns a dict row with the accuracy, final losses, steps run, wall time and
    parameter count; ``(row, model)`` when ``return_model``. Chapter 5.
    """
    check_nonnegative_int("seed", seed)
    check_positive_int("eval_size", eval_size)
    device = torch.device(device) if device is not None else DEVICE
    task_options = dict(task_options or {})
    make = _task_maker(task, task_options, seq_len, num_pairs, vocab_size)
    options = method_options(method, seq_len) if options is None else dict(options)
    width = {"n_layer": n_layer, "n_head": n_head, "d_model": d_model, "short_conv": short_conv}
    config = GPTConfig(
        vocab_size, seq_len, mixer=method, mixer_options=options, layer_mixers=layer_mixers, **width
    )
    schedule = {"steps": steps, "lr": lr, "warmup_steps": warmup_steps, "min_lr": min_lr}
    schedule.update(weight_decay=weight_decay, patience=patience, eval_every=eval_every or steps)
    schedule.update(seed=seed, eval_batches=2, progress=False)
    get_batch = _batches(make, batch_size, seq_len, num_pairs, vocab_size, device)
    result = train(lambda: GPT(config).to(device), get_batch, **schedule)
    held_out = make(eval_size, seq_len, num_pairs, vocab_size, seed=10**9 + seed)
    accuracy = _accuracy(result.model, *held_out, device)
    run = {"method": method, "task": task, "num_pairs": num_pairs, "task_options": task_options}
    sizes = {"batch_size": batch_size, "d_model": d_model, "n_layer": n_layer, "n_head": n_head}
    row = _recall_row(result, accuracy, config, run, sizes)
    return (row, result.model) if return_model else row


def compare(
    method_list, settings, seeds=(0,), verbose: bool = True, **train_kwargs
) -> tuple[list[dict], dict]:
    """Train every method on every setting (dicts of train_recall keywords) for every seed.

    Returns (rows, skipped): ``skipped`` maps a method to the reason it cannot run causally;
    the reason is printed when ``verbose``. Chapter 5.
    """
    rows, skipped = [], {}
    for method in method_list:
        reason = causal_problem(method, method_options(method, 64))
        if reason is not None:
            skipped[method] = reason
            if verbose:
                print(f"skipped {method}: {reason}")
            continue
        for setting in settings:
            for seed in seeds:
                rows.append(train_recall(method, seed=seed, **{**train_kwargs, **setting}))
    return rows, skipped


def summarize(rows, by=("method", "seq_len")) -> list[dict]:
    """Mean, standard deviation, min and max of accuracy over seeds, grouped by the keys ``by``."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row["accuracy"])
    out = []
    for key, accs in groups.items():
        a = np.asarray(accs)
        out.append(
            {
                **dict(zip(by, key)),
                "mean": float(a.mean()),
                "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
                "min": float(a.min()),
                "max": float(a.max()),
                "seeds": int(a.size),
            }
        )
    return out
