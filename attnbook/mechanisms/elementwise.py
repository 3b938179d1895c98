"""Element-wise attention (chapter 7; Feng 2025, "Element-wise Attention Is All You Need").

Each channel c has its own attention distribution over the keys, built from the
negative squared distance of the scalars q_ic and k_jc instead of a dot product:

    o_ic = Σ_j w_ijc v_jc / Σ_j w_ijc,     w_ijc = exp(−(q_ic − k_jc)²)      (causal: j ≤ i).

Since exp(−(q − k)²) = exp(−q²)·exp(−k²)·exp(2qk), the factor exp(−q_ic²) cancels in
the ratio, and replacing exp(2qk) by its Taylor polynomial T_t(x) = Σ_{p=0}^{t} x^p/p!
(x = 2qk) separates i from j:

    Σ_j w_ijc v_jc ≈ Σ_{p=0}^{t} q_ic^p · (2^p/p!) Σ_j k_jc^p exp(−k_jc²) v_jc,

so prefix sums over j replace the n×n matrix. Four forms compute this:

* :func:`elementwise_numpy` (NumPy float64): the exact form, O(n²D), the reference;
* :func:`elementwise_taylor_numpy` (NumPy float64): the Taylor weights as an explicit
  (n, n, D) tensor, O(t·n²D), the yardstick of the fast forms;
* :func:`elementwise_parallel_numpy` / :func:`elementwise_attention`: the parallel form
  with cumulative sums, O(t·n·D) time, no n×n matrix (NumPy / torch);
* :func:`elementwise_recurrent_numpy` / :func:`elementwise_step`: the recurrent form, a state of
  2(t+1) numbers per channel and O(t·D) work per token (NumPy / torch).

Even t keeps every weight positive (T_t(x) > 0 for all real x when t is even); odd t is
accepted so the chapter can show where the weights turn negative.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from attnbook.checks import (
    check_array,
    check_nonnegative_int,
    check_positive_int,
    check_same_length,
    check_tensor,
)

__all__ = [
    "taylor_coefficients",
    "taylor_exp",
    "elementwise_numpy",
    "elementwise_weights",
    "elementwise_taylor_numpy",
    "elementwise_parallel_numpy",
    "elementwise_recurrent_numpy",
    "elementwise_exact",
    "elementwise_attention",
    "ElementwiseState",
    "init_state",
    "elementwise_prefill",
    "elementwise_step",
    "state_numbers",
]

DEFAULT_ORDER = 2
#: tokens per chunk of the causal parallel form (its working set: C·(t+1)·D per head)
CHUNK_SIZE = 64


def taylor_coefficients(order: int) -> np.ndarray:
    """c_p = 2^p / p!, p = 0..t: the Taylor coefficients
    of exp(2qk) in powers of q·k. Shape (t+1,)."""
    order = check_nonnegative_int("order", order)
    return np.array([2.0**p / math.factorial(p) for p in range(order + 1)])


def taylor_exp(x, order: int) -> np.ndarray:
    """T_t(x) = Σ_{p=0}^{t} x^p / p!, the order-t Taylor
    polynomial of exp, element-wise (NumPy float64)."""
    order = check_nonnegative_int("order", order)
    x = np.asarray(x, dtype=np.float64)
    return sum(x**p / math.factorial(p) for p in range(order + 1))


def _check_np(q, k, v):
    q, k, v = (check_array(name, x, ndim=4) for name, x in (("q", q), ("k", k), ("v", v)))
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"q, k must be (B, H, N, D), (B, H, M, D), got {q.shape}, {k.shape}")
    if v.shape != k.shape:
        raise ValueError(
            f"v must have the shape of k {k.shape} (one value per key and channel), got {v.shape}"
        )
    return q, k, v


def _causal_ok(causal: bool, q, k) -> None:
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if causal:
        check_same_length(q, k)


def elementwise_weights(q, k, order: int | None = None, causal: bool = False) -> np.ndarray:
    """Per-channel attention weights w_ijc / Σ_j w_ijc, NumPy float64. Chapter 7.

    q: (B, H, N, D), k: (B, H, M, D) -> (B, H, N, M, D); rows sum to 1 over the key axis (-2).
    ``order=None``: exact weights exp(−(q−k)²) (a softmax of −(q−k)² over keys, computed stably);
    ``order=t``: the Taylor weights exp(−k²)·T_t(2qk), which can be negative when t is odd.
    """
    q, k = check_array("q", q, ndim=4), check_array("k", k, ndim=4)
    _causal_ok(causal, q, k)
    qi, kj = q[:, :, :, None, :], k[:, :, None, :, :]
    allowed = np.tril(np.ones((q.shape[2], k.shape[2]), dtype=bool)) if causal else None
    if order is None:
        logits = -((qi - kj) ** 2)
        if allowed is not None:
            logits = np.where(allowed[:, :, None], logits, -np.inf)
        w = np.exp(logits - logits.max(axis=3, keepdims=True))
    else:
        w = np.exp(-(kj**2)) * taylor_exp(2.0 * qi * kj, order)
        if allowed is not None:
            w = np.where(allowed[:, :, None], w, 0.0)
    return w / w.sum(axis=3, keepdims=True)


def elementwise_numpy(q, k, v, causal: bool = False) -> np.ndarray:
    """Exact element-wise attention, NumPy float64, O(n²D): the reference. Chapter 7.

    q: (B, H, N, D), k, v: (B, H, M, D) -> (B, H, N, D).
    """
    q, k, v = _check_np(q, k, v)
    return np.einsum("bhnmd,bhmd->bhnd", elementwise_weights(q, k, causal=causal), v)


def elementwise_taylor_numpy(
    q, k, v, order: int = DEFAULT_ORDER, causal: bool = False
) -> np.ndarray:
    """Taylor element-wise attention with the (N, M, D) weights written out, NumPy float64,
    O(t·n²D). Chapter 7."""
    q, k, v = _check_np(q, k, v)
    return np.einsum("bhnmd,bhmd->bhnd", elementwise_weights(q, k, order=order, causal=causal), v)


def _np_powers(x: np.ndarray, order: int) -> np.ndarray:
    """(..., D) -> (..., t+1, D): x^0 .. x^t."""
    return np.stack([x**p for p in range(order + 1)], axis=-2)


def elementwise_parallel_numpy(
    q, k, v, order: int = DEFAULT_ORDER, causal: bool = False
) -> np.ndarray:
    """Parallel (prefix-sum) form, NumPy float64: O(t·n·D), no n×n matrix. Chapter 7.

    A_p = Σ_{j(≤i)} c_p k_j^p e^{−k_j²} v_j and Z_p = Σ_{j(≤i)} c_p k_j^p e^{−k_j²};
    o_i = Σ_p q_i^p A_p / Σ_p q_i^p Z_p, channel by channel. Shapes as :func:`elementwise_numpy`.
    """
    q, k, v = _check_np(q, k, v)
    order = check_nonnegative_int("order", order)
    _causal_ok(causal, q, k)
    keys = (
        _np_powers(k, order) * taylor_coefficients(order)[:, None] * np.exp(-(k**2))[..., None, :]
    )
    z = np.cumsum(keys, axis=2) if causal else keys.sum(axis=2, keepdims=True)
    a = (
        np.cumsum(keys * v[..., None, :], axis=2)
        if causal
        else (keys * v[..., None, :]).sum(axis=2, keepdims=True)
    )
    qp = _np_powers(q, order)
    return (qp * a).sum(-2) / (qp * z).sum(-2)


def elementwise_recurrent_numpy(q, k, v, order: int = DEFAULT_ORDER) -> np.ndarray:
    """Recurrent (causal) form, NumPy float64: one token at a time with 2(t+1) numbers per channel.

    Chapter 7.
    """
    q, k, v = _check_np(q, k, v)
    order = check_nonnegative_int("order", order)
    _causal_ok(True, q, k)
    c = taylor_coefficients(order)[:, None]
    B, H, N, D = q.shape
    A, Z = np.zeros((B, H, order + 1, D)), np.zeros((B, H, order + 1, D))
    out = np.empty_like(q)
    for i in range(N):
        key = _np_powers(k[:, :, i], order) * c * np.exp(-(k[:, :, i] ** 2))[:, :, None, :]
        A, Z = A + key * v[:, :, i, None, :], Z + key
        qp = _np_powers(q[:, :, i], order)
        out[:, :, i] = (qp * A).sum(-2) / (qp * Z).sum(-2)
    return out


def _check_torch(q, k, v) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, ndim=4)
    if v.shape != k.shape:
        raise ValueError(
            f"v must have the shape of k {tuple(k.shape)} (one value per key and channel), "
            f"got {tuple(v.shape)}"
        )


def _powers(x: torch.Tensor, order: int) -> torch.Tensor:
    """(..., D) -> (..., t+1, D): x^0 .. x^t by repeated products (no pow(0, 0) in the gradient)."""
    out = [torch.ones_like(x)]
    for _ in range(order):
        out.append(out[-1] * x)
    return torch.stack(out, dim=-2)


def _read(q: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """Σ_p q^p S_p by Horner's rule. q: (..., D), sums: (..., t+1, D) -> (..., D)."""
    out = sums[..., -1, :]
    for p in range(sums.shape[-2] - 2, -1, -1):
        out = out * q + sums[..., p, :]
    return out.expand(torch.broadcast_shapes(out.shape, q.shape))  # order 0 never multiplies by q


