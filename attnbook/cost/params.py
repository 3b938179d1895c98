"""Parameter counts (chapters 3, 6 and 8): one function per building block, checked against
``numel()`` of the real modules in the tests.

A block (layer) of :class:`attnbook.models.gpt.GPT` is pre-norm: LayerNorm, multi-head attention
(fused QKV d→3d plus output projection d→d), LayerNorm, FFN d→d_ff→d. With d_ff = 4d and no biases
a block holds 12d², the usual 12·L·d² count; every lower-order term is counted here exactly.
"""

from __future__ import annotations

import math

from attnbook.checks import (
    check_bool,
    check_nonnegative_int,
    check_positive_int,
    check_sizes,
    exact_ints,
)

__all__ = [
    "attention_params",
    "ffn_params",
    "layer_params",
    "gpt_params",
    "moe_params",
    "moe_active_params",
    "generative_params",
    "width_for_params",
]


@exact_ints
def attention_params(d_model: int, *, bias: bool = True) -> int:
    """Multi-head self-attention (fused QKV + output projection): 4d² (+ 4d biases).

    Chapters 3 and 8.
    """
    (d,) = check_sizes(d_model=d_model)
    return 4 * d * d + (4 * d if check_bool("bias", bias) else 0)


@exact_ints
def ffn_params(d_model: int, d_ff: int, *, bias: bool = True) -> int:
    """Two-layer FFN d -> d_ff -> d: 2·d·d_ff (+ d_ff + d biases). Chapters 3 and 6."""
    d, f = check_sizes(d_model=d_model, d_ff=d_ff)
    return 2 * d * f + ((f + d) if check_bool("bias", bias) else 0)


@exact_ints
def layer_params(d_model: int, d_ff: int | None = None, *, bias: bool = True) -> int:
    """One pre-norm Transformer layer: attention 4d² +
    FFN 2·d·d_ff, biases, two LayerNorms (2d or d each).

    Matches ``nn.TransformerEncoderLayer`` and :class:`attnbook.models.gpt.Block`. Chapter 3.
    """
    (d,) = check_sizes(d_model=d_model)
    d_ff = 4 * d if d_ff is None else d_ff
    norms = 2 * (2 * d if check_bool("bias", bias) else d)
    return attention_params(d, bias=bias) + ffn_params(d, d_ff, bias=bias) + norms


@exact_ints
def gpt_params(
    layers: int,
    d_model: int,
    vocab_size: int,
    block_size: int = 0,
    d_ff: int | None = None,
    *,
    bias: bool = True,
    tied: bool = True,
    short_conv: int = 0,
) -> int:
    """Exact parameters of a GPT: L layers, token (and, if ``block_size``,
    learned position) embeddings, a final LayerNorm, and an LM head tied to
    the token embedding unless ``tied=False``; ``short_conv`` adds each
    layer's depthwise convolution of that kernel size (k·d weights, d biases).

    P ≈ 12Ld² + |V|d for d_ff = 4d; this adds every lower-order term. Chapters 3 and 6.
    """
    layers, d, vocab_size = check_sizes(layers=layers, d_model=d_model, vocab_size=vocab_size)
    block_size = check_nonnegative_int("block_size", block_size)
    short_conv = check_nonnegative_int("short_conv", short_conv)
    conv = short_conv * d + (d if bias else 0) if short_conv else 0
    total = layers * (layer_params(d, d_ff, bias=bias) + conv) + (vocab_size + block_size) * d
    total += 2 * d if bias else d
    if not check_bool("tied", tied):
        total += vocab_size * d
    return total


@exact_ints
def moe_params(d_model: int, d_ff: int, n_experts: int, *, bias: bool = True) -> int:
    """All parameters of an MoE layer: router d·E plus E experts of width d_ff. Chapter 6."""
    check_positive_int("n_experts", n_experts)
    return d_model * n_experts + n_experts * ffn_params(d_model, d_ff, bias=bias)


@exact_ints
def moe_active_params(d_model: int, d_ff: int, n_experts: int, k: int, *, bias: bool = True) -> int:
    """Parameters one token touches with top-k routing: router + k experts. Chapter 6."""
    check_positive_int("k", k)
    if k > n_experts:
        raise ValueError(f"k must be <= n_experts ({n_experts}), got {k}")
    return d_model * n_experts + k * ffn_params(d_model, d_ff, bias=bias)


@exact_ints
def generative_params(
    d_model: int, hidden: int | None = None, *, avg: bool = False, bias: bool = True
) -> int:
    """Parameters of the generative layer: k·d·h + h·d (+ h + d biases), k = 3 with the average.

    Chapter 8.
    """
    (d,) = check_sizes(d_model=d_model)
    h = d if hidden is None else check_positive_int("hidden", hidden)
    k = 3 if check_bool("avg", avg) else 2
    return k * d * h + h * d + ((h + d) if check_bool("bias", bias) else 0)


@exact_ints
def width_for_params(n_params: int, layers: int, multiple: int = 8) -> int:
    """Width d, a multiple of ``multiple``, whose L layers hold closest to ``n_params`` parameters
    (12·L·d² + 13·L·d with biases and d_ff = 4d). Chapter 6."""
    n_params, layers, multiple = check_sizes(n_params=n_params, layers=layers, multiple=multiple)
    d = (-13 + math.sqrt(169 + 48 * n_params / layers)) / 24
    candidates = {
        max(multiple, multiple * math.floor(d / multiple)),
        multiple * math.ceil(d / multiple),
    }
    return min(candidates, key=lambda w: abs(layers * layer_params(w) - n_params))
