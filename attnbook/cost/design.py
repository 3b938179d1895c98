"""Parameters and FLOPs of design choices (chapter 6, Designing efficient architectures).

Mixture-of-experts layers, depth against width at a fixed parameter count, and the
published constants of the two compute-optimal scaling laws. Convention: a
multiply-add is 2 FLOPs; matrix products only (what ``FlopCounterMode`` counts).
"""
from __future__ import annotations

import math

from ..checks import check_positive_float, check_positive_int
from .flops import ffn_flops, matmul_flops

__all__ = [
    "ffn_params",
    "moe_params",
    "moe_active_params",
    "moe_flops",
    "block_params",
    "gpt_params",
    "width_for_params",
    "training_flops",
    "PF_DAY",
    "CHINCHILLA_TOKENS_PER_PARAM",
    "CHINCHILLA_FIT",
    "KAPLAN_FIT",
]

PF_DAY = 1e15 * 86400  # one petaflop/s-day, in FLOPs (Kaplan et al.'s unit of compute)
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: about 20 training tokens per parameter
# Hoffmann et al. 2022, eq. (10) (Approach 3): L(N, D) = E + A / N^alpha + B / D^beta.
CHINCHILLA_FIT = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Kaplan et al. 2020, Table 6 / Fig. 14: N_opt = N_e (C/PF-day)^p_N (non-embedding), D_opt = D_e (C/PF-day)^p_D.
KAPLAN_FIT = {"N_e": 1.3e9, "p_N": 0.73, "D_e": 2e10, "p_D": 0.27}


def ffn_params(d_model: int, d_ff: int, *, bias: bool = True) -> int:
    """Two-layer FFN d -> d_ff -> d: 2·d·d_ff (+ d_ff + d biases). Chapter 6."""
    check_positive_int("d_model", d_model)
    check_positive_int("d_ff", d_ff)
    return 2 * d_model * d_ff + ((d_ff + d_model) if bias else 0)


def moe_params(d_model: int, d_ff: int, n_experts: int, *, bias: bool = True) -> int:
    """All parameters of an MoE layer: router d·E plus E experts of width d_ff. Chapter 6."""
    check_positive_int("n_experts", n_experts)
    return d_model * n_experts + n_experts * ffn_params(d_model, d_ff, bias=bias)


def moe_active_params(d_model: int, d_ff: int, n_experts: int, k: int, *, bias: bool = True) -> int:
    """Parameters one token touches with top-k routing: router + k experts. Chapter 6."""
    check_positive_int("k", k)
    if k > n_experts:
        raise ValueError(f"k must be <= n_experts ({n_experts}), got {k}")
    return d_model * n_experts + k * ffn_params(d_model, d_ff, bias=bias)


def moe_flops(n: int, d_model: int, d_ff: int, n_experts: int, k: int, *, batch: int = 1) -> int:
    """Forward FLOPs of an MoE layer on n tokens when no token is dropped.

    Router 2·n·d·E plus k expert FFNs per token, k·4·n·d·d_ff: about k times one dense FFN of
    width d_ff, whatever E is. Only when each expert has width d_ff/E is it (k/E)× the dense FFN.
    Chapter 6.
    """
    check_positive_int("k", k)
    if k > n_experts:
        raise ValueError(f"k must be <= n_experts ({n_experts}), got {k}")
    return matmul_flops(n, d_model, n_experts, batch) + k * ffn_flops(n, d_model, d_ff, batch=batch)


def block_params(d_model: int, d_ff: int | None = None, *, bias: bool = True) -> int:
    """One pre-norm GPT block: attention 4d² + FFN 2·d·d_ff (+ biases and 2 LayerNorms).

    With d_ff = 4d and no biases this is 12d², the usual 12·L·d² count. Chapter 6.
    """
    check_positive_int("d_model", d_model)
    d_ff = 4 * d_model if d_ff is None else d_ff
    attn = 4 * d_model * d_model + (4 * d_model if bias else 0)
    norms = 2 * d_model * (2 if bias else 1)
    return attn + ffn_params(d_model, d_ff, bias=bias) + norms


def gpt_params(layers: int, d_model: int, vocab_size: int, block_size: int, d_ff: int | None = None,
               *, bias: bool = True) -> int:
    """Parameters of :class:`attnbook.gpt.GPT`: embeddings |V|·d + n·d, L blocks, final LayerNorm
    (the head is tied to the token embedding, so not counted twice). Chapter 6."""
    check_positive_int("layers", layers)
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("block_size", block_size)
    embed = (vocab_size + block_size) * d_model
    return embed + layers * block_params(d_model, d_ff, bias=bias) + d_model * (2 if bias else 1)


def width_for_params(n_params: int, layers: int, multiple: int = 8) -> int:
    """Width d, a multiple of ``multiple``, whose L blocks hold closest to ``n_params`` parameters
    (12·L·d² + 13·L·d with biases and d_ff = 4d). Chapter 6."""
    check_positive_int("n_params", n_params)
    check_positive_int("layers", layers)
    check_positive_int("multiple", multiple)
    d = (-13 + math.sqrt(169 + 48 * n_params / layers)) / 24
    candidates = {max(multiple, multiple * math.floor(d / multiple)), multiple * math.ceil(d / multiple)}
    return min(candidates, key=lambda w: abs(layers * block_params(w) - n_params))


def training_flops(n_params: float, tokens: float) -> float:
    """C ≈ 6·N·D: forward 2N and backward 4N FLOPs per token (attention's n² term left out). Chapter 6."""
    return 6.0 * check_positive_float("n_params", n_params) * check_positive_float("tokens", tokens)
