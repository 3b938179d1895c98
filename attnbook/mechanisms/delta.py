"""The delta rule and Gated DeltaNet (chapter 4; Schlag et al. 2021, Yang et al. 2024, Yang, Kautz &
Hatamizadeh 2025).

Linear attention adds k_t v_tᵀ to its state whatever the state already holds. The delta rule first
reads what the state stores under k_t and writes back only the difference:

    S_t = a_t S_{t−1} + β_t k_t (v_t − a_t S_{t−1}ᵀ k_t)ᵀ,    o_t = S_tᵀ q_t / √D,

a step of size β_t ∈ [0, 1] of gradient descent on ½‖Sᵀk_t − v_t‖² (online regression). The delta
rule has a_t = 1; Gated DeltaNet first decays the state, a_t = exp(g_t) with g_t ≤ 0. The state is
D × Dv (D = d_k), as in linear attention.

Conventions are flash-linear-attention's naive references (``fla.ops.delta_rule.naive``,
``fla.ops.gated_delta_rule.naive``): q scaled by 1/√D, keys used as given (models L2-normalise
them), ``beta`` and ``g`` of shape (B, H, N). Defaults, so that ``attention(q, k, v, method=...)``
needs no option: ``beta=None`` is the normalised LMS step β_t = 1/(1 + ‖k_t‖²), which keeps the
recurrence stable for keys of any norm (its transition I − β_t k_t k_tᵀ has eigenvalues in (0, 1]);
``g=None`` is RetNet's per-head decay log(1 − 2^{−5−h}).

The chunked form (:func:`delta_chunked`) is the WY / UT-transform form of Yang et al. (2024):
inside a chunk of C tokens the C corrections u_t solve one unit lower-triangular system, so the
work is matrix products and the state is carried from chunk to chunk. Causal only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from attnbook.checks import check_positive_int, check_same_length, check_step_inputs, check_tensor
from attnbook.mechanisms.linear import CHUNK_GROUP, CHUNK_SIZE, _check_np_qkv
from attnbook.mechanisms.recurrent import retention_gammas

__all__ = [
    "nlms_beta",
    "default_log_decay",
    "delta_numpy",
    "gated_delta_numpy",
    "delta_chunked",
    "delta_attention",
    "gated_delta_attention",
    "DeltaState",
    "delta_prefill",
    "gated_delta_prefill",
    "delta_step",
    "gated_delta_step",
]

_NOT_CAUSAL = (
    "{name} is causal by construction (its state is written token after token); "
    "call it with causal=True"
)


def nlms_beta(k):
    """The default step β_t = 1/(1 + ‖k_t‖²), from k: (..., D) -> (...). NumPy or torch."""
    if isinstance(k, torch.Tensor):
        return 1.0 / (1.0 + (k * k).sum(-1))
    return 1.0 / (1.0 + np.sum(np.square(k), axis=-1))


def default_log_decay(shape, like=None):
    """Gated DeltaNet's default g: RetNet's log(1 − 2^{−5−h}) for head h, broadcast to (B, H, N).

    Returns a NumPy array, or a tensor on ``like``'s device and dtype when ``like`` is a tensor.
    """
    B, H, N = shape
    g = np.log(retention_gammas(H))
    if like is None:
        return np.broadcast_to(g[None, :, None], (B, H, N))
    return torch.as_tensor(g, dtype=like.dtype, device=like.device)[None, :, None].expand(B, H, N)


# ---------------------------------------------------------------- NumPy reference (float64)
def _np_gate(name, x, shape, lo, hi):
    x = np.asarray(x, dtype=np.float64)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape (B, H, N) = {shape}, got {x.shape}")
    if not (np.all(x >= lo) and np.all(x <= hi)):
        raise ValueError(f"{name} must lie in [{lo}, {hi}] and be finite")
    return x


def _recurrence_numpy(q, k, v, beta, g, name):
    q, k, v = _check_np_qkv(q, k, v)
    check_same_length(q, k, name)
    B, H, N, D = q.shape
    beta = nlms_beta(k) if beta is None else _np_gate("beta", beta, (B, H, N), 0.0, 1.0)
    g = np.zeros((B, H, N)) if g is None else _np_gate("g", g, (B, H, N), -np.inf, 0.0)
    q = q / np.sqrt(D)
    S = np.zeros((B, H, D, v.shape[-1]))
    out = np.empty((B, H, N, v.shape[-1]))
    for t in range(N):
        S = np.exp(g[:, :, t])[..., None, None] * S
        kt = k[:, :, t]
        u = beta[:, :, t, None] * (v[:, :, t] - np.einsum("bhd,bhde->bhe", kt, S))
        S = S + kt[..., :, None] * u[..., None, :]
        out[:, :, t] = np.einsum("bhd,bhde->bhe", q[:, :, t], S)
    return out, S


def delta_numpy(q, k, v, causal: bool = True, beta=None, return_state: bool = False):
    """The delta rule one token at a time, NumPy float64 (chapter 4).

    q, k: (B, H, N, D), v: (B, H, N, Dv), beta: (B, H, N) in [0, 1] or None (1/(1 + ‖k_t‖²))
    -> o: (B, H, N, Dv), and the final state S: (B, H, D, Dv) when ``return_state``.
    """
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name="delta"))
    out, S = _recurrence_numpy(q, k, v, beta, None, "delta")
    return (out, S) if return_state else out


def gated_delta_numpy(q, k, v, causal: bool = True, beta=None, g=None, return_state: bool = False):
    """Gated DeltaNet one token at a time, NumPy float64: the delta rule after S ← exp(g_t) S.

    g: (B, H, N) ≤ 0, or None for RetNet's per-head decays; otherwise as :func:`delta_numpy`.
    """
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name="gated_delta"))
    q, k, v = _check_np_qkv(q, k, v)
    g = default_log_decay(q.shape[:3]) if g is None else g
    out, S = _recurrence_numpy(q, k, v, beta, g, "gated_delta")
    return (out, S) if return_state else out


# ---------------------------------------------------------------- torch
def _gate(name, x, shape, lo, hi, like):
    """A (B, H, N) gate tensor on ``like``'s device and dtype, its range checked (one sync)."""
    check_tensor(name, x, ndim=3, finite=False)
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape (B, H, N) = {shape}, got {tuple(x.shape)}")
    if x.device != like.device:
        raise ValueError(f"{name} must be on the device of q, k, v ({like.device}), got {x.device}")
    lo_x, hi_x = torch.aminmax(x.detach())
    if not bool((lo_x >= lo) & (hi_x <= hi)):
        raise ValueError(
            f"{name} must lie in [{lo}, {hi}] and be finite, got values in "
            f"[{lo_x.item():.3g}, {hi_x.item():.3g}]"
        )
    return x.to(like.dtype)


