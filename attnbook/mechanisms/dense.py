"""Dense softmax attention in torch (chapter 1, Self-attention from scratch).

Device-agnostic: runs wherever its inputs live (CPU, CUDA, MPS).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from attnbook.checks import (
    check_bool,
    check_mask,
    check_positive_int,
    check_qkv,
    check_same_length,
    check_step_inputs,
    check_tensor,
)

__all__ = [
    "causal_mask",
    "attention_weights",
    "dense_attention",
    "self_attention",
    "multi_head_attention",
    "MultiHeadSelfAttention",
    "sdpa_attention",
    "KVCache",
    "dense_prefill",
    "dense_step",
]


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Boolean (n, n) mask, True where query i may attend to key j <= i. Chapter 1."""
    check_positive_int("n", n)
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def attention_weights(q, k, causal: bool = False, mask=None) -> torch.Tensor:
    """softmax(q kᵀ/√D) with masking. q: (..., N, D), k: (..., M, D) -> (..., N, M). Chapter 1."""
    n, m = q.shape[-2], k.shape[-2]
    causal = check_bool("causal", causal)
    check_mask("mask", mask, n, m)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        check_same_length(q, k)
        allowed = causal_mask(n, device=q.device)
        mask = allowed if mask is None else mask & allowed
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def dense_attention(q, k, v, *, causal: bool = False, mask=None) -> torch.Tensor:
    """Exact softmax attention, materialising the (N, M) score matrix. Chapter 1.

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv).
    """
    check_qkv(q, k, v)
    return attention_weights(q, k, causal=causal, mask=mask) @ v


def self_attention(X, Wq, Wk, Wv, causal: bool = False):
    """Torch twin of :func:`attnbook.reference.self_attention`.
    X: (n, d) -> (output (n, d_v), weights (n, n))."""
    check_tensor("X", X, ndim=2)
    for name, W in (("Wq", Wq), ("Wk", Wk), ("Wv", Wv)):
        check_tensor(name, W, ndim=2)
        if W.shape[0] != X.shape[1]:
            raise ValueError(
                f"{name} must have {X.shape[1]} rows (the width of X), got shape {tuple(W.shape)}"
            )
    if Wq.shape[1] != Wk.shape[1]:
        raise ValueError(
            f"Wq and Wk must have the same number of columns d_k, got {tuple(Wq.shape)} and "
            f"{tuple(Wk.shape)}"
        )
    q, k, v = X @ Wq, X @ Wk, X @ Wv
    weights = attention_weights(q, k, causal=causal)
    return weights @ v, weights


def multi_head_attention(X, Wq_list, Wk_list, Wv_list, Wo, causal: bool = False) -> torch.Tensor:
    """Torch twin of :func:`attnbook.reference.multi_head_attention`. X: (n, d) -> (n, d)."""
    heads = len(Wq_list)
    if heads == 0 or len(Wk_list) != heads or len(Wv_list) != heads:
        raise ValueError(
            "Wq_list, Wk_list, Wv_list must hold the same number (>= 1) of heads, got "
            f"{len(Wq_list)}, {len(Wk_list)}, {len(Wv_list)}"
        )
    outs = [
        self_attention(X, a, b, c, causal=causal)[0] for a, b, c in zip(Wq_list, Wk_list, Wv_list)
    ]
    concat = torch.cat(outs, dim=-1)
    check_tensor("Wo", Wo, ndim=2)
    if Wo.shape[0] != concat.shape[1]:
        raise ValueError(
            f"Wo must have {concat.shape[1]} rows (heads × d_v), got shape {tuple(Wo.shape)}"
        )
    return concat @ Wo


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention whose core is any registered method (chapters 1 and 4).

    x: (B, N, d_model) -> (B, N, d_model). Q, K, V come from one fused (d, 3d) projection,
    like ``nn.MultiheadAttention``; ``method`` and ``options`` go to :func:`attnbook.attention`.
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        method: str = "dense",
        causal: bool = True,
        bias: bool = True,
        **options,
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("heads", heads)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        from attnbook.registry import method_info

        # fail at construction, not at the first forward pass
        causal = method_info(method).check_call(causal, options)
        check_bool("bias", bias)
        self.d_model, self.heads, self.method, self.causal, self.options = (
            d_model,
            heads,
            method,
            causal,
            options,
        )
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d_model) -> (B, H, N, d_k)."""
        B, N, _ = x.shape
        return x.view(B, N, self.heads, self.d_model // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from attnbook.registry import attention

        check_tensor("x", x, ndim=3)
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have last dimension d_model={self.d_model}, got shape {tuple(x.shape)}"
            )
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        y = attention(
            self.split_heads(q),
            self.split_heads(k),
            self.split_heads(v),
            method=self.method,
            causal=self.causal,
            **self.options,
        )
        B, H, N, Dk = y.shape
        return self.out(y.transpose(1, 2).reshape(B, N, H * Dk))


def sdpa_attention(q, k, v, *, causal: bool = False) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention, PyTorch's fused kernels. Chapter 4.

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv).
    """
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


class KVCache(NamedTuple):
    """Decoding state of dense attention: every key and
    value so far, K (B, H, t, D) and V (B, H, t, Dv)."""

    K: torch.Tensor
    V: torch.Tensor


def dense_prefill(k: torch.Tensor, v: torch.Tensor) -> KVCache:
    """The cache after reading a prompt: the prompt's keys and values themselves. Chapter 3."""
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    return KVCache(k, v)


def dense_step(state: KVCache | None, q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor):
    """One decoding step with a KV cache: append k_t, v_t, attend with q_t. Returns (state, o_t).

    q_t, k_t: (B, H, D), v_t: (B, H, Dv). O(t·D) work and memory at step t: the state grows with
    the context, unlike the fixed-size states of linear and recurrent attention. Chapters 3 and 4.
    """
    check_step_inputs(q_t, k_t, v_t)
    if state is None:
        state = KVCache(k_t[:, :, None], v_t[:, :, None])
    elif not isinstance(state, KVCache):
        raise TypeError(f"state must be a KVCache or None, got {type(state).__name__}")
    else:
        state = KVCache(
            torch.cat([state.K, k_t[:, :, None]], 2), torch.cat([state.V, v_t[:, :, None]], 2)
        )
    weights = torch.softmax(
        (q_t[:, :, None] @ state.K.transpose(-1, -2)) / math.sqrt(q_t.shape[-1]), dim=-1
    )
    return state, (weights @ state.V)[:, :, 0]
