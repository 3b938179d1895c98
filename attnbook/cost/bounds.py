"""Generalization bounds and recall-capacity formulas
(chapter 5, What efficient attention gives up).

All logarithms are natural unless a function says otherwise. A bound on the
gap between test and training 0-1 error is *vacuous* when it is >= 1, since
that gap can never exceed 1.
"""

from __future__ import annotations

import math

from attnbook.checks import check_positive_float, check_positive_int, exact_ints

__all__ = [
    "vc_bound",
    "vc_rate",
    "occam_bound",
    "pac_bayes_bound",
    "recall_state_bits",
    "max_recall_pairs",
    "FIXED_STATE",
    "state_numbers",
    "exact_recall_pairs",
    "entry_size_threshold",
]


def _check_delta(delta: float) -> float:
    delta = check_positive_float("delta", delta)
    if delta >= 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    return delta


@exact_ints
def vc_bound(d_vc: float, n: float, delta: float = 0.05) -> float:
    """VC bound on the generalization gap, with its constants (Mohri et al. 2018, Cor. 3.19).

    With probability >= 1-δ, every h in a class of VC dimension d_vc <= n satisfies
    R(h) - R̂(h) <= sqrt(2·d·ln(e·n/d) / n) + sqrt(ln(1/δ) / (2n)). Chapter 5.
    """
    d_vc, n, delta = (
        check_positive_float("d_vc", d_vc),
        check_positive_float("n", n),
        _check_delta(delta),
    )
    if d_vc > n:
        raise ValueError(
            f"d_vc must be <= n for this bound (n={n:g}), got {d_vc:g}; with d_vc > n it says "
            "nothing"
        )
    return math.sqrt(2 * d_vc * math.log(math.e * n / d_vc) / n) + math.sqrt(
        math.log(1 / delta) / (2 * n)
    )


@exact_ints
def vc_rate(d_vc: float, n: float, log_base: float = 2.0) -> float:
    """The order-of-magnitude form of the VC bound, sqrt(d_vc · log(n) / n), without constants.

    ``log_base`` picks the logarithm (2 by default, as in a bits-per-sample reading).

    Chapter 5.
    """
    d_vc, n = check_positive_float("d_vc", d_vc), check_positive_float("n", n)
    log_base = check_positive_float("log_base", log_base)
    if log_base == 1:
        raise ValueError("log_base must not be 1")
    return math.sqrt(d_vc * math.log(n) / math.log(log_base) / n)


@exact_ints
def occam_bound(bits: float, n: float, delta: float = 0.05) -> float:
    """Compression (Occam) bound: a hypothesis described
    in ``bits`` bits, chosen after seeing n samples.

    R(h) - R̂(h) <= sqrt((bits·ln 2 + ln(1/δ)) / (2n)) for a [0, 1]-bounded loss
    (Hoeffding plus a union bound with prior 2^-bits). Chapter 5.
    """
    bits, n, delta = (
        check_positive_float("bits", bits),
        check_positive_float("n", n),
        _check_delta(delta),
    )
    return math.sqrt((bits * math.log(2) + math.log(1 / delta)) / (2 * n))


@exact_ints
def pac_bayes_bound(kl: float, n: float, delta: float = 0.05) -> float:
    """PAC-Bayes bound (McAllester 1999, in Maurer's 2004 form) on the gap of a posterior Q.

    E_Q[R] - E_Q[R̂] <= sqrt((KL(Q‖P) + ln(2·sqrt(n)/δ)) / (2n)); ``kl`` in nats, >= 0.

    Chapter 5.
    """
    if isinstance(kl, bool) or not isinstance(kl, (int, float)) or not math.isfinite(kl) or kl < 0:
        raise ValueError(f"kl must be a finite number >= 0 (nats), got {kl!r}")
    n, delta = check_positive_float("n", n), _check_delta(delta)
    return math.sqrt((kl + math.log(2 * math.sqrt(n) / delta)) / (2 * n))


@exact_ints
def recall_state_bits(num_pairs: int, num_values: int) -> float:
    """Bits a fixed-size state must hold to answer a query on any of ``num_pairs`` stored keys.

    The values are independent and uniform over ``num_values`` symbols, so the state must
    determine all of them: num_pairs · log2(num_values) bits. Chapter 5.
    """
    check_positive_int("num_pairs", num_pairs)
    check_positive_int("num_values", num_values)
    return num_pairs * math.log2(num_values)


