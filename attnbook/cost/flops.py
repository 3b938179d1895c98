"""FLOP counts (chapters 2, 4, 6 and 8): the Transformer term by term, sparse and tiled
attention, mixture of experts, training compute, the generative function.

Convention: a multiply-add counts as 2 FLOPs, so a (m×k)·(k×n) matrix product
costs 2·m·k·n. Biases, softmax, LayerNorm, activations and residual additions
are *not* counted here (``softmax_flops`` gives the softmax separately); this
matches what ``torch.utils.flop_counter.FlopCounterMode`` counts (matrix
products only; ``attnbook.measure.count_flops`` runs it). Sparse patterns: QKᵀ and
PV each cost 2·d_k per allowed pair. Every function takes ``batch=1`` as a keyword.
Integer arguments are computed as Python integers, exact at any size.
"""

from __future__ import annotations

import math

import numpy as np

from attnbook.checks import check_positive_float, check_positive_int, check_sizes, exact_ints

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
    "lm_head_flops",
    "model_flops",
    "decode_token_flops",
    "crossover_length",
    "rnn_flops",
    "sliding_window_nnz",
    "strided_nnz",
    "longformer_nnz",
    "block_sparse_nnz",
    "sparse_flops",
    "sparse_flops_total",
    "sparse_flops_per_token",
    "sliding_window_tiles",
    "blockwise_flops",
    "flash_flops",
    "moe_flops",
    "PF_DAY",
    "training_flops",
    "generative_flops",
    "running_mean_flops",
    "delta_chunked_flops",
    "gla_chunked_flops",
]


@exact_ints
def matmul_flops(m: int, k: int, n: int, batch: int = 1) -> int:
    """2·m·k·n: one (m×k)·(k×n) product, multiply-add = 2. Chapter 2."""
    check_sizes(m=m, k=k, n=n, batch=batch)
    return 2 * m * k * n * batch


@exact_ints
def qkv_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Q, K, V projections of n tokens: 3 · 2·n·d² = 6nd². Chapter 2."""
    check_sizes(n=n, d_model=d_model, batch=batch)
    return 3 * matmul_flops(n, d_model, d_model, batch)


@exact_ints
def scores_flops(n: int, d_model: int, heads: int = 1, *, batch: int = 1) -> int:
    """QKᵀ for all heads: H · 2·n²·d_k = 2n²d (independent of H). Chapter 2."""
    check_sizes(n=n, d_model=d_model, heads=heads, batch=batch)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    return heads * matmul_flops(n, d_model // heads, n, batch)


@exact_ints
def softmax_flops(n: int, heads: int = 1, *, batch: int = 1) -> int:
    """Softmax over H·n² scores, counted as ~5 operations
    per score (max, subtract, exp, sum, divide).

    Not counted by FlopCounterMode, and O(n²H) against the O(n²d) matrix products. Chapter 2.
    """
    check_sizes(n=n, heads=heads, batch=batch)
    return 5 * heads * n * n * batch


@exact_ints
def av_flops(n: int, d_model: int, heads: int = 1, *, batch: int = 1) -> int:
    """Weights · V for all heads: 2n²d. Chapter 2."""
    return scores_flops(n, d_model, heads, batch=batch)


@exact_ints
def out_proj_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Output projection: 2nd². Chapter 2."""
    check_sizes(n=n, d_model=d_model, batch=batch)
    return matmul_flops(n, d_model, d_model, batch)


@exact_ints
def mha_flops(n: int, d_model: int, heads: int, *, batch: int = 1) -> int:
    """Forward FLOPs of multi-head self-attention as ``nn.MultiheadAttention`` computes it.

    Q/K/V projections + scores + weighted sum of V + output projection
    = 8nd² + 4n²d per sequence (biases and softmax excluded). Chapter 2.
    """
    return (
        qkv_flops(n, d_model, batch=batch)
        + scores_flops(n, d_model, heads, batch=batch)
        + av_flops(n, d_model, heads, batch=batch)
        + out_proj_flops(n, d_model, batch=batch)
    )


@exact_ints
def ffn_flops(n: int, d_model: int, d_ff: int, *, batch: int = 1) -> int:
    """Two-layer FFN d -> d_ff -> d: 4·n·d·d_ff (= 16nd² for d_ff = 4d). Chapter 2."""
    check_sizes(n=n, d_model=d_model, d_ff=d_ff, batch=batch)
    return matmul_flops(n, d_model, d_ff, batch) + matmul_flops(n, d_ff, d_model, batch)


