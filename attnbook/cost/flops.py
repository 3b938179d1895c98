"""FLOP counts of a Transformer's forward pass (chapter 2, The cost of a Transformer).

Convention: a multiply-add counts as 2 FLOPs, so a (m×k)·(k×n) matrix product
costs 2·m·k·n. Biases, softmax, LayerNorm, activations and residual additions
are *not* counted here (``softmax_flops`` gives the softmax separately); this
matches what ``torch.utils.flop_counter.FlopCounterMode`` counts (matrix
products only). Every function takes ``batch=1`` as a keyword.
"""
from __future__ import annotations

from ..checks import check_positive_int

__all__ = [
    "matmul_flops",
    "qkv_flops",
    "scores_flops",
    "softmax_flops",
    "av_flops",
    "out_proj_flops",
    "mha_flops",
    "ffn_flops",
    "layer_flops",
    "model_flops",
    "lm_head_flops",
    "decode_token_flops",
    "crossover_length",
    "rnn_flops",
]


def _check(**values) -> None:
    for name, value in values.items():
        check_positive_int(name, value)


def matmul_flops(m: int, k: int, n: int, batch: int = 1) -> int:
    """2·m·k·n: one (m×k)·(k×n) product, multiply-add = 2. Chapter 2."""
    _check(m=m, k=k, n=n, batch=batch)
    return 2 * m * k * n * batch


def qkv_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Q, K, V projections of n tokens: 3 · 2·n·d² = 6nd². Chapter 2."""
    _check(n=n, d_model=d_model, batch=batch)
    return 3 * matmul_flops(n, d_model, d_model, batch)


def scores_flops(n: int, d_model: int, heads: int = 1, *, batch: int = 1) -> int:
    """QKᵀ for all heads: H · 2·n²·d_k = 2n²d (independent of H). Chapter 2."""
    _check(n=n, d_model=d_model, heads=heads, batch=batch)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    return heads * matmul_flops(n, d_model // heads, n, batch)


def softmax_flops(n: int, heads: int = 1, *, batch: int = 1) -> int:
    """Softmax over H·n² scores, counted as ~5 operations per score (max, subtract, exp, sum, divide).

    Not counted by FlopCounterMode, and O(n²H) against the O(n²d) matrix products. Chapter 2.
    """
    _check(n=n, heads=heads, batch=batch)
    return 5 * heads * n * n * batch


def av_flops(n: int, d_model: int, heads: int = 1, *, batch: int = 1) -> int:
    """Weights · V for all heads: 2n²d. Chapter 2."""
    return scores_flops(n, d_model, heads, batch=batch)


def out_proj_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Output projection: 2nd². Chapter 2."""
    _check(n=n, d_model=d_model, batch=batch)
    return matmul_flops(n, d_model, d_model, batch)


def mha_flops(n: int, d_model: int, heads: int, *, batch: int = 1) -> int:
    """Forward FLOPs of multi-head self-attention as ``nn.MultiheadAttention`` computes it.

    Q/K/V projections + scores + weighted sum of V + output projection
    = 8nd² + 4n²d per sequence (biases and softmax excluded). Chapter 2.
    """
    return (qkv_flops(n, d_model, batch=batch) + scores_flops(n, d_model, heads, batch=batch)
            + av_flops(n, d_model, heads, batch=batch) + out_proj_flops(n, d_model, batch=batch))


def ffn_flops(n: int, d_model: int, d_ff: int, *, batch: int = 1) -> int:
    """Two-layer FFN d -> d_ff -> d: 4·n·d·d_ff (= 16nd² for d_ff = 4d). Chapter 2."""
    _check(n=n, d_model=d_model, d_ff=d_ff, batch=batch)
    return matmul_flops(n, d_model, d_ff, batch) + matmul_flops(n, d_ff, d_model, batch)


def layer_flops(n: int, d_model: int, heads: int, d_ff: int, *, batch: int = 1) -> int:
    """One Transformer layer: attention + FFN = 8nd² + 4n²d + 4nd·d_ff. Chapter 2."""
    return mha_flops(n, d_model, heads, batch=batch) + ffn_flops(n, d_model, d_ff, batch=batch)


def lm_head_flops(n: int, d_model: int, vocab_size: int, *, batch: int = 1) -> int:
    """Logits for n positions: 2·n·d·|V|. Chapter 2."""
    _check(n=n, d_model=d_model, vocab_size=vocab_size, batch=batch)
    return matmul_flops(n, d_model, vocab_size, batch)


def model_flops(n: int, d_model: int, heads: int, d_ff: int, layers: int, vocab_size: int | None = None,
                *, batch: int = 1) -> int:
    """Forward FLOPs of L layers (plus the LM head when ``vocab_size`` is given). Chapter 2."""
    _check(layers=layers)
    total = layers * layer_flops(n, d_model, heads, d_ff, batch=batch)
    if vocab_size is not None:
        total += lm_head_flops(n, d_model, vocab_size, batch=batch)
    return total


def decode_token_flops(context: int, d_model: int, heads: int, d_ff: int, layers: int,
                       vocab_size: int | None = None, *, batch: int = 1) -> int:
    """FLOPs to generate one token with a KV cache holding ``context`` earlier tokens.

    Per layer: projections and FFN for one token (8d² + 4d·d_ff) plus attention of
    one query against context + 1 keys (4·(context+1)·d). Chapter 2.
    """
    _check(context=context, d_model=d_model, heads=heads, layers=layers)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    n_keys = context + 1
    per_layer = (qkv_flops(1, d_model, batch=batch) + out_proj_flops(1, d_model, batch=batch)
                 + ffn_flops(1, d_model, d_ff, batch=batch)
                 + heads * (matmul_flops(1, d_model // heads, n_keys, batch) + matmul_flops(1, n_keys, d_model // heads, batch)))
    total = layers * per_layer
    if vocab_size is not None:
        total += lm_head_flops(1, d_model, vocab_size, batch=batch)
    return total


def crossover_length(d_model: int, d_ff: int | None = None) -> float:
    """Length n at which the n² terms of a layer equal its n-linear terms.

    Attention alone (d_ff=None): 4n²d = 8nd² at n = 2d. A whole layer: 4n²d = 8nd² + 4nd·d_ff,
    n = 2d + d_ff (= 6d for d_ff = 4d). Chapter 2.
    """
    _check(d_model=d_model)
    return 2.0 * d_model + (0 if d_ff is None else check_positive_int("d_ff", d_ff))


def rnn_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Elman RNN layer over n tokens: input and recurrent products, 2·2·n·d² = 4nd². Chapter 1."""
    _check(n=n, d_model=d_model, batch=batch)
    return 2 * matmul_flops(n, d_model, d_model, batch)
