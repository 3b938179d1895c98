"""Training comparisons and spikiness for element-wise attention (chapter 7).

Three tasks on one budget per run: the character-level corpus (:func:`train_char`),
multi-query associative recall (reusing :func:`attnbook.experiments.recall.train_recall`),
and a synthetic multivariate forecasting task generated here (:func:`make_series`,
:class:`Forecaster`, :func:`train_forecast`). :func:`spikiness` measures how peaked
the attention distributions of a trained model are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from attnbook.checks import check_nonnegative_int, check_positive_float, check_positive_int
from attnbook.config import DEVICE
from attnbook.mechanisms.dense import attention_weights
from attnbook.mechanisms.elementwise import elementwise_weights
from attnbook.mechanisms.linear import linear_attention_numpy
from attnbook.models.gpt import GPT, Block, GPTConfig
from attnbook.models.train import train

__all__ = [
    "METHODS",
    "method_label",
    "make_series",
    "persistence_mse",
    "Forecaster",
    "train_forecast",
    "train_char",
    "train_mqar",
    "attention_inputs",
    "spikiness",
    "summarize",
]

#: (mixer, options) pairs the chapter compares: softmax, linear, and element-wise attention at t =
#: 2, 4, 6, 8.
METHODS = [("dense", {}), ("linear", {})] + [("elementwise", {"order": t}) for t in (2, 4, 6, 8)]


def method_label(method: str, options: dict) -> str:
    """'softmax', 'linear' or 'EA t=4'."""
    return {"dense": "softmax"}.get(
        method, f"EA t={options['order']}" if method == "elementwise" else method
    )


def make_series(
    batch: int,
    seq_len: int,
    channels: int = 4,
    components: int = 2,
    noise: float = 0.2,
    seed: int = 0,
) -> torch.Tensor:
    """Synthetic multivariate series: (B, seq_len, channels) float32. Chapter 7.

    Each sequence draws ``components`` sinusoids (frequencies uniform in [0.02, 0.12] cycles per
    step, random phases) and a random (channels × components) mixing matrix; channel c is its
    mix of the sinusoids plus Gaussian noise of standard deviation ``noise``. Forecasting the next
    step well means inferring the frequencies, phases and mixing from the context; no predictor
    can beat a mean squared error of noise² (the noise is fresh at every step).
    """
    for name, value in (
        ("batch", batch),
        ("seq_len", seq_len),
        ("channels", channels),
        ("components", components),
    ):
        check_positive_int(name, value)
    check_positive_float("noise", noise)
    rng = np.random.default_rng(check_nonnegative_int("seed", seed))
    freq = rng.uniform(0.02, 0.12, size=(batch, 1, components))
    phase = rng.uniform(0, 2 * np.pi, size=(batch, 1, components))
    t = np.arange(seq_len)[None, :, None]
    waves = np.sin(2 * np.pi * freq * t + phase)  # (B, N, components)
    mix = rng.standard_normal((batch, components, channels)) / np.sqrt(components)
    x = waves @ mix + noise * rng.standard_normal((batch, seq_len, channels))
    return torch.from_numpy(x.astype(np.float32))


def persistence_mse(x: torch.Tensor) -> float:
    """MSE of predicting each next step by the current one (the naive baseline). x: (B, N, C)."""
    return float(((x[:, 1:] - x[:, :-1]) ** 2).mean())


class Forecaster(nn.Module):
    """Causal one-step-ahead forecaster: x (B, N, C)
    -> prediction of x[:, 1:] (B, N, C) and MSE loss.

    Linear input embedding + position embedding, the GPT's pre-norm blocks with any mixer, a final
    LayerNorm and a linear read-out. ``forward(x, y)`` returns (prediction, loss) like :class:`GPT`.
    """

    def __init__(self, channels: int, config: GPTConfig):
        super().__init__()
        self.config = config
        self.inp = nn.Linear(check_positive_int("channels", channels), config.d_model)
        self.pos = nn.Embedding(config.block_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.out = nn.Linear(config.d_model, channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        h = self.inp(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h)
        pred = self.out(self.ln_f(h))
        return pred, (None if y is None else nn.functional.mse_loss(pred, y))


def _config(
    method: str,
    options: dict,
    vocab_size: int,
    block_size: int,
    d_model: int,
    n_layer: int,
    n_head: int,
) -> GPTConfig:
    return GPTConfig(
        vocab_size=vocab_size,
        block_size=block_size,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        mixer=method,
        mixer_options=dict(options),
    )


def _series_batches(batch_size: int, seq_len: int, channels: int, noise: float, device):
    """``get_batch(split, generator)`` of fresh series, (x, y) = (x_1..x_n, x_2..x_{n+1}); the
    'val' split draws from seeds no training batch uses."""

    def get_batch(split, generator):
        s = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        s += 0 if split == "train" else 2**31
        x = make_series(batch_size, seq_len + 1, channels, noise=noise, seed=s).to(device)
        return x[:, :-1], x[:, 1:]

    return get_batch


def train_forecast(
    method: str,
    options: dict | None = None,
    *,
    seq_len: int = 64,
    channels: int = 4,
    noise: float = 0.2,
    steps: int = 200,
    batch_size: int = 16,
    d_model: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    eval_size: int = 256,
    device=None,
):
    """Train a :class:`Forecaster` with mixer ``method`` on fresh series; score held-out MSE.

    Returns (row, model): the row holds val MSE, the persistence baseline and the noise floor
    noise². Chapter 7.
    """
    options = dict(options or {})
    device = torch.device(device) if device is not None else DEVICE
    config = _config(method, options, 1, seq_len, d_model, n_layer, n_head)
    result = train(
        lambda: Forecaster(channels, config).to(device),
        _series_batches(batch_size, seq_len, channels, noise, device),
        steps=steps,
        lr=lr,
        eval_every=steps,
        eval_batches=2,
        seed=seed,
        progress=False,
    )
    model = result.model
    x = make_series(eval_size, seq_len + 1, channels, noise=noise, seed=10**9 + seed).to(device)
    model.eval()
    with torch.no_grad():
        mse = float(model(x[:, :-1], x[:, 1:])[1])
    row = {
        "task": "timeseries",
        "method": method,
        "options": options,
        "label": method_label(method, options),
        "seed": seed,
        "val_mse": mse,
        "persistence_mse": persistence_mse(x),
        "noise_floor": noise**2,
        "steps": steps,
        "train_s": result.train_s,
        "time_per_iter_s": result.time_per_iter_s,
        "params": result.params,
    }
    return row, model


def train_char(
    corpus,
    method: str,
    options: dict | None = None,
    *,
    block_size: int = 32,
    steps: int = 200,
    batch_size: int = 16,
    d_model: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    device=None,
):
    """Train a small character-level :class:`GPT` on ``corpus``
    (:class:`attnbook.experiments.data.CharCorpus`). Chapter 7.

    Returns (row, model); the row holds the final train/validation loss (nats per character).
    """
    options = dict(options or {})
    device = torch.device(device) if device is not None else DEVICE

    def get_batch(split, generator):
        return corpus.get_batch(split, batch_size, block_size, generator=generator, device=device)

    config = _config(method, options, corpus.vocab_size, block_size, d_model, n_layer, n_head)
    result = train(
        lambda: GPT(config).to(device),
        get_batch,
        steps=steps,
        lr=lr,
        eval_every=steps,
        eval_batches=8,
        seed=seed,
        progress=False,
    )
    row = {
        "task": "tinyshakespeare",
        "method": method,
        "options": options,
        "label": method_label(method, options),
        "seed": seed,
        "val_loss": result.final_val_loss,
        "train_loss": result.history[-1]["train_loss"],
        "steps": steps,
        "train_s": result.train_s,
        "time_per_iter_s": result.time_per_iter_s,
        "params": result.params,
    }
    return row, result.model


def train_mqar(method: str, options: dict | None = None, **kwargs) -> dict:
    """MQAR accuracy of ``method`` via :func:`attnbook.experiments.recall.train_recall` (chapter 5's
    task). Chapter 7."""
    from attnbook.experiments.recall import train_recall

    options = dict(options or {})
    row = train_recall(method, "mqar", options=options, **kwargs)
    return {**row, "task": "mqar", "label": method_label(method, options)}


@torch.no_grad()
def attention_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(q, k) of every attention layer of ``model`` on
    input x, each (B, H, N, d_k), read by forward hooks."""
    captured, hooks = [], []
    mixers = [block.mixer for block in model.blocks]
    for mixer in mixers:
        if not hasattr(mixer, "qkv"):
            raise ValueError(f"model's mixer {type(mixer).__name__} has no q/k projection to read")

        def hook(module, inputs, output, mixer=mixer):
            q, k, _ = output.chunk(3, dim=-1)
            captured.append((mixer.split_heads(q), mixer.split_heads(k)))

        hooks.append(mixer.qkv.register_forward_hook(hook))
    try:
        was = model.training
        model.eval()
        model(x)
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return captured