@exact_ints
def layer_flops(n: int, d_model: int, heads: int, d_ff: int, *, batch: int = 1) -> int:
    """One Transformer layer: attention + FFN = 8nd² + 4n²d + 4nd·d_ff. Chapter 2."""
    return mha_flops(n, d_model, heads, batch=batch) + ffn_flops(n, d_model, d_ff, batch=batch)


@exact_ints
def lm_head_flops(n: int, d_model: int, vocab_size: int, *, batch: int = 1) -> int:
    """Logits for n positions: 2·n·d·|V|. Chapter 2."""
    check_sizes(n=n, d_model=d_model, vocab_size=vocab_size, batch=batch)
    return matmul_flops(n, d_model, vocab_size, batch)


@exact_ints
def model_flops(
    n: int,
    d_model: int,
    heads: int,
    d_ff: int,
    layers: int,
    vocab_size: int | None = None,
    *,
    batch: int = 1,
) -> int:
    """Forward FLOPs of L layers (plus the LM head when ``vocab_size`` is given). Chapter 2."""
    check_sizes(layers=layers)
    total = layers * layer_flops(n, d_model, heads, d_ff, batch=batch)
    if vocab_size is not None:
        total += lm_head_flops(n, d_model, vocab_size, batch=batch)
    return total


@exact_ints
def decode_token_flops(
    context: int,
    d_model: int,
    heads: int,
    d_ff: int,
    layers: int,
    vocab_size: int | None = None,
    *,
    batch: int = 1,
) -> int:
    """FLOPs to generate one token with a KV cache holding ``context`` earlier tokens.

    Per layer: projections and FFN for one token (8d² + 4d·d_ff) plus attention of
    one query against context + 1 keys (4·(context+1)·d). Chapter 2.
    """
    check_sizes(context=context, d_model=d_model, heads=heads, layers=layers)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    n_keys = context + 1
    per_layer = (
        qkv_flops(1, d_model, batch=batch)
        + out_proj_flops(1, d_model, batch=batch)
        + ffn_flops(1, d_model, d_ff, batch=batch)
        + heads
        * (
            matmul_flops(1, d_model // heads, n_keys, batch)
            + matmul_flops(1, n_keys, d_model // heads, batch)
        )
    )
    total = layers * per_layer
    if vocab_size is not None:
        total += lm_head_flops(1, d_model, vocab_size, batch=batch)
    return total


@exact_ints
def crossover_length(d_model: int, d_ff: int | None = None) -> float:
    """Length n at which the n² terms of a layer equal its n-linear terms.

    Attention alone (d_ff=None): 4n²d = 8nd² at n = 2d. A whole layer: 4n²d = 8nd² + 4nd·d_ff,
    n = 2d + d_ff (= 6d for d_ff = 4d). Chapter 2.
    """
    check_sizes(d_model=d_model)
    return 2.0 * d_model + (0 if d_ff is None else check_positive_int("d_ff", d_ff))


@exact_ints
def rnn_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Elman RNN layer over n tokens: input and recurrent products, 2·2·n·d² = 4nd². Chapter 1."""
    check_sizes(n=n, d_model=d_model, batch=batch)
    return 2 * matmul_flops(n, d_model, d_model, batch)


def _band(n: int, w: int) -> int:
    """Pairs with 0 <= i - j < w among n positions: n·w - w(w-1)/2 once w <= n."""
    w = min(w, n)
    return n * w - w * (w - 1) // 2


@exact_ints
def sliding_window_nnz(n: int, window: int, causal: bool = False) -> int:
    """Allowed pairs of a sliding window: causal n·w - w(w-1)/2; two-sided 2·that - n. Chapter 4."""
    n, window = check_sizes(n=n, window=window)
    return _band(n, window) if causal else 2 * _band(n, window) - n


@exact_ints
def strided_nnz(n: int, stride: int, causal: bool = False) -> int:
    """Allowed pairs of the strided pattern: the local band plus the pairs with i - j = k·s, k >= 1.

    Chapter 4.
    """
    n, s = check_sizes(n=n, stride=stride)
    q, r = divmod(n, s)
    far = s * q * (q - 1) // 2 + q * r  # sum over i of floor(i / s): the keys i - s, i - 2s, ...
    return sliding_window_nnz(n, s, causal) + (far if causal else 2 * far)


@exact_ints
def longformer_nnz(n: int, window: int, global_tokens, causal: bool = False) -> int:
    """Allowed pairs of Longformer: the band plus global rows and columns, overlaps counted once.

    Chapter 4.
    """
    n, w = check_sizes(n=n, window=window)
    g = sorted({int(t) for t in global_tokens})
    if any(not 0 <= t < n for t in g):
        raise ValueError(f"global_tokens must lie in [0, {n}), got {g}")
    total = sliding_window_nnz(n, w, causal)
    for t in g:
        if (
            causal
        ):  # row t: keys 0..t; column t: queries t..n-1; the band already holds min(., w) of each
            total += (t + 1 - min(t + 1, w)) + (n - t - min(n - t, w))
        # row and column t have n entries, min(t, w-1) + min(n-1-t, w-1) + 1 of them in the band
        else:
            total += 2 * (n - (min(t, w - 1) + min(n - 1 - t, w - 1) + 1))
    far = sum(1 for a in g for b in g if abs(a - b) >= w and (not causal or a > b))
    return total - far  # (global row, global column) pairs outside the band were counted twice


@exact_ints
def block_sparse_nnz(n: int, block_size: int, layout, causal: bool = False) -> int:
    """Allowed pairs of a block layout: the sizes of its blocks (diagonal ones triangular when
    causal). Chapter 4."""
    n, b = check_sizes(n=n, block_size=block_size)
    layout = np.asarray(layout, dtype=bool)
    sizes = np.minimum(b, n - b * np.arange(math.ceil(n / b)))
    if layout.shape != (sizes.size, sizes.size):
        raise ValueError(f"layout must have shape ({sizes.size}, {sizes.size}), got {layout.shape}")
    area = np.outer(sizes, sizes)
    if causal:
        area = np.tril(area, -1) + np.diag(sizes * (sizes + 1) // 2)
    return int((area * layout).sum())


@exact_ints
def sparse_flops(nnz: int, d_k: int, *, heads: int = 1, batch: int = 1) -> int:
    """FLOPs of QKᵀ and PV restricted to ``nnz`` allowed pairs: 4·nnz·d_k per head. Chapter 4."""
    nnz, d_k, heads, batch = check_sizes(nnz=nnz, d_k=d_k, heads=heads, batch=batch)
    return 4 * nnz * d_k * heads * batch


@exact_ints
def sparse_flops_total(n: int, s: int, d_k: int) -> int:
    """A sequence whose n queries each see s keys: 4·n·s·d_k FLOPs, O(s·n·d), linear in n.

    Chapter 4.
    """
    n, s, d_k = check_sizes(n=n, s=s, d_k=d_k)
    return 4 * n * s * d_k


@exact_ints
def sparse_flops_per_token(s: int, d_k: int) -> int:
    """One query seeing s keys: 4·s·d_k FLOPs, O(s·d), the part that is independent of n.

    Chapter 4.
    """
    s, d_k = check_sizes(s=s, d_k=d_k)
    return 4 * s * d_k


@exact_ints
def sliding_window_tiles(n: int, window: int, block_size: int, causal: bool = False) -> int:
    """Tiles a block-wise sliding window touches: a band of c = 1 + ceil((w-1)/b) tiles on
    ceil(n/b). Chapter 4."""
    n, w, b = check_sizes(n=n, window=window, block_size=block_size)
    return sliding_window_nnz(math.ceil(n / b), 1 + math.ceil((w - 1) / b), causal)


@exact_ints
def blockwise_flops(
    tiles: int, block_size: int, d_k: int, *, heads: int = 1, batch: int = 1
) -> int:
    """FLOPs a block-wise kernel spends on ``tiles`` full b×b tiles: 4·tiles·b²·d_k per head.

    Chapter 4.
    """
    tiles, b, d_k, heads, batch = check_sizes(
        tiles=tiles, block_size=block_size, d_k=d_k, heads=heads, batch=batch
    )
    return 4 * tiles * b * b * d_k * heads * batch


@exact_ints
def flash_flops(
    n: int, d_k: int, block_size: int, causal: bool = False, *, heads: int = 1, batch: int = 1
) -> int:
    """Matrix-product FLOPs of the torch FlashAttention loop (``mechanisms.flash.flash_attention``):
    4n²d_k;
    causal, query tile [r0, r1) meets keys [0, r1) only: Σ_tiles 4·(r1 − r0)·r1·d_k. Chapter 4."""
    n, d_k, b, heads, batch = check_sizes(
        n=n, d_k=d_k, block_size=block_size, heads=heads, batch=batch
    )
    if not causal:
        return 4 * n * n * d_k * heads * batch
    return (
        sum(4 * (min(r0 + b, n) - r0) * min(r0 + b, n) * d_k for r0 in range(0, n, b))
        * heads
        * batch
    )


@exact_ints
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


PF_DAY = 1e15 * 86400  # one petaflop/s-day, in FLOPs (Kaplan et al.'s unit of compute)


@exact_ints
def training_flops(n_params: float, tokens: float) -> float:
    """C ≈ 6·N·D: forward 2N and backward 4N FLOPs per token (attention's n² term left out).

    Chapter 6.
    """
    return 6.0 * check_positive_float("n_params", n_params) * check_positive_float("tokens", tokens)


def _hidden(d_model: int, hidden: int | None) -> int:
    check_positive_int("d_model", d_model)
    return d_model if hidden is None else check_positive_int("hidden", hidden)


@exact_ints
def generative_flops(
    n: int, d_model: int, hidden: int | None = None, *, avg: bool = False, batch: int = 1
) -> int:
    """Forward FLOPs of the generative layer on n tokens: 2·n·k·d·h + 2·n·h·d.

    With h = d: 6nd² (k = 2) or 8nd² (k = 3), linear in n; attention costs 8nd² + 4n²d. The running
    mean (``running_mean_flops``) is not a matrix product and is not included. Chapter 8.
    """
    check_positive_int("n", n)
    h = _hidden(d_model, hidden)
    k = 3 if avg else 2
    return matmul_flops(n, k * d_model, h, batch) + matmul_flops(n, h, d_model, batch)


@exact_ints
def running_mean_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Causal running mean by cumulative sum: n·d additions + n·d divisions = 2nd (not a matmul).

    Chapter 8.
    """
    check_positive_int("n", n)
    check_positive_int("d_model", d_model)
    check_positive_int("batch", batch)
    return 2 * n * d_model * batch


def _chunks(n: int, chunk_size: int) -> tuple[int, int]:
    """(C, number of chunks): C = min(chunk_size, n), n padded up to a multiple of C."""
    check_sizes(n=n, chunk_size=chunk_size)
    C = min(chunk_size, n)
    return C, -(-n // C)


@exact_ints
def delta_chunked_flops(
    n: int,
    d_k: int,
    d_v: int | None = None,
    *,
    chunk_size: int = 64,
    heads: int = 1,
    batch: int = 1,
) -> int:
    """Matrix-product FLOPs of the chunked (WY) delta rule, gated or not. Chapter 4.

    Per chunk of C = min(chunk_size, n) tokens: KKᵀ and QKᵀ (2·2C²d_k), the scores times the
    corrections (2C²d_v), and three products with the (d_k × d_v) state, W·S, Q·S and KᵀU
    (3·2C·d_k·d_v); n is padded to a multiple of C. Per token 6·d_k·d_v + C(4d_k + 2d_v): linear
    in n. The unit triangular solve, C²(d_k + d_v) more per chunk, is not a matrix product and
    FlopCounterMode does not count it.
    """
    d_v = d_k if d_v is None else d_v
    check_sizes(d_k=d_k, d_v=d_v, heads=heads, batch=batch)
    C, chunks = _chunks(n, chunk_size)
    return batch * heads * chunks * (4 * C * C * d_k + 2 * C * C * d_v + 6 * C * d_k * d_v)


@exact_ints
def gla_chunked_flops(
    n: int,
    d_k: int,
    d_v: int | None = None,
    *,
    chunk_size: int = 16,
    heads: int = 1,
    batch: int = 1,
) -> int:
    """Matrix-product FLOPs of chunked gated linear attention. Chapter 4.

    Per chunk of C = min(chunk_size, n) tokens: the scores times V (2C²d_v) and two products with
    the (d_k × d_v) state, the gated queries reading it and the gated keys writing it
    (2·2C·d_k·d_v); n is padded to a multiple of C. The within-chunk scores Σ_d q_id k_jd
    e^{G_id − G_jd} are element-wise (3C²d_k more, and C²d_k exponentials), not matrix products.
    """
    d_v = d_k if d_v is None else d_v
    check_sizes(d_k=d_k, d_v=d_v, heads=heads, batch=batch)
    C, chunks = _chunks(n, chunk_size)
    return batch * heads * chunks * (2 * C * C * d_v + 4 * C * d_k * d_v)
