"""Costs of long-sequence attention (chapter 4, Long sequences).

Sparse patterns: nonzeros of each mask and the FLOPs they need (multiply-add =
2 FLOPs; QKᵀ and PV each cost 2·d_k per allowed pair, so 4·d_k per pair).
FlashAttention: elements moved between slow memory (HBM) and fast memory
(SRAM) by standard and by tiled attention, and the Θ(n²d²/M) bound.
All functions count one head of one sequence unless ``heads``/``batch`` say otherwise.
"""
from __future__ import annotations

import math

import numpy as np

from ..checks import check_positive_int

__all__ = [
    "sliding_window_nnz", "strided_nnz", "longformer_nnz", "block_sparse_nnz",
    "sparse_flops", "sparse_flops_total", "sparse_flops_per_token",
    "sliding_window_tiles", "blockwise_flops", "flash_flops",
    "naive_attention_io", "tiled_attention_io", "flash_block_sizes", "flash_io_bound",
]


def _pos(**values):
    return [check_positive_int(k, v) for k, v in values.items()]


def _band(n: int, w: int) -> int:
    """Pairs with 0 <= i - j < w among n positions: n·w - w(w-1)/2 once w <= n."""
    w = min(w, n)
    return n * w - w * (w - 1) // 2


def sliding_window_nnz(n: int, window: int, causal: bool = False) -> int:
    """Allowed pairs of a sliding window: causal n·w - w(w-1)/2; two-sided 2·that - n. Chapter 4."""
    n, window = _pos(n=n, window=window)
    return _band(n, window) if causal else 2 * _band(n, window) - n


def strided_nnz(n: int, stride: int, causal: bool = False) -> int:
    """Allowed pairs of the strided pattern: the local band plus the pairs with i - j = k·s, k >= 1. Chapter 4."""
    n, s = _pos(n=n, stride=stride)
    q, r = divmod(n, s)
    far = s * q * (q - 1) // 2 + q * r  # sum over i of floor(i / s): the keys i - s, i - 2s, ...
    return sliding_window_nnz(n, s, causal) + (far if causal else 2 * far)


def longformer_nnz(n: int, window: int, global_tokens, causal: bool = False) -> int:
    """Allowed pairs of Longformer: the band plus global rows and columns, overlaps counted once. Chapter 4."""
    n, w = _pos(n=n, window=window)
    g = sorted({int(t) for t in global_tokens})
    if any(not 0 <= t < n for t in g):
        raise ValueError(f"global_tokens must lie in [0, {n}), got {g}")
    total = sliding_window_nnz(n, w, causal)
    for t in g:
        if causal:  # row t: keys 0..t; column t: queries t..n-1; the band already holds min(., w) of each
            total += (t + 1 - min(t + 1, w)) + (n - t - min(n - t, w))
        else:  # row and column t have n entries, min(t, w-1) + min(n-1-t, w-1) + 1 of them in the band
            total += 2 * (n - (min(t, w - 1) + min(n - 1 - t, w - 1) + 1))
    far = sum(1 for a in g for b in g if abs(a - b) >= w and (not causal or a > b))
    return total - far  # (global row, global column) pairs outside the band were counted twice


