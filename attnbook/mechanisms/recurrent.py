"""Recurrent / state-space forms: RetNet retention and a Mamba-style selective scan (chapter 4;
Sun et al. 2023, Gu & Dao 2023, Dao & Gu 2024).

Both are *decayed* linear attention: with a state S_t ∈ ℝ^{D×Dv},

    S_t = a_t S_{t-1} + k_t (w_t v_t)ᵀ,   o_t = S_tᵀ q_t,
    equivalently o_t = Σ_{s ≤ t} (q_t·k_s) (a_{s+1}···a_t) w_s v_s      (the parallel form).

* Retention: a_t = γ (per head), w_t = 1, q scaled by 1/√D. ``gamma=None`` gives RetNet's
  multi-scale heads γ_h = 1 − 2^{−5−h}. RetNet's xPos rotation and group norm are left out.
* Selective scan, the scalar-decay (Mamba-2 / SSD) form of Mamba's scan: C_t = q_t, B_t = k_t,
  x_t = v_t, a diagonal A = A_h·I per head with A_h = −exp(linspace(0, ln 16, H))_h, and an
  input-dependent step Δ_t = softplus(k_t·w + β) from a fixed seeded projection
  w ~ N(0, I/D) (``default_rng(seed)``) and β = softplus⁻¹(0.1). Then a_t = exp(Δ_t A_h),
  w_t = Δ_t (zero-order hold for A, Euler for B, as in Mamba). Mamba's per-channel A and
  skip term D·x are left out: a scalar decay per head is what lets the chunked form use matmuls.

Both are causal by construction (a_t multiplies only the past): ``causal=False`` raises ValueError.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from attnbook.checks import (
    check_nonnegative_int,
    check_positive_float,
    check_same_length,
    check_step_inputs,
)
from attnbook.mechanisms.linear import CHUNK_SIZE, _check_np_qkv, chunked_causal

__all__ = [
    "retention_gammas",
    "scan_parameters",
    "scan_steps",
    "retention_numpy",
    "retention_recurrent_numpy",
    "selective_scan_numpy",
    "selective_scan_recurrent_numpy",
    "retention_attention",
    "retention_parallel",
    "retention_step",
    "selective_scan_attention",
    "selective_scan_parallel",
    "selective_scan_step",
    "RecurrentState",
]

_NOT_CAUSAL = (
    "{name} is causal by construction (its decay a_{{s+1}}···a_t only runs from the past to the "
    "present); call it with causal=True"
)

_DT_BIAS = float(np.log(np.expm1(0.1)))  # softplus(β) = 0.1


# ---------------------------------------------------------------- parameters
def retention_gammas(heads: int, gamma=None) -> np.ndarray:
    """Decay per head, (H,): ``gamma`` for every head, or RetNet's 1 − 2^{−5−h} when None."""
    if gamma is None:
        return 1.0 - 2.0 ** (-5.0 - np.arange(heads))
    gamma = check_positive_float("gamma", gamma)
    if gamma > 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    return np.full(heads, gamma)


@lru_cache(maxsize=16)
def _scan_parameters(heads: int, d: int, seed: int):
    A = -np.exp(np.linspace(0.0, np.log(16.0), heads))
    w = np.random.default_rng(seed).standard_normal(d) / np.sqrt(d)
    A.setflags(write=False)
    w.setflags(write=False)
    return A, w


