"""A small, deterministic training loop (chapters 5, 6, 7 and 8).

``get_batch(split, generator) -> (x, y)`` supplies data; the loop uses AdamW,
evaluates train and validation loss every ``eval_every`` steps, and records
time per iteration, peak memory (CUDA: the whole run; CPU: the first step,
measured with the profiler), the model's config and the device.
:meth:`TrainResult.save_json` writes it all, labelled, to a JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from attnbook.checks import check_nonnegative_int, check_positive_float, check_positive_int
from attnbook.measure import describe_device, environment, peak_memory_bytes, sync

__all__ = ["set_seed", "TrainResult", "evaluate", "split_loss", "learning_rate", "train"]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way for data sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainResult:
    """What a run produced: loss history, timing, memory, device."""

    seed: int
    steps: int
    history: list = field(default_factory=list)  # dicts: step, train_loss, val_loss
    time_per_iter_s: float = float("nan")
    peak_memory_bytes: int | None = None
    device: str = ""
    params: int = 0
    config: dict = field(
        default_factory=dict
    )  # the model's config (dataclass fields) and the run's settings
    train_s: float = float("nan")  # wall time of the whole run, evaluations included
    model: object = field(
        default=None, repr=False, compare=False
    )  # the trained module (not serialised)

    @property
    def final_val_loss(self) -> float:
        return self.history[-1]["val_loss"]

    @property
    def best(self) -> dict:
        """The evaluation with the lowest validation loss: {step, train_loss, val_loss}."""
        return min(self.history, key=lambda row: row["val_loss"])

    def as_dict(self) -> dict:
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"
        }

    def save_json(self, path) -> Path:
        """Write the result, labelled with :func:`attnbook.measure.environment`, to ``path``; return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"meta": environment(), **self.as_dict()}, indent=1, default=str) + "\n"
        )
        return path


@torch.no_grad()
def evaluate(model, get_batch, split: str, batches: int, generator: torch.Generator) -> float:
    """Mean loss of ``model`` over ``batches`` batches of ``split``."""
    was_training = model.training
    model.eval()
    losses = [model(*get_batch(split, generator))[1].item() for _ in range(batches)]
    model.train(was_training)
    return float(np.mean(losses))


