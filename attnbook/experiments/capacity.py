"""Recall capacity without training: store P key-value pairs in a state, read them back (chapter 5).

No model is trained here. P pairs (keys (P, r), values (P, d)) are written into the memory of each
mechanism and read back with the keys themselves as queries, in NumPy float64:

* a linear-attention state S = Σ φ(k_j) v_jᵀ (r × d numbers, plus the normaliser z = Σ φ(k_j) for
  the positive feature maps), read as φ(q)ᵀS (identity φ) or φ(q)ᵀS / φ(q)ᵀz (elu + 1 and the
  Performer's positive random features, the feature maps of the registered ``linear`` and
  ``performer`` mechanisms);
* softmax attention over all P cached pairs (its "state" is the cache, which grows with P);
* a sliding window: softmax attention over the ``window`` most recent pairs only;
* the delta rule (chapter 4), S ← S + β k (v − Sᵀk)ᵀ, read as kᵀS: one pass over the pairs with
  β = 1 (``delta``: each write makes the read under k exactly v), or :data:`DELTA_PASSES` passes
  with β = 1/p in pass p (``delta_3pass``), which averages the passes and moves S towards the
  least-squares fit of all the pairs.

The keys are as orthogonal as r dimensions allow: P <= r keys are orthonormal, more keys are
stacked orthonormal bases (as the Performer's orthogonal features). The error that no linear-readout
state of r features can avoid is the Eckart–Young bound (:func:`rank_bound`).
"""

from __future__ import annotations

import numpy as np

from attnbook.checks import check_nonnegative_int, check_positive_float, check_positive_int
from attnbook.mechanisms.linear import elu_feature
from attnbook.mechanisms.performer import feature_map, random_features

__all__ = [
    "CAPACITY_METHODS",
    "DELTA_PASSES",
    "orthogonal_keys",
    "store_and_read",
    "recall_errors",
    "rank_bound",
    "capacity_sweep",
]

#: Memories compared: three feature maps of a fixed r × d state, softmax over the cache, a window,
#: and the delta rule's r × d state written once or DELTA_PASSES times.
CAPACITY_METHODS = ("identity", "elu", "performer", "softmax", "window", "delta", "delta_3pass")
#: passes over the pairs of ``delta_3pass``
DELTA_PASSES = 3
_FEATURE_SEED = (
    7_919  # offsets the Performer's Ω from the keys' seed (same seed would align Ω with the keys)
)


