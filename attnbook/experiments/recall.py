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
    """The mechanisms the chapter compares: one entry per registered mechanism with a causal form
    (variants such as sdpa and flash compute dense attention and are left out), in catalogue order."""
    return methods(causal=True, variants=False, device="cpu")


def method_options(method: str, seq_len: int) -> dict:
    """Options the comparison gives ``method`` (window, random features), limited to those it declares."""
    check_positive_int("seq_len", seq_len)
    if method not in methods():
        return {}
    candidates = {"window": WINDOW, "features": 32}
    declared = method_info(method).options
    return {name: value for name, value in candidates.items() if name in declared}


def causal_problem(method: str, options: dict | None = None) -> str | None:
    """None if ``method`` runs with causal=True on a tiny input, else the error it raises (the reason to skip)."""
    if method not in methods():
        return None  # custom GPT mixers are causal by construction
    from attnbook.registry import attention

    q = torch.randn(1, 1, 16, 4, generator=torch.Generator().manual_seed(0))
    try:
        attention(q, q, q, method=method, causal=True, **(options or {}))
    except (ValueError, NotImplementedError) as err:
        return f"{type(err).__name__}: {err}"
    return None


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
):
    """Train a tiny GPT with mixer ``method`` on ``task`` and score query accuracy on held-out data.

    Training batches are fresh draws of the task (seeds from the run's generator); the held-out set is
    ``eval_size`` sequences with seed 10**9 + seed, never drawn in training. ``warmup_steps``, ``min_lr``
    (cosine decay), ``weight_decay`` and ``patience`` (early stop on the validation loss, evaluated every
    ``eval_every`` steps, default ``steps``) go to :func:`attnbook.models.train.train`; ``task_options``
    to the task generator (e.g. ``power_a``); ``short_conv`` to :class:`attnbook.models.gpt.GPTConfig`
    (the kernel size of the convolution in front of every mixer). Returns a dict row with the accuracy, final losses, steps
    run, wall time and parameter count; ``(row, model)`` when ``return_model``. Chapter 5.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    check_nonnegative_int("seed", seed)
    check_positive_int("eval_size", eval_size)
    device = torch.device(device) if device is not None else DEVICE
    task_options = dict(task_options or {})
    make = functools.partial(TASKS[task], **task_options)
    options = method_options(method, seq_len) if options is None else dict(options)
    make(
        1, seq_len, num_pairs, vocab_size, seed=0
    )  # validate the task parameters before building anything

    def get_batch(split, generator):
        s = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        x, y = make(batch_size, seq_len, num_pairs, vocab_size, seed=s)
        return x.to(device), y.to(device)

    config = GPTConfig(
        vocab_size=vocab_size,
        block_size=seq_len,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        mixer=method,
        mixer_options=options,
        short_conv=short_conv,
    )
    result = train(
        lambda: GPT(config).to(device),
        get_batch,
        steps=steps,
        lr=lr,
        eval_every=eval_every or steps,
        eval_batches=2,
        seed=seed,
        progress=False,
        warmup_steps=warmup_steps,
        min_lr=min_lr,
        weight_decay=weight_decay,
        patience=patience,
    )
    model = result.model
    x, y = make(eval_size, seq_len, num_pairs, vocab_size, seed=10**9 + seed)
    model.eval()
    with torch.no_grad():
        accuracy = query_accuracy(model(x.to(device))[0], y.to(device))
    row = {
        "method": method,
        "task": task,
        "seq_len": seq_len,
        "num_pairs": num_pairs,
        "vocab_size": vocab_size,
        "seed": seed,
        "accuracy": accuracy,
        "train_loss": result.history[-1]["train_loss"],
        "val_loss": result.final_val_loss,
        "steps": steps,
        "steps_run": result.steps,
        "batch_size": batch_size,
        "d_model": d_model,
        "n_layer": n_layer,
        "n_head": n_head,
        "lr": lr,
        "warmup_steps": warmup_steps,
        "min_lr": min_lr,
        "weight_decay": weight_decay,
        "patience": patience,
        "short_conv": short_conv,
        "options": options,
        "task_options": task_options,
        "params": result.params,
        "train_s": result.train_s,
        "time_per_iter_s": result.time_per_iter_s,
        "device": result.device,
    }
    return (row, model) if return_model else row


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