@torch.no_grad()
def split_loss(
    model, ids: torch.Tensor, block_size: int, stride: int | None = None, batch_size: int = 64
) -> float:
    """Mean next-token loss (nats) of ``model`` over a whole token sequence ``ids`` (chapter 8).

    ids: (T,) token ids. Windows of ``block_size`` tokens start every ``stride`` tokens (default
    ``block_size // 2``); each token is scored once, in the first window that scores it, so every token
    after the first window is predicted from at least ``block_size - stride`` tokens of context. This is
    the full-split score that chapter 8 compares with the n-gram models (which score every token too).
    """
    check_positive_int("block_size", block_size)
    stride = max(1, block_size // 2) if stride is None else check_positive_int("stride", stride)
    if stride > block_size:
        raise ValueError(f"stride must be <= block_size={block_size}, got {stride}")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or len(ids) < 2:
        raise ValueError("ids must be a 1-D tensor of at least 2 token ids")
    n = min(block_size, len(ids) - 1)
    starts = list(range(0, len(ids) - 1 - n, stride)) + [len(ids) - 1 - n]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, scored = 0.0, 0, 0  # scored: tokens [0, scored) of the targets already counted
    for i in range(0, len(starts), batch_size):
        xs, ys = [], []
        for s in starts[i : i + batch_size]:
            y = ids[s + 1 : s + 1 + n].clone()
            y[: max(0, scored - s)] = -100  # already scored by an earlier window
            scored = s + n
            xs.append(ids[s : s + n])
            ys.append(y)
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        logits, _ = model(x)
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        count += int((y != -100).sum())
    model.train(was_training)
    return total / count


def learning_rate(
    step: int, steps: int, lr: float, warmup_steps: int = 0, min_lr: float | None = None
) -> float:
    """The schedule of :func:`train` at step 1..steps: linear warm-up, then constant (``min_lr`` None) or a
    cosine decay to ``min_lr`` at the last step (nanoGPT's schedule)."""
    if step <= warmup_steps:
        return lr * step / warmup_steps
    if min_lr is None:
        return lr
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def train(
    model,
    get_batch,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    eval_every: int = 100,
    eval_batches: int = 10,
    seed: int = 0,
    progress: bool = True,
    grad_clip: float = 1.0,
    warmup_steps: int = 0,
    min_lr: float | None = None,
    patience: int | None = None,
    val_loss_fn=None,
) -> TrainResult:
    """The book's one training loop: ``steps`` AdamW steps of ``model(x, y) -> (output, loss)``.

    ``model``: a module, or a function of no arguments that builds one (called after seeding, so the
    initialisation is reproducible from ``seed``); ``get_batch(split, generator)`` returns (x, y) on the
    model's device for split 'train' or 'val'; train and validation loss are evaluated every
    ``eval_every`` steps and at the end, on a generator of their own (seed + 1). The learning rate follows
    :func:`learning_rate` (warm-up, then constant or cosine to ``min_lr``); with ``patience`` the run stops
    once the validation loss has not improved for that many evaluations; ``val_loss_fn(model) -> float``
    replaces the random validation batches (chapter 8 scores the whole split with :func:`split_loss`). Returns a :class:`TrainResult`
    (history, best validation loss, time per step, peak memory, parameters, wall time, the model).
    """
    check_positive_int("steps", steps)
    check_positive_int("eval_every", eval_every)
    check_positive_int("eval_batches", eval_batches)
    check_positive_float("lr", lr)
    check_nonnegative_int("warmup_steps", warmup_steps)
    if min_lr is not None and not 0 <= min_lr <= lr:
        raise ValueError(f"min_lr must lie in [0, lr={lr}], got {min_lr}")
    if patience is not None:
        check_positive_int("patience", patience)
    start = time.perf_counter()
    gen = set_seed(seed)
    if not isinstance(model, torch.nn.Module):
        if not callable(model):
            raise TypeError(
                f"model must be a torch.nn.Module or a function building one, got {type(model).__name__}"
            )
        model = model()
    eval_gen = torch.Generator().manual_seed(seed + 1)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    config = getattr(model, "config", None)
    settings = {
        "steps": steps,
        "lr": lr,
        "weight_decay": weight_decay,
        "eval_every": eval_every,
        "warmup_steps": warmup_steps,
        "min_lr": min_lr,
        "patience": patience,
        "eval_batches": eval_batches,
        "grad_clip": grad_clip,
    }
    result = TrainResult(
        seed=seed,
        steps=steps,
        device=describe_device(device),
        model=model,
        params=sum(p.numel() for p in model.parameters()),
        config={**(asdict(config) if dataclasses.is_dataclass(config) else {}), "train": settings},
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    model.train()
    bar = tqdm(
        range(1, steps + 1), disable=None if progress else True, leave=False, desc="train"
    )  # None: only on a terminal

    def one_step():
        x, y = get_batch("train", gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()

    best, since_best = float("inf"), 0
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup_steps, min_lr)
        sync(device)
        t0 = time.perf_counter()
        if step == 1 and device.type == "cpu":
            result.peak_memory_bytes = peak_memory_bytes(
                one_step, device=device
            )  # not timed: see below
        else:
            one_step()
        sync(device)
        times.append(time.perf_counter() - t0)
        if step % eval_every == 0 or step == steps:
            row = {
                "step": step,
                "train_loss": evaluate(model, get_batch, "train", eval_batches, eval_gen),
                "val_loss": (
                    evaluate(model, get_batch, "val", eval_batches, eval_gen)
                    if val_loss_fn is None
                    else float(val_loss_fn(model))
                ),
            }
            result.history.append(row)
            bar.set_postfix(val=f"{row['val_loss']:.3f}")
            best, since_best = (
                (row["val_loss"], 0) if row["val_loss"] < best else (best, since_best + 1)
            )
            if patience is not None and since_best >= patience:
                result.steps = step  # stopped early: the validation loss no longer improves
                break
    result.time_per_iter_s = float(
        np.median(times[1:] if len(times) > 1 else times)
    )  # step 1 warms up
    if device.type == "cuda":
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    result.train_s = time.perf_counter() - start
    return result
