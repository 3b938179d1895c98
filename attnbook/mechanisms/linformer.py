"""Linformer: keys and values projected to k rows (chapter 4, Long sequences; Wang et al. 2020).

    out = softmax(Q (E K)ᵀ / √D) (F V),   E, F ∈ ℝ^{k×n},

an (N, k) score matrix instead of (N, n): O(N·k·D) time. In the paper E and F are learned; the
book's parameter-free method fixes them at random, as a freshly initialised layer would be: i.i.d.
N(0, 1/n) entries (fan-in scaling, so each projected key and value has the scale of one key and
value) from ``numpy.random.default_rng(seed)``, E drawn first, then F (:func:`projections`). Causal
Linformer is not defined: each row of E K mixes keys from every position, future ones included, so
no mask on the (N, k) scores can hide the future.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from attnbook.checks import check_nonnegative_int, check_positive_int
from attnbook.mechanisms.linear import _check_np_qkv
from attnbook.reference import softmax

__all__ = ["projections", "linformer_numpy", "linformer_attention"]

RANK = 64

_CAUSAL_MSG = (
    "causal=True is not supported by Linformer: each projected key (E K)_r mixes keys from every "
    "position, including future ones, so a causal mask cannot be applied to its (N, k) scores"
)


def _check_rank(rank, n: int) -> int:
    rank = check_positive_int("rank", rank)
    if rank > n:
        raise ValueError(
            f"rank (the projected length, the book's k) must be <= the number of keys n={n}, "
            f"got rank={rank}"
        )
    return rank


@lru_cache(maxsize=8)
def _projections_cached(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((k, n)) / np.sqrt(n)
    F = rng.standard_normal((k, n)) / np.sqrt(n)
    E.setflags(write=False)
    F.setflags(write=False)
    return E, F


def projections(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """E, F: (k, n) float64 with i.i.d. N(0, 1/n) entries,
    seeded (``default_rng(seed)``; E drawn first)."""
    n = check_positive_int("n", n)
    k = _check_rank(k, n)
    return _projections_cached(n, k, check_nonnegative_int("seed", seed))


def linformer_numpy(q, k, v, causal: bool = False, rank: int = RANK, seed: int = 0) -> np.ndarray:
    """NumPy float64 reference. q: (B, H, N, D), k:
    (B, H, n, D), v: (B, H, n, Dv) -> (B, H, N, Dv)."""
    if causal:
        raise ValueError(_CAUSAL_MSG)
    q, k, v = _check_np_qkv(q, k, v)
    E, F = projections(k.shape[2], rank, seed)
    scores = q @ np.swapaxes(E @ k, -1, -2) / np.sqrt(q.shape[-1])
    return softmax(scores, axis=-1) @ (F @ v)


@lru_cache(maxsize=8)
def _projection_tensors(n: int, k: int, seed: int, device: str, dtype: torch.dtype):
    return tuple(
        torch.as_tensor(np.array(m), dtype=dtype, device=device) for m in projections(n, k, seed)
    )


def linformer_attention(
    q, k, v, *, causal: bool = False, rank: int = RANK, seed: int = 0
) -> torch.Tensor:
    """Linformer in torch. q: (B, H, N, D), k: (B, H, n, D), v: (B, H, n, Dv) -> (B, H, N, Dv).

    Same E, F as :func:`linformer_numpy`; ``rank`` is the book's k. Chapter 4.
    """
    if causal:
        raise ValueError(_CAUSAL_MSG)
    n = k.shape[2]
    rank = _check_rank(rank, n)
    E, F = _projection_tensors(n, rank, check_nonnegative_int("seed", seed), str(q.device), q.dtype)
    scores = q @ (E @ k).transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, N, k)
    return torch.softmax(scores, dim=-1) @ (F @ v)