def _distribution_stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w: (..., N, N) causal rows over keys (last axis).
    Normalised entropy and max weight per row i >= 1."""
    n = w.shape[-1]
    w = w[..., 1:, :]  # row 0 has a single key: always one-hot
    counts = np.arange(2, n + 1)
    ent = -np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0), axis=-1) / np.log(
        counts
    )
    return ent, w.max(axis=-1)


def spikiness(model: nn.Module, x: torch.Tensor) -> dict:
    """How peaked the trained model's causal attention rows are, averaged over layers, heads,
    queries. Chapter 7.

    For every query i >= 1 (i+1 visible keys) and every distribution over keys — per head for
    softmax and linear attention, per head and channel for element-wise attention — returns the mean
    normalised entropy H/log(i+1) (0: all weight on one key, 1: uniform) and the mean largest
    weight.
    """
    method = model.config.mixer
    order = model.config.mixer_options.get("order", 2)
    ents, maxes = [], []
    for q, k in attention_inputs(model, x):
        if method == "dense":
            w = attention_weights(q, k, causal=True).double().cpu().numpy()
        elif method == "linear":
            qn, kn = q.double().cpu().numpy(), k.double().cpu().numpy()
            w = linear_attention_numpy(qn, kn, kn, causal=True, return_weights=True)[1]
        elif method == "elementwise":
            w = elementwise_weights(
                q.double().cpu().numpy(), k.double().cpu().numpy(), order=order, causal=True
            )
            w = np.moveaxis(w, -1, 2)  # (B, H, D, N, N): one distribution per channel
        else:
            raise ValueError(
                "spikiness is defined here for dense, linear and elementwise mixers, got "
                f"{method!r}"
            )
        e, m = _distribution_stats(w)
        ents.append(e.mean())
        maxes.append(m.mean())
    return {"entropy": float(np.mean(ents)), "max_weight": float(np.mean(maxes))}


def summarize(rows, metric: str, by=("task", "label")) -> list[dict]:
    """Mean, std (ddof=1), min, max of ``metric`` over seeds, grouped by the keys ``by``, in
    first-seen order."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row[metric])
    out = []
    for key, vals in groups.items():
        a = np.asarray(vals, dtype=float)
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
