"""Cost of serving a decoder (chapter 10, Attention at inference): a decode step on the roofline,
KV-cache formats, paged-cache waste and speculative decoding.

FLOPs count matrix products only (2 per multiply-add), as everywhere in the book; bytes are the
compulsory traffic of one decode step: every weight read once, the whole KV cache read once.
"""

from __future__ import annotations

import math

from attnbook.checks import check_positive_int, check_sizes

__all__ = [
    "decode_flops",
    "decode_bytes",
    "decode_intensity",
    "critical_batch",
    "mla_gqa_groups",
    "contiguous_waste",
    "paged_waste",
    "expected_tokens_per_step",
    "speculative_speedup",
]


def _fraction(name: str, value, *, closed: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(f"{name} must lie in [0, 1{']' if closed else ')'}, got {value}")
    return float(value)


def decode_flops(batch: int, context: int, *, matmul_params: int, layers: int, d_model: int) -> int:
    """FLOPs of one decode step: 2·B·P (every weight once per sequence) + 4·B·L·t·d. Chapter 10.

    ``matmul_params`` P is the number of weights that multiply activations (embedding lookups do
    not count); ``context`` t is the number of keys each new query attends to, the new one included.
    The attention term is q·Kᵀ and p·V over t keys in every layer: 2·t·d each.
    """
    check_sizes(
        batch=batch, context=context, matmul_params=matmul_params, layers=layers, d_model=d_model
    )
    return 2 * batch * matmul_params + 4 * batch * layers * context * d_model


def decode_bytes(batch: int, context: int, *, weight_bytes: int, kv_bytes_per_token: int) -> int:
    """Compulsory bytes of one decode step: the weights once, plus B·t cached tokens. Chapter 10.

    ``kv_bytes_per_token`` is one sequence's cache per token over all layers
    (:func:`attnbook.cost.kv_cache_bytes` with ``tokens=1``).
    """
    check_sizes(
        batch=batch,
        context=context,
        weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_bytes_per_token,
    )
    return weight_bytes + batch * context * kv_bytes_per_token


def decode_intensity(batch: int, context: int, **model) -> float:
    """Arithmetic intensity (FLOP/byte) of one decode step. Chapter 10.

    ``model``: ``matmul_params``, ``layers``, ``d_model``, ``weight_bytes``, ``kv_bytes_per_token``.
    """
    flops = decode_flops(
        batch,
        context,
        matmul_params=model["matmul_params"],
        layers=model["layers"],
        d_model=model["d_model"],
    )
    nbytes = decode_bytes(
        batch,
        context,
        weight_bytes=model["weight_bytes"],
        kv_bytes_per_token=model["kv_bytes_per_token"],
    )
    return flops / nbytes


def critical_batch(ridge: float, context: int, **model) -> float:
    """The batch B at which a decode step's intensity reaches ``ridge`` (FLOP/byte). Chapter 10.

    Solves (2·B·P + 4·B·L·t·d) = ridge·(W + B·t·c): B = ridge·W / (2P + 4Ltd − ridge·t·c).
    ``inf`` when the cache reads grow faster with B than the FLOPs do (the step never turns
    compute-bound, however large the batch).
    """
    if not isinstance(ridge, (int, float)) or isinstance(ridge, bool) or not ridge > 0:
        raise ValueError(f"ridge must be a positive number (FLOP/byte), got {ridge!r}")
    check_positive_int("context", context)
    per_sequence_flops = (
        2 * model["matmul_params"] + 4 * model["layers"] * context * model["d_model"]
    )
    denominator = per_sequence_flops - ridge * context * model["kv_bytes_per_token"]
    return math.inf if denominator <= 0 else ridge * model["weight_bytes"] / denominator


def mla_gqa_groups(latent_dim: int, rope_dim: int, head_dim: int) -> float:
    """GQA key/value groups whose cache equals MLA's: (d_c + d_h^R) / (2·d_h). Chapter 10.

    GQA with G groups caches 2·G·d_h numbers per token and layer; MLA caches d_c + d_h^R.
    DeepSeek-V2 (d_c = 4·d_h, d_h^R = d_h/2) gives 2.25.
    """
    check_sizes(latent_dim=latent_dim, head_dim=head_dim)
    if isinstance(rope_dim, bool) or not isinstance(rope_dim, int) or rope_dim < 0:
        raise ValueError(f"rope_dim must be an int >= 0, got {rope_dim!r}")
    return (latent_dim + rope_dim) / (2 * head_dim)


def _lengths(lengths) -> list[int]:
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must hold at least one request length")
    for n in lengths:
        check_positive_int("lengths[i]", n)
    return lengths


def contiguous_waste(lengths, max_len: int) -> float:
    """Fraction of reserved KV memory not holding a token when each request reserves ``max_len``
    slots: 1 − Σ nᵢ / (R·max_len). Chapter 10."""
    lengths = _lengths(lengths)
    check_positive_int("max_len", max_len)
    if max(lengths) > max_len:
        raise ValueError(f"a request of length {max(lengths)} exceeds max_len={max_len}")
    return 1 - sum(lengths) / (len(lengths) * max_len)


def paged_waste(lengths, block_size: int) -> float:
    """Fraction of reserved KV memory not holding a token when requests take whole pages of
    ``block_size`` slots: 1 − Σ nᵢ / Σ ⌈nᵢ/b⌉·b. Chapter 10."""
    lengths = _lengths(lengths)
    check_positive_int("block_size", block_size)
    reserved = sum(-(-n // block_size) * block_size for n in lengths)
    return 1 - sum(lengths) / reserved


def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """Tokens emitted per target call by speculative decoding: (1 − α^{γ+1}) / (1 − α). Chapter 10.

    Each of the γ drafted tokens is accepted with probability α, independently; the step stops at
    the first rejection and always adds one token of the target's own (Leviathan et al., 2023).
    """
    alpha = _fraction("alpha", alpha)
    check_positive_int("gamma", gamma)
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def speculative_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Predicted wall-clock speed-up over target-only decoding: E[tokens] / (γ·c + 1). Chapter 10.

    ``cost_ratio`` c is the time of one draft call over the time of one target call.
    """
    if isinstance(cost_ratio, bool) or not isinstance(cost_ratio, (int, float)) or cost_ratio < 0:
        raise ValueError(f"cost_ratio must be a number >= 0, got {cost_ratio!r}")
    return expected_tokens_per_step(alpha, gamma) / (gamma * cost_ratio + 1)