def _torch_args(q, k, v, causal, beta, g, chunk_size, name):
    if not causal:
        raise ValueError(_NOT_CAUSAL.format(name=name))
    check_same_length(q, k, name)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    shape = tuple(k.shape[:3])
    beta = nlms_beta(k) if beta is None else _gate("beta", beta, shape, 0.0, 1.0, k)
    if g is not None:
        g = _gate("g", g, shape, -float("inf"), 0.0, k)
    return q / q.shape[-1] ** 0.5, beta, g, chunk_size


def delta_chunked(q, k, v, beta, g=None, chunk_size: int = CHUNK_SIZE, initial_state=None):
    """The chunked (WY / UT-transform) form of the (gated) delta rule, torch (chapter 4).

    q, k: (B, H, N, D) (q already scaled, or None to compute only the state), v: (B, H, N, Dv),
    beta: (B, H, N), g: (B, H, N) log-decays or None, initial_state: (B, H, D, Dv) or None
    -> (o: (B, H, N, Dv) or None, final state S: (B, H, D, Dv)).

    In a chunk with prefix log-decays G_t and entry state S, the corrections u_t = β_t(v_t −
    S'_tᵀ k_t) solve (I + A) U = diag(β)(V − diag(e^G) K S), A_ts = β_t (k_t·k_s) e^{G_t − G_s}
    for s < t: one unit lower-triangular solve, U = Ũ − W S with Ũ and W independent of S. Then
    o_t = e^{G_t} Sᵀq_t + Σ_{s ≤ t} e^{G_t − G_s}(q_t·k_s) u_s and S ← e^{G_C} S + Σ_s e^{G_C − G_s}
    k_s u_sᵀ. Every exponent is ≤ 0. The solves and products of CHUNK_GROUP chunks run together;
    only the (D, Dv) state passes from chunk to chunk.
    """
    B, H, N, D = k.shape
    Dv = v.shape[-1]
    C = min(chunk_size, N)
    pad = (-N) % C  # zero keys with β = 0 and g = 0 after the end leave the state unchanged
    if g is None:
        g = k.new_zeros(B, H, N)
    if pad:
        k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (k, v))
        q = None if q is None else torch.nn.functional.pad(q, (0, 0, 0, pad))
        beta, g = (torch.nn.functional.pad(x, (0, pad)) for x in (beta, g))
    nc = (N + pad) // C
    kc, vc = k.reshape(B, H, nc, C, D), v.reshape(B, H, nc, C, Dv)
    qc = None if q is None else q.reshape(B, H, nc, C, D)
    bc, G = beta.reshape(B, H, nc, C, 1), g.reshape(B, H, nc, C).cumsum(-1)
    lower = torch.ones(C, C, dtype=torch.bool, device=k.device).tril()
    S = k.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    outs = []
    for c0 in range(0, nc, CHUNK_GROUP):
        c1 = min(c0 + CHUNK_GROUP, nc)
        kg, vg, bg, Gg = kc[:, :, c0:c1], vc[:, :, c0:c1], bc[:, :, c0:c1], G[:, :, c0:c1]
        decay = (Gg[..., :, None] - Gg[..., None, :]).masked_fill(~lower, -float("inf")).exp()
        A = bg * (kg @ kg.transpose(-1, -2)) * decay  # the solve reads its strict lower triangle
        rhs = torch.cat([bg * kg * Gg.exp()[..., None], bg * vg], dim=-1)
        WU = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
        W, U = WU[..., :D], WU[..., D:]
        k_end = kg * (Gg[..., -1:] - Gg).exp()[..., None]  # keys decayed to the chunk's end
        if qc is not None:
            qg = qc[:, :, c0:c1]
            scores = (qg @ kg.transpose(-1, -2)) * decay  # zero above the diagonal
            q_start = qg * Gg.exp()[..., None]  # queries reading the entry state
        for c in range(c1 - c0):
            u = U[:, :, c] - W[:, :, c] @ S
            if qc is not None:
                outs.append(q_start[:, :, c] @ S + scores[:, :, c] @ u)
            S = Gg[:, :, c, -1, None, None].exp() * S + k_end[:, :, c].transpose(-1, -2) @ u
    if qc is None:
        return None, S
    return torch.cat(outs, dim=2)[:, :, :N], S


