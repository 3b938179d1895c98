"""Memory traffic of attention (chapter 4, FlashAttention): elements moved between slow memory
(HBM) and fast memory (SRAM) by standard and by tiled attention, and the Θ(n²d²/M) lower bound.
Counts are in elements of one head of one sequence unless ``heads``/``batch`` say otherwise.
"""

from __future__ import annotations

import math

from attnbook.checks import check_positive_int, check_sizes, exact_ints

__all__ = [
    "standard_attention_io",
    "tiled_attention_io",
    "flash_block_sizes",
    "flash_io_bound",
]


@exact_ints
def standard_attention_io(n: int, d_k: int, *, heads: int = 1, batch: int = 1) -> int:
    """Elements standard attention moves: read Q, K, V, write O (4nd) and write S, read S, write P,
    read P (4n²): Θ(nd + n²). Dao et al. 2022, Algorithm 0. Chapter 4."""
    n, d_k, heads, batch = check_sizes(n=n, d_k=d_k, heads=heads, batch=batch)
    return (4 * n * d_k + 4 * n * n) * heads * batch


@exact_ints
def tiled_attention_io(
    n: int,
    d_k: int,
    block_size: int,
    block_size_k: int | None = None,
    causal: bool = False,
    *,
    heads: int = 1,
    batch: int = 1,
) -> int:
    """Elements the tiled loop moves: Q and O once (2nd), the
    log-sum-exp (n), and K and V once per query tile: 2d·n·ceil(n/B_r),
    about 2n²d/B_r (causal: only tiles up to the diagonal). Chapter 4."""
    n, d_k, br, heads, batch = check_sizes(
        n=n, d_k=d_k, block_size=block_size, heads=heads, batch=batch
    )
    bc = br if block_size_k is None else check_positive_int("block_size_k", block_size_k)
    keys = 0
    for r0 in range(0, n, br):
        last = (
            min(r0 + br, n) if causal else n
        )  # keys needed: positions < last, loaded in whole tiles
        keys += min(n, math.ceil(last / bc) * bc)
    return (2 * n * d_k + n + 2 * d_k * keys) * heads * batch


@exact_ints
def flash_block_sizes(d_k: int, sram: int) -> tuple[int, int]:
    """Tile sizes for M elements of SRAM: B = ceil(M / 4d) rows held, min(B, d) streamed.

    FlashAttention-1 holds B_c = ceil(M / 4d) keys and streams B_r = min(B_c, d) queries; the
    FlashAttention-2 loop of :func:`attnbook.mechanisms.flash.flash_attention_numpy` swaps the
    roles,
    so this returns (block_size, block_size_k) = (B_c, B_r). Chapter 4."""
    d_k, sram = check_sizes(d_k=d_k, sram=sram)
    b = math.ceil(sram / (4 * d_k))
    return b, min(b, d_k)


@exact_ints
def flash_io_bound(n: int, d_k: int, sram: int) -> float:
    """The order n²d²/M of FlashAttention's HBM accesses (Dao et al. 2022, Theorem 2). Chapter 4."""
    n, d_k, sram = check_sizes(n=n, d_k=d_k, sram=sram)
    return n * n * d_k * d_k / sram
