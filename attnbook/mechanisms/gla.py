"""Gated linear attention, GLA (chapter 4; Yang, Wang, Shen, Panda & Kim, ICML 2024).

Linear attention whose state forgets channel by channel, with a data-dependent gate:

    S_t = diag(exp(gk_t)) S_{t−1} + k_t v_tᵀ,    o_t = S_tᵀ q_t / √D,

gk_t ∈ (−∞, 0]^D the log of the forget gate of each key channel. With one gate per head it is
retention (RetNet) and the scalar-decay selective scan; per channel, the decay no longer factors
into a (C, C) mask, and the chunked form (:func:`gla_chunked`) computes the within-chunk scores
Σ_d q_id k_jd exp(G_id − G_jd) in log space (every exponent ≤ 0, stable in float32 for any gate),
and matrix products between chunks.

Conventions are flash-linear-attention's ``fla.ops.gla.naive``: q scaled by 1/√D, ``gk`` of shape
(B, H, N, D). Default ``gk=None``: RetNet's per-head decay log(1 − 2^{−5−h}) in every channel, so
that ``attention(q, k, v, method="gla")`` needs no option (and equals retention). Causal only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from attnbook.checks import check_positive_int, check_same_length, check_step_inputs, check_tensor
from attnbook.mechanisms.linear import CHUNK_GROUP, _check_np_qkv
from attnbook.mechanisms.recurrent import retention_gammas

__all__ = [
    "CHUNK_SIZE",
    "default_log_gates",
    "gla_numpy",
    "gla_chunked",
    "gla_attention",
    "GLAState",
    "gla_prefill",
    "gla_step",
]

#: tokens per chunk: the within-chunk scores hold a (C, C, D) tensor per chunk, so chunks are short
CHUNK_SIZE = 16

_NOT_CAUSAL = (
    "gla is causal by construction (its gates decay the state from the past to the present); "
    "call it with causal=True"
)


def default_log_gates(shape, like=None):
    """GLA's default gk: RetNet's log(1 − 2^{−5−h}) for head h in every channel, (B, H, N, D).

    Returns a NumPy array, or a tensor on ``like``'s device and dtype when ``like`` is a tensor.
    """
    B, H, N, D = shape
    gk = np.log(retention_gammas(H))
    if like is None:
        return np.broadcast_to(gk[None, :, None, None], (B, H, N, D))
    gk = torch.as_tensor(gk, dtype=like.dtype, device=like.device)
    return gk[None, :, None, None].expand(B, H, N, D)


def gla_numpy(q, k, v, causal: bool = True, gk=None, return_state: bool = False):
    """GLA one token at a time, NumPy float64 (chapter 4).

    q, k: (B, H, N, D), v: (B, H, N, Dv), gk: (B, H, N, D) ≤ 0 or None (RetNet's decays)
    -> o: (B, H, N, Dv), and the final state S: (B, H, D, Dv) when ``return_state``.
    """
    if not causal:
        raise ValueError(_NOT_CAUSAL)
    q, k, v = _check_np_qkv(q, k, v)
    check_same_length(q, k, "gla")
    B, H, N, D = q.shape
    gk = default_log_gates(q.shape) if gk is None else np.asarray(gk, dtype=np.float64)
    if gk.shape != q.shape:
        raise ValueError(f"gk must have shape (B, H, N, D) = {q.shape}, got {gk.shape}")
    if not (np.all(gk <= 0) and np.all(np.isfinite(gk))):
        raise ValueError("gk must be <= 0 and finite (log forget gates)")
    q = q / np.sqrt(D)
    S = np.zeros((B, H, D, v.shape[-1]))
    out = np.empty((B, H, N, v.shape[-1]))
    for t in range(N):
        S = np.exp(gk[:, :, t])[..., None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, t] = np.einsum("bhd,bhde->bhe", q[:, :, t], S)
    return (out, S) if return_state else out


def gla_chunked(q, k, v, gk, chunk_size: int = CHUNK_SIZE, initial_state=None):
    """The chunked form of GLA, torch (chapter 4).

    q, k: (B, H, N, D) (q already scaled, or None to compute only the state), v: (B, H, N, Dv),
    gk: (B, H, N, D) log gates, initial_state: (B, H, D, Dv) or None -> (o: (B, H, N, Dv) or None,
    final state S: (B, H, D, Dv)).

    With G the prefix sums of gk inside a chunk and S the state at its entry:
    o_i = (q_i ⊙ e^{G_i})ᵀ S + Σ_{j ≤ i} Σ_d q_id k_jd e^{G_id − G_jd} v_j, and the state leaves as
    e^{G_C} ⊙ S + Σ_j (k_j ⊙ e^{G_C − G_j}) v_jᵀ. CHUNK_GROUP chunks are processed together: their
    state updates are matrix products, and only a short loop adds them up chunk after chunk.
    """
    B, H, N, D = k.shape
    Dv = v.shape[-1]
    C = min(chunk_size, N)
    pad = (-N) % C  # zero keys and values with gk = 0 after the end leave the state unchanged
    if pad:
        k, v, gk = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (k, v, gk))
        q = None if q is None else torch.nn.functional.pad(q, (0, 0, 0, pad))
    nc = (N + pad) // C
    kc, vc = k.reshape(B, H, nc, C, D), v.reshape(B, H, nc, C, Dv)
    qc = None if q is None else q.reshape(B, H, nc, C, D)
    G = gk.reshape(B, H, nc, C, D).cumsum(-2)
    lower = torch.ones(C, C, dtype=torch.bool, device=k.device).tril()[..., None]
    S = k.new_zeros(B, H, D, Dv) if initial_state is None else initial_state
    outs = []
    for c0 in range(0, nc, CHUNK_GROUP):
        c1 = min(c0 + CHUNK_GROUP, nc)
        kg, vg, Gg = kc[:, :, c0:c1], vc[:, :, c0:c1], G[:, :, c0:c1]
        G_end = Gg[..., -1:, :]  # (B, H, g, 1, D)
        updates = (kg * (G_end - Gg).exp()).transpose(-1, -2) @ vg  # (B, H, g, D, Dv)
        entry = []
        for c in range(c1 - c0):
            entry.append(S)
            S = G_end[:, :, c, 0, :, None].exp() * S + updates[:, :, c]
        if qc is None:
            continue
        qg = qc[:, :, c0:c1]
        decay = (Gg[..., :, None, :] - Gg[..., None, :, :]).masked_fill(~lower, -float("inf"))
        scores = (qg[..., :, None, :] * kg[..., None, :, :] * decay.exp()).sum(-1)  # (.., C, C)
        outs.append((qg * Gg.exp()) @ torch.stack(entry, dim=2) + scores @ vg)
    if qc is None:
        return None, S
    return torch.cat(outs, dim=2).reshape(B, H, nc * C, Dv)[:, :, :N], S


def _check_gk(gk, k):
    check_tensor("gk", gk, ndim=4, finite=False)
    if gk.shape != k.shape:
        raise ValueError(
            f"gk must have shape (B, H, N, D) = {tuple(k.shape)}, got {tuple(gk.shape)}"
        )
    if gk.device != k.device:
        raise ValueError(f"gk must be on the device of q, k, v ({k.device}), got {gk.device}")
    hi = gk.detach().max()
    if not bool(hi <= 0) or not bool(torch.isfinite(gk.detach().min())):
        raise ValueError(f"gk must be <= 0 and finite (log forget gates), got max {hi.item():.3g}")
    return gk.to(k.dtype)


def gla_attention(
    q, k, v, *, causal: bool = True, gk=None, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """GLA, chunked, torch: O(N·C·D + N·D·Dv). q, k: (B, H, N, D), v: (B, H, N, Dv),
    gk: (B, H, N, D) ≤ 0 or None (RetNet's per-head decays) -> (B, H, N, Dv). Chapter 4."""
    if not causal:
        raise ValueError(_NOT_CAUSAL)
    check_same_length(q, k, "gla")
    chunk_size = check_positive_int("chunk_size", chunk_size)
    gk = default_log_gates(tuple(k.shape), k) if gk is None else _check_gk(gk, k)
    return gla_chunked(q / q.shape[-1] ** 0.5, k, v, gk, chunk_size)[0]


class GLAState(NamedTuple):
    """Decoding state of GLA: S (B, H, D, Dv) and t, the tokens read so far."""

    S: torch.Tensor
    t: int


def gla_prefill(k, v, gk=None) -> GLAState:
    """The state after a prompt. k: (B, H, N, D), v: (B, H, N, Dv), gk: (B, H, N, D) or None."""
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    gk = default_log_gates(tuple(k.shape), k) if gk is None else _check_gk(gk, k)
    return GLAState(gla_chunked(None, k, v, gk)[1], k.shape[2])


def gla_step(state, q_t, k_t, v_t, gk=None):
    """One GLA decoding step: S ← diag(exp(gk_t)) S + k_t v_tᵀ, o_t = Sᵀq_t/√D -> (state, o_t).

    q_t, k_t: (B, H, D), v_t: (B, H, Dv); ``gk``: None, this token's (B, H, D), or the whole
    sequence's (B, H, N, D), read at the state's position t (values not range-checked here).
    ``state`` None starts from zeros. O(D·Dv) per token.
    """
    B, H, D = check_step_inputs(q_t, k_t, v_t)
    shape = (B, H, D, v_t.shape[-1])
    if state is None:
        state = GLAState(k_t.new_zeros(shape), 0)
    if not isinstance(state, GLAState) or tuple(state.S.shape) != shape:
        raise ValueError(
            f"state must be a GLAState with S of shape {shape}, got {type(state).__name__}"
        )
    if gk is None:
        gk_t = default_log_gates((B, H, 1, D), k_t)[:, :, 0]
    else:
        check_tensor("gk", gk, finite=False)
        if gk.dim() == 4 and gk.shape[:2] == (B, H) and gk.shape[3] == D and state.t < gk.shape[2]:
            gk_t = gk[:, :, state.t]
        elif tuple(gk.shape) == (B, H, D):
            gk_t = gk
        else:
            raise ValueError(
                f"gk must be (B, H, D) = {(B, H, D)} for this token, or (B, H, N, D) with "
                f"N > {state.t}, got {tuple(gk.shape)}"
            )
    S = gk_t.exp()[..., None] * state.S + k_t[..., :, None] * v_t[..., None, :]
    return GLAState(S, state.t + 1), (q_t[..., None, :] @ S).squeeze(-2) / D**0.5