def _coefficients(order: int, like: torch.Tensor) -> torch.Tensor:
    """The Taylor coefficients c_p = 2^p/p! as a (t+1, 1) tensor of ``like``'s dtype and device."""
    return torch.as_tensor(taylor_coefficients(order), dtype=like.dtype, device=like.device)[
        :, None
    ]


def _key_features(k: torch.Tensor, order: int, c: torch.Tensor | None = None) -> torch.Tensor:
    """c_p k^p exp(−k²): (B, H, M, D) -> (B, H, M, t+1, D); ``c`` from :func:`_coefficients`."""
    c = _coefficients(order, k) if c is None else c
    return _powers(k, order) * c * torch.exp(-k * k).unsqueeze(-2)


def elementwise_exact(q, k, v, causal: bool = False) -> torch.Tensor:
    """Exact element-wise attention in torch, O(n²D) memory and time. Chapter 7.

    q: (B, H, N, D), k, v: (B, H, M, D) -> (B, H, N, D). Softmax of −(q_ic − k_jc)² over j.
    """
    _check_torch(q, k, v)
    _causal_ok(causal, q, k)
    logits = -((q.unsqueeze(3) - k.unsqueeze(2)) ** 2)  # (B, H, N, M, D)
    if causal:
        allowed = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~allowed[:, :, None], float("-inf"))
    return (torch.softmax(logits, dim=3) * v.unsqueeze(2)).sum(3)