def orthogonal_keys(num_pairs: int, r: int, seed: int = 0) -> np.ndarray:
    """(P, r) unit keys: orthonormal when P <= r, else ceil(P / r) stacked random orthonormal bases.

    Chapter 5.
    """
    check_positive_int("num_pairs", num_pairs)
    check_positive_int("r", r)
    rng = np.random.default_rng(check_nonnegative_int("seed", seed))
    blocks = []
    for _ in range(-(-num_pairs // r)):
        qmat, rmat = np.linalg.qr(rng.standard_normal((r, r)))
        blocks.append((qmat * np.sign(np.diag(rmat))).T)
    return np.concatenate(blocks)[:num_pairs]


def store_and_read(
    keys, values, method: str, *, scale: float = 8.0, window: int | None = None, seed: int = 0
) -> np.ndarray:
    """Write the pairs into ``method``'s memory and read every value back with its own key.

    keys: (P, r) unit rows, values: (P, d) -> retrieved (P, d). ``scale`` multiplies the query-key
    score q·k of softmax and window (self-score ``scale``); the feature maps read √scale·k (the
    Performer's r random features, seed ``seed``, then approximate exp(scale · q·k)). ``window``:
    pairs the sliding window keeps (default r). Pairs are written in order; the window holds the
    last ``window`` of them.

    Chapter 5.
    """
    keys = np.asarray(keys, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if keys.ndim != 2 or values.ndim != 2 or keys.shape[0] != values.shape[0]:
        raise ValueError(
            f"keys and values must be (P, r) and (P, d), got {keys.shape} and {values.shape}"
        )
    if method not in CAPACITY_METHODS:
        raise ValueError(f"method must be one of {CAPACITY_METHODS}, got {method!r}")
    scale = check_positive_float("scale", scale)
    num_pairs, r = keys.shape
    if method == "identity":
        return keys @ (keys.T @ values)  # φ(q)ᵀ S with S = Kᵀ V: r × d numbers
    if method in ("delta", "delta_3pass"):
        state = np.zeros((r, values.shape[1]))
        for p in range(1 if method == "delta" else DELTA_PASSES):
            for k, v in zip(keys, values):  # pass 1, β = 1: the read under k becomes v
                state += np.outer(k, v - state.T @ k) / (p + 1)
        return keys @ state
    if method in ("elu", "performer"):
        x = np.sqrt(scale) * keys  # exp(s q·k) = exp((√s q)·(√s k)); elu + 1 gets the same inputs
        phi = (
            elu_feature(x)
            if method == "elu"
            else feature_map(x, random_features(r, r, _FEATURE_SEED + seed))
        )
        state, norm = phi.T @ values, phi.sum(0)  # S: (r, d), z: (r,)
        return (phi @ state) / (phi @ norm)[:, None]
    scores = scale * keys @ keys.T
    if method == "window":
        window = r if window is None else check_positive_int("window", window)
        outside = np.arange(num_pairs) < num_pairs - window  # written before the window's start
        scores = np.where(outside[None, :], -np.inf, scores)
    weights = np.exp(scores - scores.max(1, keepdims=True))
    return (weights / weights.sum(1, keepdims=True)) @ values


def recall_errors(retrieved, values) -> tuple[float, float]:
    """(normalised squared error Σ|v̂ − v|² / Σ|v|², nearest-value accuracy) of a read-back.

    The accuracy counts the rows whose retrieved vector lies closest (Euclidean) to their own value
    among all P stored values; chance is 1/P.

    Chapter 5.
    """
    retrieved, values = (
        np.asarray(retrieved, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
    )
    if retrieved.shape != values.shape:
        raise ValueError(
            f"retrieved must have the shape of values {values.shape}, got {retrieved.shape}"
        )
    nmse = float(((retrieved - values) ** 2).sum() / (values**2).sum())
    dist = ((retrieved[:, None, :] - values[None, :, :]) ** 2).sum(-1)
    accuracy = float((dist.argmin(1) == np.arange(len(values))).mean())
    return nmse, accuracy


def rank_bound(values, r: int) -> float:
    """Least normalised squared error of any read-back whose P outputs span at most r dimensions.

    A state of r features reads φ(q)ᵀS (or that over a scalar normaliser): every output row lies in
    the row space of S, of rank <= r. By Eckart–Young the best such (P, d) matrix misses the values
    by their singular values beyond the r-th: Σ_{i>r} σ_i² / Σ σ_i². Zero when P <= r (or d <= r).

    Chapter 5.
    """
    check_positive_int("r", r)
    sigma2 = np.linalg.svd(np.asarray(values, dtype=np.float64), compute_uv=False) ** 2
    return float(sigma2[r:].sum() / sigma2.sum())


def capacity_sweep(
    ratios=(0.25, 0.5, 1, 2, 4, 8), r: int = 32, d: int = 64, seeds=(0, 1, 2), scale: float = 8.0
) -> list[dict]:
    """Retrieval error of every memory in :data:`CAPACITY_METHODS` against P / r, with the rank
    bound. Chapter 5.

    For each ratio and seed: P = round(ratio · r) orthogonal-as-possible unit keys
    (:func:`orthogonal_keys`) and Gaussian values (P, d); one row per method with nmse, accuracy and
    the rank bound of those values.
    """
    check_positive_int("r", r)
    check_positive_int("d", d)
    rows = []
    for ratio in ratios:
        num_pairs = max(1, round(check_positive_float("ratio", ratio) * r))
        for seed in seeds:
            keys = orthogonal_keys(num_pairs, r, seed)
            values = np.random.default_rng(
                10_000 + check_nonnegative_int("seed", seed)
            ).standard_normal((num_pairs, d))
            bound = rank_bound(values, r)
            for method in CAPACITY_METHODS:
                nmse, accuracy = recall_errors(
                    store_and_read(keys, values, method, scale=scale, seed=seed), values
                )
                rows.append(
                    {
                        "method": method,
                        "num_pairs": num_pairs,
                        "r": r,
                        "d": d,
                        "ratio": num_pairs / r,
                        "seed": seed,
                        "nmse": nmse,
                        "accuracy": accuracy,
                        "rank_bound": bound,
                        "scale": scale,
                    }
                )
    return rows