def scan_parameters(heads: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The selective scan's fixed parameters: A (H,) < 0 and the Δ projection w (D,)."""
    return _scan_parameters(int(heads), int(d), check_nonnegative_int("seed", seed))


def _np_softplus(x):
    return np.logaddexp(0.0, x)


# ---------------------------------------------------------------- NumPy references (float64)
def _naive_parallel(q, k, v, log_a):
    """o = (QKᵀ ⊙ Λ) V with Λ_ts = exp(L_t − L_s) for s ≤ t, L = cumsum(log_a). log_a: (B, H, N)."""
    L = np.cumsum(log_a, axis=-1)
    n = q.shape[2]
    lower = np.tril(np.ones((n, n), dtype=bool))
    decay = np.where(lower, np.exp(np.where(lower, L[..., :, None] - L[..., None, :], 0.0)), 0.0)
    return (q @ np.swapaxes(k, -1, -2) * decay) @ v


def _naive_recurrent(q, k, v, log_a):
    """S_t = a_t S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t, one token at a time."""
    B, H, N, D = q.shape
    S = np.zeros((B, H, D, v.shape[-1]))
    out = np.empty((B, H, N, v.shape[-1]))
    for t in range(N):
        S = np.exp(log_a[:, :, t])[..., None, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, t] = np.einsum("bhd,bhde->bhe", q[:, :, t], S)
    return out


def _np_retention_args(q, k, v, causal, gamma):
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name="retention"))
    q, k, v = _check_np_qkv(q, k, v)
    check_same_length(q, k, "retention")
    log_g = np.log(retention_gammas(q.shape[1], gamma))[None, :, None]
    return q / np.sqrt(q.shape[-1]), k, v, np.broadcast_to(log_g, q.shape[:3])


def retention_numpy(q, k, v, causal: bool = True, gamma=None) -> np.ndarray:
    """Parallel retention, NumPy float64: (Q Kᵀ/√D ⊙ D) V with D_ts = γ^{t−s} (s ≤ t). (B, H, N, D)
    -> (B, H, N, Dv)."""
    return _naive_parallel(*_np_retention_args(q, k, v, causal, gamma))


def retention_recurrent_numpy(q, k, v, causal: bool = True, gamma=None) -> np.ndarray:
    """Recurrent retention, NumPy float64: S_t = γ S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ q_t / √D."""
    return _naive_recurrent(*_np_retention_args(q, k, v, causal, gamma))


def _np_scan_args(q, k, v, causal, seed):
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name="selective_scan"))
    q, k, v = _check_np_qkv(q, k, v)
    check_same_length(q, k, "selective_scan")
    A, w = scan_parameters(q.shape[1], q.shape[-1], seed)
    dt = _np_softplus(k @ w + _DT_BIAS)  # (B, H, N)
    return q, k, dt[..., None] * v, dt * A[None, :, None]


def selective_scan_numpy(q, k, v, causal: bool = True, seed: int = 0) -> np.ndarray:
    """Selective scan, parallel form, NumPy float64: y_t
    = Σ_{s≤t} (C_t·B_s) exp(A Σ_{u=s+1}^t Δ_u) Δ_s x_s."""
    return _naive_parallel(*_np_scan_args(q, k, v, causal, seed))


def selective_scan_recurrent_numpy(q, k, v, causal: bool = True, seed: int = 0) -> np.ndarray:
    """Selective scan, recurrent form, NumPy float64: h_t
    = exp(Δ_t A) h_{t−1} + B_t (Δ_t x_t)ᵀ, y_t = h_tᵀ C_t."""
    return _naive_recurrent(*_np_scan_args(q, k, v, causal, seed))


# ---------------------------------------------------------------- torch forms
def _torch_retention_args(q, k, v, causal, gamma):
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name="retention"))
    check_same_length(q, k, "retention")
    log_g = torch.as_tensor(
        np.log(retention_gammas(q.shape[1], gamma)), dtype=q.dtype, device=q.device
    )
    return q / q.shape[-1] ** 0.5, k, v, log_g[None, :, None].expand(q.shape[:3])


