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
    """Seed Python, NumPy and torch; return a torch.Generator seeded alike for data sampling."""
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
    #: the model's config (dataclass fields) and the run's settings
    config: dict = field(default_factory=dict)
    train_s: float = float("nan")  # wall time of the whole run, evaluations included
    #: the trained module (not serialised)
    model: object = field(default=None, repr=False, compare=False)

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
        """Write the result to ``path``, labelled by
        :func:`attnbook.measure.environment`; return the path."""
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
    ``block_size // 2``); each token is scored once, in the first window that scores it, so every
    token after the first window is predicted from at least ``block_size - stride`` tokens of
    context. This is the full-split score that chapter 8 compares with the n-gram models (which
    score every token too).
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
    """The schedule of :func:`train` at step 1..steps (nanoGPT's schedule).

    Linear warm-up, then constant (``min_lr`` None) or a cosine decay to ``min_lr`` at the last
    step.
    """
    if step <= warmup_steps:
        return lr * step / warmup_steps
    if min_lr is None:
        return lr
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def _schedule(
    steps, lr, weight_decay, eval_every, warmup_steps, min_lr, patience, eval_batches, grad_clip
) -> dict:
    """The run's settings, checked, as :class:`TrainResult` records them."""
    check_positive_int("steps", steps)
    check_positive_int("eval_every", eval_every)
    check_positive_int("eval_batches", eval_batches)
    check_positive_float("lr", lr)
    check_nonnegative_int("warmup_steps", warmup_steps)
    if min_lr is not None and not 0 <= min_lr <= lr:
        raise ValueError(f"min_lr must lie in [0, lr={lr}], got {min_lr}")
    if patience is not None:
        check_positive_int("patience", patience)
    return {
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


def _built(model) -> torch.nn.Module:
    """``model`` itself, or the module the function ``model`` builds."""
    if isinstance(model, torch.nn.Module):
        return model
    if not callable(model):
        raise TypeError(
            "model must be a torch.nn.Module or a function building one, got "
            f"{type(model).__name__}"
        )
    return model()


def _new_result(model, seed: int, steps: int, settings: dict) -> TrainResult:
    """An empty :class:`TrainResult` for ``model``, labelled with its config and ``settings``."""
    config = getattr(model, "config", None)
    return TrainResult(
        seed=seed,
        steps=steps,
        device=describe_device(next(model.parameters()).device),
        model=model,
        params=sum(p.numel() for p in model.parameters()),
        config={**(asdict(config) if dataclasses.is_dataclass(config) else {}), "train": settings},
    )


def _step_fn(model, opt, get_batch, gen: torch.Generator, grad_clip: float):
    """One optimiser step on a fresh training batch (a function of no arguments)."""

    def one_step():
        x, y = get_batch("train", gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()

    return one_step


def _timed(one_step, step: int, device: torch.device, result: TrainResult) -> float:
    """Seconds one step takes; on CPU step 1 runs under the profiler for the peak memory instead
    (its time is then not representative, which is why the median skips it)."""
    sync(device)
    t0 = time.perf_counter()
    if step == 1 and device.type == "cpu":
        result.peak_memory_bytes = peak_memory_bytes(one_step, device=device)
    else:
        one_step()
    sync(device)
    return time.perf_counter() - t0


def _evaluation(model, get_batch, step, eval_batches, eval_gen, val_loss_fn) -> dict:
    """{step, train_loss, val_loss}: random batches, or ``val_loss_fn(model)`` for validation."""
    train_loss = evaluate(model, get_batch, "train", eval_batches, eval_gen)
    if val_loss_fn is None:
        val_loss = evaluate(model, get_batch, "val", eval_batches, eval_gen)
    else:
        val_loss = float(val_loss_fn(model))
    return {"step": step, "train_loss": train_loss, "val_loss": val_loss}


def _loop(result, opt, one_step, lr_at, evaluation, *, eval_every, patience, progress) -> list:
    """Steps 1..``result.steps`` of :func:`train`: set the learning rate ``lr_at(step)``, time one
    step, append ``evaluation(step)`` to the history every ``eval_every`` steps and at the end, stop
    after ``patience`` evaluations without a better validation loss. Returns the step times."""
    steps, device = result.steps, next(result.model.parameters()).device
    times, best, since_best = [], float("inf"), 0
    # disable=None: a progress bar only on a terminal
    bar = tqdm(range(1, steps + 1), disable=None if progress else True, leave=False, desc="train")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        times.append(_timed(one_step, step, device, result))
        if step % eval_every == 0 or step == steps:
            row = evaluation(step)
            result.history.append(row)
            bar.set_postfix(val=f"{row['val_loss']:.3f}")
            improved = row["val_loss"] < best
            best, since_best = (row["val_loss"], 0) if improved else (best, since_best + 1)
            if patience is not None and since_best >= patience:
                result.steps = step  # stopped early: the validation loss no longer improves
                break
    return times


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

    ``model``: a module, or a function of no arguments that builds one (called after seeding, so
    the initialisation is reproducible from ``seed``); ``get_batch(split, generator)`` returns
    (x, y) on the model's device for split 'train' or 'val'. Train and validation loss are
    evaluated every ``eval_every`` steps and at the end, on a generator of their own (seed + 1).
    The learning rate follows :func:`learning_rate` (warm-up, then constant or cosine to
    ``min_lr``); with ``patience`` the run stops once the validation loss has not improved for
    that many evaluations; ``val_loss_fn(model) -> float`` replaces the random validation batches
    (chapter 8 scores the whole split with :func:`split_loss`). Returns a :class:`TrainResult`
    (history, best validation loss, time per step, peak memory, parameters, wall time, the model).
    """
    settings = _schedule(
        steps, lr, weight_decay, eval_every, warmup_steps, min_lr, patience, eval_batches, grad_clip
    )
    start = time.perf_counter()
    gen = set_seed(seed)
    model = _built(model)
    eval_gen = torch.Generator().manual_seed(seed + 1)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    result = _new_result(model, seed, steps, settings)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    one_step = _step_fn(model, opt, get_batch, gen, grad_clip)
    model.train()
    times = _loop(
        result,
        opt,
        one_step,
        lambda step: learning_rate(step, steps, lr, warmup_steps, min_lr),
        lambda step: _evaluation(model, get_batch, step, eval_batches, eval_gen, val_loss_fn),
        eval_every=eval_every,
        patience=patience,
        progress=progress,
    )
    # step 1 warms up (and on CPU runs under the profiler): the median skips it
    result.time_per_iter_s = float(np.median(times[1:] if len(times) > 1 else times))
    if device.type == "cuda":
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(device))
    result.train_s = time.perf_counter() - start
    return result
