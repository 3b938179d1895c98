"""NumPy reference implementations of attention (chapter 1, Self-attention from scratch).

Everything here is plain NumPy in float64: slow, obvious, and the yardstick
every faster implementation in the book is compared against.
"""

from __future__ import annotations

import numpy as np

from attnbook.checks import check_array, check_bool, check_mask, check_same_length

__all__ = [
    "softmax",
    "causal_mask",
    "scaled_dot_product_attention",
    "self_attention",
    "multi_head_attention",
    "attention",
]


def softmax(x, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (chapter 1).

    Subtracts the row maximum first, so logits like 1e4 do not overflow.
    Rows that are entirely ``-inf`` (fully masked) give NaN, as they should.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"x must not be empty, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("x contains NaN values")
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def causal_mask(n: int) -> np.ndarray:
    """Boolean (n, n) mask, True where query i may attend to key j (j <= i). Chapter 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return np.tril(np.ones((n, n), dtype=bool))


def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False):
    """softmax(q kᵀ / √d_k) v, chapter 1.

    q: (..., n, d_k), k: (..., m, d_k), v: (..., m, d_v); mask: bool (..., n, m),
    True = may attend. Returns (output (..., n, d_v), weights (..., n, m)).
    """
    q = check_array("q", q)
    k = check_array("k", k)
    v = check_array("v", v)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(
            f"q, k, v must have the same number (>= 2) of dimensions, got {q.shape}, {k.shape}, "
            f"{v.shape}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have last dimension d_k={q.shape[-1]} like q, got {k.shape}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v must have as many rows as k ({k.shape[-2]}), got {v.shape}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"q, k, v must share their leading (batch, head) sizes, got {q.shape}, {k.shape}, "
            f"{v.shape}"
        )
    causal = check_bool("causal", causal)
    n, m = q.shape[-2], k.shape[-2]
    check_mask("mask", mask, n, m)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    allowed = np.ones((n, m), dtype=bool) if mask is None else mask
    if causal:
        check_same_length(q, k)
        allowed = allowed & causal_mask(n)
    scores = np.where(allowed, scores, -np.inf)
    weights = softmax(scores, axis=-1)
    return weights @ v, weights


def self_attention(X, Wq, Wk, Wv, causal: bool = False):
    """Single-head self-attention, chapter 1.

    X: (n, d); Wq, Wk: (d, d_k); Wv: (d, d_v). Returns (output (n, d_v), weights (n, n)).
    """
    X = check_array("X", X, ndim=2)
    check_bool("causal", causal)
    d = X.shape[1]
    for name, W in (("Wq", Wq), ("Wk", Wk), ("Wv", Wv)):
        W = check_array(name, W, ndim=2)
        if W.shape[0] != d:
            raise ValueError(f"{name} must have {d} rows (the width of X), got shape {W.shape}")
    if np.shape(Wq)[1] != np.shape(Wk)[1]:
        raise ValueError(
            f"Wq and Wk must have the same number of columns d_k, got {np.shape(Wq)} and "
            f"{np.shape(Wk)}"
        )
    return scaled_dot_product_attention(X @ Wq, X @ Wk, X @ Wv, causal=causal)


def multi_head_attention(X, Wq_list, Wk_list, Wv_list, Wo, causal: bool = False) -> np.ndarray:
    """Multi-head self-attention, chapter 1.

    X: (n, d); Wq_list, Wk_list, Wv_list: H matrices (d, d_k) each; Wo: (H·d_v, d).
    Each head attends on its own; the heads are concatenated and projected by Wo.
    Returns (n, d).
    """
    heads = len(Wq_list)
    if heads == 0 or len(Wk_list) != heads or len(Wv_list) != heads:
        raise ValueError(
            "Wq_list, Wk_list, Wv_list must hold the same number (>= 1) of heads, got "
            f"{len(Wq_list)}, {len(Wk_list)}, {len(Wv_list)}"
        )
    outs = [
        self_attention(X, Wq, Wk, Wv, causal=causal)[0]
        for Wq, Wk, Wv in zip(Wq_list, Wk_list, Wv_list)
    ]
    concat = np.concatenate(outs, axis=-1)
    Wo = check_array("Wo", Wo, ndim=2)
    if Wo.shape[0] != concat.shape[1]:
        raise ValueError(f"Wo must have {concat.shape[1]} rows (heads × d_v), got shape {Wo.shape}")
    return concat @ Wo


def attention(q, k, v, causal: bool = False, mask=None) -> np.ndarray:
    """Dense attention on (B, H, N, D) arrays in float64: the book's reference for every mechanism.

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv); returns (B, H, N, Dv).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_array(name, x, ndim=4)
    return scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)[0]