def scan_steps(k: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective scan's step Δ = softplus(k·w + β) and
    log-decay Δ·A_h, both (B, H, N), from k: (B, H, N, D)."""
    A, w = (
        torch.as_tensor(np.array(x), dtype=k.dtype, device=k.device)
        for x in scan_parameters(k.shape[1], k.shape[-1], seed)
    )
    dt = torch.nn.functional.softplus(k @ w + _DT_BIAS)
    return dt, dt * A[None, :, None]


def _torch_scan_args(q, k, v, causal, seed):
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name="selective_scan"))
    check_same_length(q, k, "selective_scan")
    dt, log_a = scan_steps(k, seed)
    return q, k, dt[..., None] * v, log_a


def _parallel(q, k, v, log_a):
    L = log_a.cumsum(-1)
    n = q.shape[2]
    lower = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    decay = (L[..., :, None] - L[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    return (q @ k.transpose(-1, -2) * decay) @ v


def retention_attention(
    q, k, v, *, causal: bool = True, gamma=None, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """Chunkwise retention, torch: O(N·C·D + N·D·Dv). q,
    k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv)."""
    return chunked_causal(*_torch_retention_args(q, k, v, causal, gamma), chunk_size=chunk_size)


def retention_parallel(q, k, v, causal: bool = True, gamma=None) -> torch.Tensor:
    """Parallel retention, torch, with the (N, N) decay mask D_ts = γ^{t−s}: O(N²·D)."""
    return _parallel(*_torch_retention_args(q, k, v, causal, gamma))


def selective_scan_attention(
    q, k, v, *, causal: bool = True, seed: int = 0, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """Chunked selective scan, torch: O(N·C·D + N·D·Dv). (B, H, N, D) -> (B, H, N, Dv)."""
    return chunked_causal(*_torch_scan_args(q, k, v, causal, seed), chunk_size=chunk_size)


def selective_scan_parallel(q, k, v, causal: bool = True, seed: int = 0) -> torch.Tensor:
    """Selective scan as one masked (N, N) matrix (the SSD "attention" form), torch: O(N²·D)."""
    return _parallel(*_torch_scan_args(q, k, v, causal, seed))


class RecurrentState(NamedTuple):
    """Decoding state of retention / selective scan: S (B, H, D, Dv), one matrix per head."""

    S: torch.Tensor


def _check_step(state, q_t, k_t, v_t):
    B, H, D = check_step_inputs(q_t, k_t, v_t)
    shape = (B, H, D, v_t.shape[-1])
    if state is None:
        return RecurrentState(k_t.new_zeros(shape))
    if not isinstance(state, RecurrentState) or tuple(state.S.shape) != shape:
        raise ValueError(
            f"state must be a RecurrentState with S of shape {shape}, got {type(state).__name__}"
        )
    return state


def _step(state, q_t, k_t, xbar_t, log_a_t):
    S = log_a_t.exp()[..., None, None] * state.S + k_t[..., :, None] * xbar_t[..., None, :]
    return RecurrentState(S), (q_t[..., None, :] @ S).squeeze(-2)


def retention_step(state, q_t, k_t, v_t, gamma=None):
    """One retention decoding step: S_t = γ S_{t−1} + k_t
    v_tᵀ, o_t = S_tᵀ q_t/√D. (B, H, D) inputs -> (state, o_t)."""
    state = _check_step(state, q_t, k_t, v_t)
    q, k, v, log_a = _torch_retention_args(
        q_t[:, :, None], k_t[:, :, None], v_t[:, :, None], True, gamma
    )
    return _step(state, q[:, :, 0], k[:, :, 0], v[:, :, 0], log_a[:, :, 0])


def selective_scan_step(state, q_t, k_t, v_t, seed: int = 0):
    """One selective-scan step: h_t = exp(Δ_t A) h_{t−1}
    + k_t (Δ_t v_t)ᵀ, y_t = h_tᵀ q_t. -> (state, y_t)."""
    state = _check_step(state, q_t, k_t, v_t)
    q, k, xbar, log_a = _torch_scan_args(
        q_t[:, :, None], k_t[:, :, None], v_t[:, :, None], True, seed
    )
    return _step(state, q[:, :, 0], k[:, :, 0], xbar[:, :, 0], log_a[:, :, 0])