def elementwise_attention(
    q, k, v, *, causal: bool = False, order: int = DEFAULT_ORDER, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """Taylor element-wise attention, parallel form in torch: O(t·n·D) time and memory. Chapter 7.

    q: (B, H, N, D), k, v: (B, H, M, D) -> (B, H, N, D). Causal: cumulative sums over keys,
    ``chunk_size`` tokens at a time with the running totals carried between chunks, so the working
    set stays cache-sized at any n; otherwise one sum over all keys. ``order`` t: integer >= 0 (even
    t keeps weights positive).
    """
    _check_torch(q, k, v)
    order = check_nonnegative_int("order", order)
    chunk = check_positive_int("chunk_size", chunk_size)
    _causal_ok(causal, q, k)
    if not causal:
        keys = _key_features(k, order)  # (B, H, M, t+1, D)
        num = (keys * v.unsqueeze(-2)).sum(dim=2, keepdim=True)
        return _read(q, num) / _read(q, keys.sum(dim=2, keepdim=True))
    outs, num_before, den_before, c = [], 0.0, 0.0, _coefficients(order, k)
    for s in range(0, q.shape[2], chunk):
        keys = _key_features(k[:, :, s : s + chunk], order, c)  # (B, H, C, t+1, D)
        num = (keys * v[:, :, s : s + chunk].unsqueeze(-2)).cumsum(dim=2) + num_before
        den = keys.cumsum(dim=2) + den_before
        num_before, den_before = num[:, :, -1:], den[:, :, -1:]
        q_c = q[:, :, s : s + chunk]
        outs.append(_read(q_c, num) / _read(q_c, den))
    return torch.cat(outs, dim=2)


class ElementwiseState(NamedTuple):
    """Decoding state: A (B, H, t+1, D) = Σ c_p k^p
    e^{−k²} v and Z (B, H, t+1, D) = Σ c_p k^p e^{−k²}."""

    A: torch.Tensor
    Z: torch.Tensor

    @property
    def order(self) -> int:
        return self.A.shape[-2] - 1


def init_state(
    batch: int, heads: int, dim: int, order: int = DEFAULT_ORDER, dtype=torch.float32, device=None
) -> ElementwiseState:
    """The empty state (zeros): 2(t+1)·D numbers per head. Chapter 7."""
    order = check_nonnegative_int("order", order)
    zeros = torch.zeros(batch, heads, order + 1, dim, dtype=dtype, device=device)
    return ElementwiseState(zeros, zeros.clone())


def state_numbers(dim: int, order: int) -> int:
    """Numbers in the decoding state of one head: 2(t+1)·D, whatever the context length.

    Chapter 7.
    """
    return 2 * (check_nonnegative_int("order", order) + 1) * check_nonnegative_int("dim", dim)


def elementwise_prefill(
    k: torch.Tensor, v: torch.Tensor, order: int = DEFAULT_ORDER
) -> ElementwiseState:
    """The state after reading a prompt k, v: (B, H, N, D), in one pass. Chapter 7."""
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    keys = _key_features(k, check_nonnegative_int("order", order))
    return ElementwiseState((keys * v.unsqueeze(-2)).sum(2), keys.sum(2))


def elementwise_step(
    state: ElementwiseState | None,
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    order: int | None = None,
):
    """One decoding step of causal element-wise attention:
    add token t, read with q_t. Returns (state, o_t).

    q_t, k_t, v_t: (B, H, D). ``state`` None starts empty with ``order`` (default 2); otherwise the
    order is the state's and ``order``, if given, must match it. O(t·D) work per token. Chapter 7.
    """
    for name, x in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        check_tensor(name, x, ndim=3)
    if not (q_t.shape == k_t.shape == v_t.shape):
        raise ValueError(
            f"q_t, k_t, v_t must all be (B, H, D) of one shape, got {tuple(q_t.shape)}, "
            f"{tuple(k_t.shape)}, {tuple(v_t.shape)}"
        )
    B, H, D = q_t.shape
    if state is None:
        state = init_state(
            B, H, D, DEFAULT_ORDER if order is None else order, dtype=q_t.dtype, device=q_t.device
        )
    if not isinstance(state, ElementwiseState):
        raise TypeError(f"state must be an ElementwiseState or None, got {type(state).__name__}")
    t = state.order
    if order is not None and check_nonnegative_int("order", order) != t:
        raise ValueError(f"order={order} differs from the state's order {t}")
    if state.A.shape != (B, H, t + 1, D) or state.Z.shape != (B, H, t + 1, D):
        raise ValueError(
            f"state must hold A and Z of shape {(B, H, t + 1, D)}, got {tuple(state.A.shape)}"
        )
    key = _key_features(k_t.unsqueeze(2), t).squeeze(2)  # (B, H, t+1, D)
    A, Z = state.A + key * v_t.unsqueeze(-2), state.Z + key
    return ElementwiseState(A, Z), _read(q_t, A) / _read(q_t, Z)
