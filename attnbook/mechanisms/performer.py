"""Performer / FAVOR+: softmax attention by positive orthogonal random features (chapter 4;
Choromanski et al. 2021).

With x = q / D^{1/4} and y = k / D^{1/4}, exp(q·k/√D) = E_ω[φ(x)·φ(y)] for

    φ(x) = exp(Ωx − |x|²/2) / √r,   Ω ∈ ℝ^{r×D} with rows ω ~ N(0, I),

so softmax attention becomes linear attention with r positive features. The rows of Ω come in
orthogonal blocks of D (QR of a Gaussian matrix), each row rescaled to a χ_D-distributed length,
which keeps every row marginally N(0, I) and lowers the variance (:func:`random_features`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from attnbook.checks import check_nonnegative_int, check_positive_int, check_same_length
from attnbook.mechanisms.linear import CHUNK_GROUP, _check_np_qkv, feature_attention
from attnbook.reference import causal_mask

__all__ = [
    "random_features",
    "feature_map",
    "performer_weights_numpy",
    "performer_numpy",
    "performer_attention",
]

FEATURES = 256


@lru_cache(maxsize=16)
def _features_cached(r: int, d: int, seed: int, orthogonal: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not orthogonal:
        return rng.standard_normal((r, d))
    blocks = []
    for _ in range(-(-r // d)):
        qmat, rmat = np.linalg.qr(rng.standard_normal((d, d)))
        qmat = qmat * np.sign(
            np.diag(rmat)
        )  # the sign fix that makes Q uniformly (Haar) distributed
        lengths = np.linalg.norm(
            rng.standard_normal((d, d)), axis=1
        )  # χ_d lengths, as Gaussian rows have
        blocks.append(lengths[:, None] * qmat.T)
    omega = np.concatenate(blocks)[:r]
    omega.setflags(write=False)
    return omega


def random_features(r: int, d: int, seed: int = 0, orthogonal: bool = True) -> np.ndarray:
    """Ω: (r, d) float64, seeded by ``seed`` (NumPy default_rng):
    orthogonal blocks of d rows, or i.i.d. N(0, 1)."""
    r = check_positive_int("features", r)
    d = check_positive_int("d", d)
    seed = check_nonnegative_int("seed", seed)
    return _features_cached(r, d, seed, bool(orthogonal))


def _exponents(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """log φ(x) = xΩᵀ − |x|²/2 − log √r, torch, x: (..., D) -> (..., r)."""
    return x @ omega.T - ((x * x).sum(-1, keepdim=True) / 2 + 0.5 * np.log(omega.shape[0]))


def feature_map(x, omega, stabilize_dims=None, shift=None):
    """φ(x) = exp(xΩᵀ − |x|²/2) / √r for x: (..., D) (already divided by D^{1/4}) -> (..., r).

    NumPy or torch. ``stabilize_dims`` (torch only) subtracts the largest exponent over those dims,
    or ``shift`` (torch only, broadcastable) a given one: a constant that cancels in the
    normalisation, so large inputs do not overflow.
    """
    if isinstance(x, torch.Tensor):
        logits = _exponents(x, omega)
        if shift is not None:
            logits.sub_(shift)
        elif stabilize_dims is not None:
            logits.sub_(logits.amax(dim=stabilize_dims, keepdim=True).detach())
        return logits.exp_()  # in place: two fewer passes over the (N, r) features
    r = omega.shape[0]
    x = np.asarray(x, dtype=np.float64)
    return np.exp(x @ omega.T - (x * x).sum(-1, keepdims=True) / 2) / np.sqrt(r)


def performer_weights_numpy(
    q, k, features: int = FEATURES, seed: int = 0, causal: bool = False, orthogonal: bool = True
) -> np.ndarray:
    """NumPy float64: the approximate attention matrix Â =
    rownorm(φ(Q)φ(K)ᵀ ⊙ mask). q: (..., N, D) -> (..., N, M)."""
    q, k = np.asarray(q, dtype=np.float64), np.asarray(k, dtype=np.float64)
    d = q.shape[-1]
    omega = random_features(features, d, seed, orthogonal)
    a = feature_map(q / d**0.25, omega) @ np.swapaxes(feature_map(k / d**0.25, omega), -1, -2)
    if causal:
        a = np.where(causal_mask(q.shape[-2]), a, 0.0)
    return a / a.sum(-1, keepdims=True)


def performer_numpy(
    q, k, v, causal: bool = False, features: int = FEATURES, seed: int = 0
) -> np.ndarray:
    """NumPy float64 reference: Â V with Â from
    :func:`performer_weights_numpy`. (B, H, N, D) -> (B, H, N, Dv)."""
    q, k, v = _check_np_qkv(q, k, v)
    if causal:
        check_same_length(q, k)
    return performer_weights_numpy(q, k, features, seed, causal) @ v


@lru_cache(maxsize=16)
def _omega_tensor(r: int, d: int, seed: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(random_features(r, d, seed)), dtype=dtype, device=device)


def performer_attention(
    q, k, v, *, causal: bool = False, features: int = FEATURES, seed: int = 0, chunk_size: int = 64
) -> torch.Tensor:
    """FAVOR+ in torch. q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv).

    Non-causal: φ(Q)(φ(K)ᵀ[V, 1]), O(N·r·(D + Dv)). Causal: prefix sums of φ(k_j)[v_j, 1]ᵀ, computed
    chunk by chunk (:func:`attnbook.mechanisms.linear.chunked_causal`), the features made inside
    each group of chunks, so the (N, r) feature matrices never exist: one pass finds the keys'
    stabiliser, a second computes. Chapter 4.
    """
    features = check_positive_int("features", features)
    seed = check_nonnegative_int("seed", seed)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    d = q.shape[-1]
    omega = _omega_tensor(features, d, seed, str(q.device), q.dtype)
    x_q, x_k = q / d**0.25, k / d**0.25
    if not causal:
        fq = feature_map(x_q, omega, stabilize_dims=-1)  # one stabiliser per query row
        fk = feature_map(x_k, omega, stabilize_dims=(-1, -2))  # one shared by all keys of a head
        return feature_attention(fq, fk, v, causal, chunk_size)
    shift = _key_shift(x_k, omega, chunk_size * CHUNK_GROUP)[
        ..., None, None, None
    ]  # (B, H, 1, 1, 1)
    return feature_attention(
        x_q,
        x_k,
        v,
        causal,
        chunk_size,
        feature_q=lambda x: feature_map(x, omega, stabilize_dims=-1),
        feature_k=lambda x: feature_map(x, omega, shift=shift),
        underflow=("performer", features),
    )


def _key_shift(x_k: torch.Tensor, omega: torch.Tensor, block: int) -> torch.Tensor:
    """The largest exponent of any key's features, per (batch, head): (B, H), found ``block`` keys
    at
    a time (nothing of size N·r is kept). Subtracted from every key's exponents, it cancels."""
    with torch.no_grad():
        return torch.stack(
            [
                _exponents(x_k[:, :, i : i + block], omega).amax((-1, -2))
                for i in range(0, x_k.shape[2], block)
            ]
        ).amax(0)