def delta_attention(
    q, k, v, *, causal: bool = True, beta=None, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """The delta rule, chunked, torch: O(N·C·D + N·D·Dv). q, k: (B, H, N, D), v: (B, H, N, Dv),
    beta: (B, H, N) in [0, 1] or None (1/(1 + ‖k_t‖²)) -> (B, H, N, Dv). Chapter 4."""
    q, beta, _, chunk_size = _torch_args(q, k, v, causal, beta, None, chunk_size, "delta")
    return delta_chunked(q, k, v, beta, None, chunk_size)[0]


def gated_delta_attention(
    q, k, v, *, causal: bool = True, beta=None, g=None, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """Gated DeltaNet, chunked, torch: the delta rule after S ← exp(g_t) S. g: (B, H, N) ≤ 0, or
    None for RetNet's per-head decays; otherwise as :func:`delta_attention`. Chapter 4."""
    g = default_log_decay(tuple(k.shape[:3]), k) if g is None else g
    q, beta, g, chunk_size = _torch_args(q, k, v, causal, beta, g, chunk_size, "gated_delta")
    return delta_chunked(q, k, v, beta, g, chunk_size)[0]


class DeltaState(NamedTuple):
    """Decoding state of the (gated) delta rule: S (B, H, D, Dv) and t, the tokens read so far."""

    S: torch.Tensor
    t: int


def _prefill(k, v, beta, g, name):
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    _, beta, g, _ = _torch_args(k, k, v, True, beta, g, CHUNK_SIZE, name)
    return DeltaState(delta_chunked(None, k, v, beta, g)[1], k.shape[2])


def delta_prefill(k, v, beta=None) -> DeltaState:
    """The state after reading a prompt with the delta rule. k: (B, H, N, D), v: (B, H, N, Dv)."""
    return _prefill(k, v, beta, None, "delta")


def gated_delta_prefill(k, v, beta=None, g=None) -> DeltaState:
    """The state after reading a prompt with Gated DeltaNet. k: (B, H, N, D), v: (B, H, N, Dv)."""
    g = default_log_decay(tuple(k.shape[:3]), k) if g is None else g
    return _prefill(k, v, beta, g, "gated_delta")


def _token(name, x, t, B, H):
    """This token's gate (B, H) from a per-token (B, H) or a whole-sequence (B, H, N) tensor."""
    check_tensor(name, x, finite=False)
    if x.dim() == 3 and x.shape[:2] == (B, H) and t < x.shape[2]:
        return x[:, :, t]
    if tuple(x.shape) != (B, H):
        raise ValueError(
            f"{name} must be (B, H) = {(B, H)} for this token, or (B, H, N) with N > {t}, "
            f"got {tuple(x.shape)}"
        )
    return x


def _step(state, q_t, k_t, v_t, beta, log_a):
    B, H, D = check_step_inputs(q_t, k_t, v_t)
    shape = (B, H, D, v_t.shape[-1])
    if state is None:
        state = DeltaState(k_t.new_zeros(shape), 0)
    if not isinstance(state, DeltaState) or tuple(state.S.shape) != shape:
        raise ValueError(
            f"state must be a DeltaState with S of shape {shape}, got {type(state).__name__}"
        )
    beta_t = nlms_beta(k_t) if beta is None else _token("beta", beta, state.t, B, H)
    S = (
        state.S
        if log_a is None
        else _token("g", log_a, state.t, B, H).exp()[..., None, None] * state.S
    )
    u = beta_t[..., None] * (v_t - (k_t[..., None, :] @ S).squeeze(-2))
    S = S + k_t[..., :, None] * u[..., None, :]
    return DeltaState(S, state.t + 1), (q_t[..., None, :] @ S).squeeze(-2) / D**0.5


def delta_step(state, q_t, k_t, v_t, beta=None):
    """One delta-rule decoding step: S ← S + β_t k_t (v_t − Sᵀk_t)ᵀ, o_t = Sᵀq_t/√D.

    q_t, k_t: (B, H, D), v_t: (B, H, Dv); ``beta``: None, this token's (B, H), or the whole
    sequence's (B, H, N), read at the state's position t. ``state`` None starts from zeros.
    Returns (state, o_t). O(D·Dv) per token. Values of ``beta`` are not range-checked here.
    """
    return _step(state, q_t, k_t, v_t, beta, None)


def gated_delta_step(state, q_t, k_t, v_t, beta=None, g=None):
    """One Gated DeltaNet step: S ← exp(g_t) S, then :func:`delta_step`. ``g`` as ``beta``."""
    if g is None:
        B, H, _ = check_step_inputs(q_t, k_t, v_t)
        g = default_log_decay((B, H, 1), k_t)[:, :, 0]
    return _step(state, q_t, k_t, v_t, beta, g)