def block_sparse_nnz(n: int, block_size: int, layout, causal: bool = False) -> int:
    """Allowed pairs of a block layout: the sizes of its blocks (diagonal ones triangular when causal). Chapter 4."""
    n, b = _pos(n=n, block_size=block_size)
    layout = np.asarray(layout, dtype=bool)
    sizes = np.minimum(b, n - b * np.arange(math.ceil(n / b)))
    if layout.shape != (sizes.size, sizes.size):
        raise ValueError(f"layout must have shape ({sizes.size}, {sizes.size}), got {layout.shape}")
    area = np.outer(sizes, sizes)
    if causal:
        area = np.tril(area, -1) + np.diag(sizes * (sizes + 1) // 2)
    return int((area * layout).sum())


def sparse_flops(nnz: int, d_k: int, *, heads: int = 1, batch: int = 1) -> int:
    """FLOPs of QKᵀ and PV restricted to ``nnz`` allowed pairs: 4·nnz·d_k per head. Chapter 4."""
    nnz, d_k, heads, batch = _pos(nnz=nnz, d_k=d_k, heads=heads, batch=batch)
    return 4 * nnz * d_k * heads * batch


def sparse_flops_total(n: int, s: int, d_k: int) -> int:
    """A sequence whose n queries each see s keys: 4·n·s·d_k FLOPs, O(s·n·d), linear in n. Chapter 4."""
    n, s, d_k = _pos(n=n, s=s, d_k=d_k)
    return 4 * n * s * d_k


def sparse_flops_per_token(s: int, d_k: int) -> int:
    """One query seeing s keys: 4·s·d_k FLOPs, O(s·d), the part that is independent of n. Chapter 4."""
    s, d_k = _pos(s=s, d_k=d_k)
    return 4 * s * d_k


def sliding_window_tiles(n: int, window: int, block_size: int, causal: bool = False) -> int:
    """Tiles a block-wise sliding window touches: a band of c = 1 + ceil((w-1)/b) tiles on ceil(n/b). Chapter 4."""
    n, w, b = _pos(n=n, window=window, block_size=block_size)
    return sliding_window_nnz(math.ceil(n / b), 1 + math.ceil((w - 1) / b), causal)


def blockwise_flops(tiles: int, block_size: int, d_k: int, *, heads: int = 1, batch: int = 1) -> int:
    """FLOPs a block-wise kernel spends on ``tiles`` full b×b tiles: 4·tiles·b²·d_k per head. Chapter 4."""
    tiles, b, d_k, heads, batch = _pos(tiles=tiles, block_size=block_size, d_k=d_k, heads=heads, batch=batch)
    return 4 * tiles * b * b * d_k * heads * batch


def flash_flops(n: int, d_k: int, block_size: int, causal: bool = False, *, heads: int = 1, batch: int = 1) -> int:
    """Matrix-product FLOPs of the torch FlashAttention loop: 4n²d_k, or, causal, key tile J only meets
    the queries from its first row on: Σ_J 4·(n - J·b)·b_J·d_k. Chapter 4."""
    n, d_k, b, heads, batch = _pos(n=n, d_k=d_k, block_size=block_size, heads=heads, batch=batch)
    if not causal:
        return 4 * n * n * d_k * heads * batch
    return sum(4 * (n - c0) * (min(c0 + b, n) - c0) * d_k for c0 in range(0, n, b)) * heads * batch


def naive_attention_io(n: int, d_k: int, *, heads: int = 1, batch: int = 1) -> int:
    """Elements standard attention moves: read Q, K, V, write O (4nd) and write S, read S, write P,
    read P (4n²): Θ(nd + n²). Dao et al. 2022, Algorithm 0. Chapter 4."""
    n, d_k, heads, batch = _pos(n=n, d_k=d_k, heads=heads, batch=batch)
    return (4 * n * d_k + 4 * n * n) * heads * batch


def tiled_attention_io(n: int, d_k: int, block_size: int, block_size_k: int | None = None, causal: bool = False,
                       *, heads: int = 1, batch: int = 1) -> int:
    """Elements the tiled loop moves: Q and O once (2nd), the log-sum-exp (n), and K and V once per
    query tile: 2d·n·ceil(n/B_r), about 2n²d/B_r (causal: only tiles up to the diagonal). Chapter 4."""
    n, d_k, br, heads, batch = _pos(n=n, d_k=d_k, block_size=block_size, heads=heads, batch=batch)
    bc = br if block_size_k is None else check_positive_int("block_size_k", block_size_k)
    keys = 0
    for r0 in range(0, n, br):
        last = min(r0 + br, n) if causal else n  # keys needed: positions < last, loaded in whole tiles
        keys += min(n, math.ceil(last / bc) * bc)
    return (2 * n * d_k + n + 2 * d_k * keys) * heads * batch


def flash_block_sizes(d_k: int, sram: int) -> tuple[int, int]:
    """Tile sizes for M elements of SRAM: B = ceil(M / 4d) rows held, min(B, d) streamed.

    FlashAttention-1 holds B_c = ceil(M / 4d) keys and streams B_r = min(B_c, d) queries; the
    FlashAttention-2 loop of :func:`attnbook.long.flash.flash_attention_numpy` swaps the roles,
    so this returns (block_size, block_size_k) = (B_c, B_r). Chapter 4."""
    d_k, sram = _pos(d_k=d_k, sram=sram)
    b = math.ceil(sram / (4 * d_k))
    return b, min(b, d_k)


def flash_io_bound(n: int, d_k: int, sram: int) -> float:
    """The order n²d²/M of FlashAttention's HBM accesses (Dao et al. 2022, Theorem 2). Chapter 4."""
    n, d_k, sram = _pos(n=n, d_k=d_k, sram=sram)
    return n * n * d_k * d_k / sram
