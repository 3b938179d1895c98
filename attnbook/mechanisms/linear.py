"""Linear attention with φ(x) = elu(x) + 1 (chapter 4, Long sequences; Katharopoulos et al. 2020).

Softmax's exp(q·k) is replaced by a kernel φ(q)·φ(k), so the weights factor and

    o_i = φ(q_i)ᵀ S_i / φ(q_i)ᵀ z_i,   S_i = Σ_{j ≤ i} φ(k_j) v_jᵀ,   z_i = Σ_{j ≤ i} φ(k_j)

(sums over every j when not causal). Three causal forms compute the same numbers:
the quadratic form (an n×n weight matrix, :func:`linear_attention_numpy`), the prefix-sum
form (cumulative sums of φ(k_j) v_jᵀ, :func:`linear_attention_cumsum`) and the chunked
form (quadratic inside chunks, a running state between them, :func:`chunked_causal`).
Decoding carries the state (S, z) and costs O(D·Dv) per token (:func:`linear_step`).

:func:`chunked_causal` also serves Performer and the recurrent forms of ``recurrent.py``:
it computes o_i = Σ_{j ≤ i} (q_i·k_j) exp(L_i − L_j) v_j for any per-step log-decays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from attnbook.checks import (
    check_array,
    check_positive_int,
    check_same_length,
    check_step_inputs,
    check_tensor,
    is_finite,
)

__all__ = [
    "elu_feature",
    "linear_attention_numpy",
    "linear_recurrent_numpy",
    "linear_attention",
    "linear_attention_cumsum",
    "chunked_causal",
    "LinearState",
    "linear_prefill",
    "linear_step",
]

CHUNK_SIZE = 64
CHUNK_GROUP = 16  # chunks processed together by chunked_causal (a cache-sized working set)


def elu_feature(x):
    """φ(x) = elu(x) + 1 > 0, element-wise, for NumPy arrays or torch tensors."""
    if isinstance(x, torch.Tensor):
        return torch.nn.functional.elu(x) + 1.0
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def _check_np_qkv(q, k, v):
    q, k, v = (check_array(name, x, ndim=4) for name, x in (("q", q), ("k", k), ("v", v)))
    if k.shape[:2] != q.shape[:2] or v.shape[:3] != k.shape[:3] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"q, k, v must be (B, H, N, D), (B, H, M, D), (B, H, M, Dv), got {q.shape}, {k.shape}, "
            f"{v.shape}"
        )
    return q, k, v


def linear_attention_numpy(q, k, v, causal: bool = False, return_weights: bool = False):
    """NumPy float64 quadratic form: W = φ(Q)φ(K)ᵀ (masked), rows normalised, O = W V.

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv) (and W: (B, H, N, M)).
    """
    q, k, v = _check_np_qkv(q, k, v)
    w = elu_feature(q) @ np.swapaxes(elu_feature(k), -1, -2)
    if causal:
        check_same_length(q, k)
        w = np.tril(w)
    w = w / w.sum(-1, keepdims=True)
    return (w @ v, w) if return_weights else w @ v


def linear_recurrent_numpy(q, k, v):
    """NumPy float64 recurrent (causal) form: S_t = S_{t-1} + φ(k_t) v_tᵀ, z_t = z_{t-1} + φ(k_t).

    One token at a time, o_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t. q, k: (B, H, N, D), v: (B, H, N, Dv).
    """
    q, k, v = _check_np_qkv(q, k, v)
    fq, fk = elu_feature(q), elu_feature(k)
    B, H, N, D = q.shape
    S, z = np.zeros((B, H, D, v.shape[-1])), np.zeros((B, H, D))
    out = np.empty((B, H, N, v.shape[-1]))
    for t in range(N):
        S = S + fk[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + fk[:, :, t]
        out[:, :, t] = (
            np.einsum("bhd,bhde->bhe", fq[:, :, t], S)
            / np.einsum("bhd,bhd->bh", fq[:, :, t], z)[..., None]
        )
    return out


def chunked_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    chunk_size: int = CHUNK_SIZE,
    feature_q=None,
    feature_k=None,
) -> torch.Tensor:
    """o_i = Σ_{j ≤ i} (q_i·k_j) exp(L_i − L_j) v_j with L = cumsum(log_decay), chunk by chunk.

    q, k: (B, H, N, R), v: (B, H, N, Dv), log_decay: (B, H, N) or (H, 1)-broadcastable, ≤ 0, or None
    (no decay). Inside a chunk of C tokens the (C, C) products are formed; between chunks a state
    (R, Dv) is carried, CHUNK_GROUP chunks at a time. Time O(N·C·(R + Dv) + N·R·Dv), memory O(N·C)
    plus O(CHUNK_GROUP·R·Dv) for the states: linear in N, with a working set that does not grow.
    ``feature_q``, ``feature_k``: maps applied to each group's q and k ((B, H, g, C, D) -> (..., R))
    just before use, so features wider than the inputs (the Performer's) are never held for all N
    tokens at once; q and k are then (B, H, N, D). Chapter 4.
    """
    B, H, N = q.shape[:3]
    C = min(check_positive_int("chunk_size", chunk_size), N)
    pad = (-N) % C
    if log_decay is not None:
        log_decay = log_decay.expand(B, H, N)
    if pad:  # zero keys/values after the end change nothing for earlier queries
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        if log_decay is not None:
            log_decay = torch.nn.functional.pad(log_decay, (0, pad))
    nc = (N + pad) // C
    qc, kc, vc = (x.reshape(B, H, nc, C, x.shape[-1]) for x in (q, k, v))
    # decay from each chunk's start
    L_all = None if log_decay is None else log_decay.reshape(B, H, nc, C).cumsum(-1)
    tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    # state: Σ over all earlier groups' keys of k vᵀ (decayed), (B, H, R, Dv)
    outs, state = [], None
    # a group of chunks at a time keeps the working set cache-sized
    for g0 in range(0, nc, CHUNK_GROUP):
        g1 = min(g0 + CHUNK_GROUP, nc)
        qg, kg, vg = qc[:, :, g0:g1], kc[:, :, g0:g1], vc[:, :, g0:g1]
        if feature_q is not None:
            qg = feature_q(qg)
        if feature_k is not None:
            kg = feature_k(kg)
            if pad and g1 == nc:  # the features of the zero keys after the end are not zero
                after = torch.arange(g0 * C, g1 * C, device=kg.device).reshape(g1 - g0, C, 1) >= N
                kg = kg.masked_fill(after, 0.0)
        if L_all is None:
            out, state = _group_plain(qg, kg, vg, state, tril)
        else:
            out, state = _group_decayed(qg, kg, vg, state, tril, L_all[:, :, g0:g1])
        outs.append(out)
    out = torch.cat(outs, dim=2)
    return out.reshape(B, H, nc * C, -1)[:, :, :N]


def _group_plain(qg, kg, vg, state, tril):
    """One group of chunks of :func:`chunked_causal` without decay: (outputs, state after it)."""
    scores = (qg @ kg.transpose(-1, -2)).masked_fill(~tril, 0.0)  # (B, H, g, C, C)
    prefix = (kg.transpose(-1, -2) @ vg).cumsum(2)  # (B, H, g, R, Dv): state after each chunk
    before = torch.nn.functional.pad(prefix[:, :, :-1], (0, 0, 0, 0, 1, 0))  # exclusive prefix
    if state is not None:
        before = before + state[:, :, None]
    state = prefix[:, :, -1] if state is None else state + prefix[:, :, -1]
    return scores @ vg + qg @ before, state


def _group_decayed(qg, kg, vg, state, tril, L):
    """One group of chunks of :func:`chunked_causal` with decays L (cumulative from each chunk's
    start, (B, H, g, C)): the decayed prefix sum runs chunk by chunk, small (R, Dv) updates."""
    diff = (L[..., :, None] - L[..., None, :]).masked_fill(~tril, float("-inf"))
    scores = (qg @ kg.transpose(-1, -2)) * diff.exp()
    # keys decayed to their chunk's end
    updates = (kg * (L[..., -1:] - L).exp()[..., None]).transpose(-1, -2) @ vg
    chunk_decay = L[..., -1].exp()  # (B, H, g)
    states = []
    state = torch.zeros_like(updates[:, :, 0]) if state is None else state
    for c in range(L.shape[2]):
        states.append(state)
        state = state * chunk_decay[:, :, c, None, None] + updates[:, :, c]
    return scores @ vg + (qg * L.exp()[..., None]) @ torch.stack(states, dim=2), state


def _ones_column(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def feature_attention(
    fq, fk, v, causal: bool, chunk_size: int, feature_q=None, feature_k=None, underflow=None
) -> torch.Tensor:
    """Attention with positive features fq: (B, H, N, r), fk: (B, H, M, r), normalised row by row.

    Causal, ``feature_q``/``feature_k`` may map inputs to features group by group inside
    :func:`chunked_causal` (fq, fk are then the inputs). ``underflow``: (method name, features r);
    the call then raises ``FloatingPointError`` when a row's normaliser is so small that features
    which underflowed could change it by more than √eps of the dtype. Shared by linear attention
    and the Performer. Chapter 4.

    The output is checked here, so ``attnbook.attention`` need not read it again
    (``Method.checks_output``): ``FloatingPointError`` if it would hold NaN or inf (from a NaN or
    inf input, or features that over- or underflow). Non-causal, one more column of the last
    product bounds each row: with features ≥ 0, Σ_c |o_ic| ≤ φ(q_i)ᵀ(|S| 1) / φ(q_i)ᵀz, an (N,)
    vector to check instead of the (N, Dv) output. Causal, the output is read once (the chunked
    form costs far more than that read).
    """
    if causal:
        check_same_length(fq, fk)
        num = chunked_causal(
            fq, fk, _ones_column(v), chunk_size=chunk_size, feature_q=feature_q, feature_k=feature_k
        )
        if underflow is not None:
            _check_normaliser(*underflow, num[..., -1], fk.shape[2])
        out = num[..., :-1] / num[..., -1:]
        _require_finite(out)
        return out
    state = fk.transpose(-1, -2) @ _ones_column(v)  # [S, z]: (B, H, r, Dv + 1)
    row_bound = state[..., :-1].abs().sum(-1, keepdim=True)  # |S| 1: (B, H, r, 1)
    num = fq @ torch.cat([state, row_bound], dim=-1)  # [φ(Q)S, φ(Q)z, φ(Q)|S|1]: (B, H, N, Dv + 2)
    if underflow is not None:
        _check_normaliser(*underflow, num[..., -2], fk.shape[2])
    out = num[..., :-2] / num[..., -2:-1]
    if not _bounded(num[..., -1], num[..., -2]):
        _require_finite(out)  # the bound is too coarse or not finite: read the output
    return out


def _bounded(bound: torch.Tensor, den: torch.Tensor) -> bool:
    """True when every row's bound_i / den_i ≥ Σ_c |o_ic| and every bound_i (≥ each |numerator|)
    is finite and below half the dtype's largest value: then no entry of the output overflowed."""
    half = torch.finfo(bound.dtype).max / 2
    wide = torch.promote_types(bound.dtype, torch.float32)
    bound, den = bound.detach().to(wide), den.detach().to(wide)
    return torch.maximum((bound / den).amax(), bound.amax()).item() < half  # NaN: False


def _require_finite(out: torch.Tensor) -> None:
    if not is_finite(out):
        raise FloatingPointError(
            "the output holds NaN or infinite values: q, k or v holds NaN or inf, or the features "
            f"over- or underflow in {out.dtype}; scale q and k down, or use an exact method"
        )


def _check_normaliser(method: str, features: int, den: torch.Tensor, n_keys: int) -> None:
    """Refuse a result whose smallest normaliser is within reach of the features' underflow: each
    of the n_keys·r products loses at most one subnormal step, smallest_normal·eps, so above
    n_keys·r·smallest_normal·√eps the features lost change the normaliser by less than √eps."""
    info = torch.finfo(den.dtype)
    bound = n_keys * features * info.smallest_normal * info.eps**0.5
    if bool((den.detach().amin() < bound).item()):
        raise FloatingPointError(
            f"method {method!r}: the features of some keys underflow in {den.dtype} (smallest "
            f"normaliser {den.detach().amin().item():.3g}, below {bound:.3g}), so the result "
            "would be inaccurate; scale q and k down, use a wider dtype, or use an exact method"
        )


def linear_attention(
    q, k, v, *, causal: bool = False, chunk_size: int = CHUNK_SIZE
) -> torch.Tensor:
    """Linear attention, torch. q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv).

    Non-causal: φ(Q)(φ(K)ᵀV) normalised by φ(Q)(φ(K)ᵀ1), O(N·D·Dv). Causal: :func:`chunked_causal`
    on [V, 1], whose last column is the normaliser. Chapter 4.
    """
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if causal:  # features made group by group inside the chunked form: a small working set
        return feature_attention(
            q, k, v, True, chunk_size, feature_q=elu_feature, feature_k=elu_feature
        )
    return feature_attention(elu_feature(q), elu_feature(k), v, False, chunk_size)


def linear_attention_cumsum(q, k, v) -> torch.Tensor:
    """Causal linear attention by prefix sums over the (D, Dv) outer products, torch.

    Materialises S_i for every i: memory O(N·D·Dv), the form the chunked one avoids. Chapter 4.
    """
    fq, fk = elu_feature(q), elu_feature(k)
    S = torch.cumsum(fk[..., :, None] * v[..., None, :], dim=2)  # (B, H, N, D, Dv)
    z = torch.cumsum(fk, dim=2)
    return torch.einsum("bhnd,bhnde->bhne", fq, S) / (fq * z).sum(-1, keepdim=True)


class LinearState(NamedTuple):
    """Decoding state of causal linear attention: S (B, H, D, Dv) and z (B, H, D)."""

    S: torch.Tensor
    z: torch.Tensor


def linear_prefill(k: torch.Tensor, v: torch.Tensor) -> LinearState:
    """The state after reading a prompt: S = Σ φ(k_j)
    v_jᵀ, z = Σ φ(k_j). k: (B, H, N, D), v: (B, H, N, Dv)."""
    check_tensor("k", k, ndim=4)
    check_tensor("v", v, ndim=4)
    fk = elu_feature(k)
    return LinearState(fk.transpose(-1, -2) @ v, fk.sum(2))


def linear_step(state: LinearState | None, q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor):
    """One decoding step: add token t to the state, then read it with q_t. Returns (state, o_t).

    q_t, k_t: (B, H, D), v_t: (B, H, Dv); ``state`` None starts from zeros. O(D·Dv) work and
    memory per token, whatever the context length. Chapter 4.
    """
    B, H, D = check_step_inputs(q_t, k_t, v_t)
    if state is None:
        state = LinearState(k_t.new_zeros(B, H, D, v_t.shape[-1]), k_t.new_zeros(B, H, D))
    if (
        not isinstance(state, LinearState)
        or state.S.shape != (B, H, D, v_t.shape[-1])
        or state.z.shape != (B, H, D)
    ):
        raise ValueError(
            f"state must be a LinearState with S (B, H, D, Dv) = {(B, H, D, v_t.shape[-1])} "
            f"and z (B, H, D), got {type(state).__name__}"
        )
    fk, fq = elu_feature(k_t), elu_feature(q_t)
    S = state.S + fk[..., :, None] * v_t[..., None, :]
    z = state.z + fk
    o = (fq[..., None, :] @ S).squeeze(-2) / (fq * z).sum(-1, keepdim=True)
    return LinearState(S, z), o
