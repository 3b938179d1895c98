"""A generative function in place of attention (chapter 8, after Hilsenbek 2024, arXiv 2406.10906).

Each token is compared with the previous one by a small learned function instead of
attending to every earlier token; the ``+avg`` variant also sees the causal running
mean of all tokens so far. For a sequence x_1..x_n of width d (x_0 := 0):

    generative:      y_t = W_2 · GELU(W_1 [x_t ; x_{t-1}] + b_1) + b_2
    generative+avg:  y_t = W_2 · GELU(W_1 [x_t ; x_{t-1} ; m_t] + b_1) + b_2,
                     m_t = (1/t) Σ_{j<=t} x_j

W_1: (k·d, h) with k = 2 or 3, W_2: (h, d); the hidden width h defaults to d.
The running mean is a cumulative sum divided by t: O(n·d) work, no n×n matrix.
NumPy float64 references (``*_numpy``) sit beside the torch forms.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from attnbook.checks import check_array, check_positive_int, check_tensor

__all__ = [
    "gelu_numpy",
    "running_mean_numpy",
    "previous_token_numpy",
    "generative_numpy",
    "running_mean",
    "previous_token",
    "generative_features",
    "GenerativeMixer",
    "generative_mixer",
    "generative_avg_mixer",
]


# ----------------------------------------------------------------------------- NumPy references
def gelu_numpy(z: np.ndarray) -> np.ndarray:
    """Exact GELU, z·Φ(z), in float64 (same as torch's default ``F.gelu``)."""
    from math import erf

    z = np.asarray(z, dtype=np.float64)
    return z * 0.5 * (1.0 + np.vectorize(erf)(z / np.sqrt(2.0)))


def running_mean_numpy(x) -> np.ndarray:
    """Naive causal mean, one prefix at a time (O(n²·d)).
    x: (B, N, d) -> (B, N, d), m_t = mean(x_1..x_t)."""
    x = check_array("x", x, ndim=3)
    return np.stack([x[:, : t + 1].mean(axis=1) for t in range(x.shape[1])], axis=1)


def previous_token_numpy(x) -> np.ndarray:
    """x_{t-1} for every t, with a zero vector before the first token. x: (B, N, d) -> (B, N, d)."""
    x = check_array("x", x, ndim=3)
    prev = np.zeros_like(x)
    prev[:, 1:] = x[:, :-1]
    return prev


def generative_numpy(x, w1, b1, w2, b2, avg: bool = False) -> np.ndarray:
    """The generative function token by token, float64. Chapter 8.

    x: (B, N, d); w1: (k·d, h) with k = 3 if ``avg`` else 2; b1: (h,); w2: (h, d); b2: (d,).
    Returns y: (B, N, d) with y_t = GELU([x_t; x_{t-1}(; m_t)] w1 + b1) w2 + b2.
    """
    x = check_array("x", x, ndim=3)
    w1, w2 = check_array("w1", w1, ndim=2), check_array("w2", w2, ndim=2)
    b1, b2 = check_array("b1", b1, ndim=1), check_array("b2", b2, ndim=1)
    B, N, d = x.shape
    k = 3 if avg else 2
    if w1.shape[0] != k * d:
        raise ValueError(f"w1 must have {k}·d = {k * d} rows for avg={avg}, got shape {w1.shape}")
    h = w1.shape[1]
    if b1.shape != (h,) or w2.shape != (h, d) or b2.shape != (d,):
        raise ValueError(
            f"b1, w2, b2 must have shapes ({h},), ({h}, {d}), ({d},), got {b1.shape}, {w2.shape}, "
            f"{b2.shape}"
        )
    y = np.empty_like(x)
    for t in range(N):
        prev = x[:, t - 1] if t > 0 else np.zeros((B, d))
        parts = [x[:, t], prev] + ([x[:, : t + 1].mean(axis=1)] if avg else [])
        y[:, t] = gelu_numpy(np.concatenate(parts, axis=-1) @ w1 + b1) @ w2 + b2
    return y


# ----------------------------------------------------------------------------- torch forms
def running_mean(x: torch.Tensor) -> torch.Tensor:
    """Causal running mean by a cumulative sum: O(n·d), no n×n matrix. x: (B, N, d) -> (B, N, d).

    Half-precision inputs are summed in float32 so long prefixes do not lose precision. Chapter 8.
    """
    check_tensor("x", x, ndim=3)
    acc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=acc.dtype).unsqueeze(-1)
    return (acc.cumsum(dim=1) / counts).to(x.dtype)


def previous_token(x: torch.Tensor) -> torch.Tensor:
    """x_{t-1} for every t (zeros before the first token). x: (B, N, d) -> (B, N, d). Chapter 8."""
    check_tensor("x", x, ndim=3)
    return F.pad(x, (0, 0, 1, 0))[:, :-1]


def generative_features(x: torch.Tensor, avg: bool = False) -> torch.Tensor:
    """The input of the generative function: [x_t ; x_{t-1}]
    or [x_t ; x_{t-1} ; m_t]. (B, N, d) -> (B, N, k·d)."""
    parts = [x, previous_token(x)] + ([running_mean(x)] if avg else [])
    return torch.cat(parts, dim=-1)


class GenerativeMixer(nn.Module):
    """Causal token mixer y_t = W_2 GELU(W_1 [x_t; x_{t-1}(; m_t)] + b_1) + b_2. Chapter 8.

    x: (B, N, d_model) -> (B, N, d_model). ``hidden`` is h (default d_model); ``avg`` adds the
    running mean m_t. Cost per token: 2·k·d·h + 2·h·d FLOPs, whatever the context length.
    """

    def __init__(
        self, d_model: int, hidden: int | None = None, avg: bool = False, bias: bool = True
    ):
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        self.hidden = self.d_model if hidden is None else check_positive_int("hidden", hidden)
        if not isinstance(avg, bool):
            raise TypeError(f"avg must be a bool, got {type(avg).__name__}")
        self.avg = avg
        self.fc = nn.Linear((3 if avg else 2) * self.d_model, self.hidden, bias=bias)
        self.proj = nn.Linear(self.hidden, self.d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, ndim=3)
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have last dimension d_model={self.d_model}, got shape {tuple(x.shape)}"
            )
        return self.proj(F.gelu(self.fc(generative_features(x, self.avg))))


def generative_mixer(config) -> GenerativeMixer:
    """The GPT mixer "generative": a :class:`GenerativeMixer` sized by a GPTConfig. Chapter 8."""
    return GenerativeMixer(
        config.d_model, config.mixer_options.get("hidden"), avg=False, bias=config.bias
    )


def generative_avg_mixer(config) -> GenerativeMixer:
    """The GPT mixer "generative+avg": the same with the running mean as a third input.

    Chapter 8.
    """
    return GenerativeMixer(
        config.d_model, config.mixer_options.get("hidden"), avg=True, bias=config.bias
    )