@exact_ints
def max_recall_pairs(state_numbers: int, bits_per_number: int, num_values: int) -> int:
    """Most pairs a state of ``state_numbers`` numbers
    of ``bits_per_number`` bits can recall exactly.

    floor(state_numbers · bits_per_number / log2(num_values)), from :func:`recall_state_bits`.
    Chapter 5.
    """
    check_positive_int("state_numbers", state_numbers)
    check_positive_int("bits_per_number", bits_per_number)
    check_positive_int("num_values", num_values)
    if num_values < 2:
        raise ValueError(
            f"num_values must be >= 2 (one value carries no information), got {num_values}"
        )
    return math.floor(state_numbers * bits_per_number / math.log2(num_values))


#: Mechanisms whose decoding state does not grow with the context, and the feature dimension r of
#: one head that their linear read-out φ(q)ᵀS uses (chapter 5): d_k, the Performer's random
#: features, the t + 1 Taylor features of element-wise attention (one scalar-valued kernel per
#: channel).
FIXED_STATE = (
    "linear",
    "performer",
    "retention",
    "selective_scan",
    "elementwise",
    "delta",
    "gated_delta",
    "gla",
)


def _head_dim(d_model: int, heads: int) -> int:
    check_positive_int("d_model", d_model)
    check_positive_int("heads", heads)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    return d_model // heads


def _features(method: str, d_k: int, features: int, order: int) -> int:
    if method not in FIXED_STATE:
        raise ValueError(
            f"method must be one of the fixed-state mechanisms {FIXED_STATE}, got {method!r}"
        )
    if method == "performer":
        return check_positive_int("features", features)
    if method == "elementwise":
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order must be an int >= 0, got {order!r}")
        return order + 1
    return d_k


def state_numbers(
    method: str, d_model: int, heads: int, features: int = 256, order: int = 2
) -> int:
    """Numbers in one layer's decoding state of a fixed-state mechanism, whatever the context
    length. Chapter 5.

    Per head, with d_k = d_model / heads: linear attention S (d_k × d_k) and z (d_k); the Performer
    S (r × d_k) and z (r), r = ``features``; retention, the selective scan, the delta rule, Gated
    DeltaNet and GLA S (d_k × d_k); element-wise attention A and Z, (t+1) × d_k each
    (t = ``order``). Times ``heads``.
    """
    d_k = _head_dim(d_model, heads)
    r = _features(method, d_k, features, order)
    per_head = {
        "linear": r * d_k + r,
        "performer": r * d_k + r,
        "retention": d_k * d_k,
        "selective_scan": d_k * d_k,
        "elementwise": 2 * r * d_k,
        "delta": d_k * d_k,
        "gated_delta": d_k * d_k,
        "gla": d_k * d_k,
    }[method]
    return heads * per_head


def exact_recall_pairs(
    method: str, d_model: int, heads: int, features: int = 256, order: int = 2
) -> int:
    """Most pairs one head's linear read-out can return exactly: its feature dimension r. Chapter 5.

    The read-out φ(q)ᵀS is linear in r features, so P > r values (in general position) cannot all be
    returned without interference: r = d_k (linear, retention, selective scan, the delta rules,
    GLA), ``features`` (Performer), ``order`` + 1 (element-wise attention, per channel).
    """
    return _features(method, _head_dim(d_model, heads), features, order)


@exact_ints
def entry_size_threshold(n: int) -> float:
    """sqrt(ln n): the entry size B at which approximate attention turns hard (Alman & Song 2023).

    With head dimension d = O(log n) and entries of Q, K, V bounded by B: B = o(sqrt(log n)) allows
    an n^{1+o(1)} algorithm with 1/poly(n) error; B = Θ(sqrt(log n)) rules out n^{2-Ω(1)} under
    SETH. Constant factors are not fixed by the theorem; this returns the scale sqrt(ln n).

    Chapter 5.
    """
    check_positive_int("n", n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    return math.sqrt(math.log(n))
