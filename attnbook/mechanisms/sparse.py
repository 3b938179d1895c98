"""Sparse attention patterns as masks (chapter 4, Long sequences).

One function per pattern returns the boolean (n, n) mask (True = may attend):
sliding window (Mistral), strided (Child et al. 2019), Longformer (local +
global tokens, Beltagy et al. 2020) and block-sparse. The NumPy reference is
dense attention with the mask; the torch form (:mod:`attnbook.mechanisms.blockwise`)
computes only the tiles the pattern touches. The same patterns as FlexAttention ``mask_mod``
functions (:func:`flex_mask_mod`) let PyTorch compile the mask into a kernel
(:func:`flex_sparse_attention`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from attnbook import reference
from attnbook.checks import (
    check_array,
    check_mask,
    check_positive_int,
    check_qkv,
    check_same_length,
)
from attnbook.mechanisms.blockwise import (
    Pattern,
    blockwise_attention,
    blockwise_state,
    finish,
    merge_states,
    plan,
)

__all__ = [
    "SlidingWindow",
    "Strided",
    "StridedFar",
    "Longformer",
    "BlockSparse",
    "sliding_window_mask",
    "strided_mask",
    "longformer_mask",
    "block_sparse_mask",
    "default_block_layout",
    "sparse_attention_numpy",
    "sparse_attention",
    "strided_two_pass",
    "tiles_computed",
    "sliding_window_pattern",
    "strided_pattern",
    "longformer_pattern",
    "block_sparse_pattern",
    "sliding_window_attention",
    "strided_attention",
    "longformer_attention",
    "block_sparse_attention",
    "flex_mask_mod",
    "flex_sparse_attention",
]


def _span(lo: int, hi: int, bs: int) -> np.ndarray:
    """Tiles holding key positions lo..hi (inclusive, clipped at 0)."""
    return np.arange(max(lo, 0) // bs, max(hi, 0) // bs + 1)


@dataclass(frozen=True)
class SlidingWindow(Pattern):
    """Each query sees the ``window`` nearest keys on
    each side: causal 0 <= i-j < w, else |i-j| < w."""

    window: int = 1

    def __post_init__(self):
        check_positive_int("window", self.window)

    def _allowed(self, i, j, n):
        return np.abs(i - j) < self.window

    def _key_blocks(self, I, bs, n):
        return _span(I * bs - self.window + 1, (I + 1) * bs - 1 + self.window - 1, bs)


@dataclass(frozen=True)
class Strided(Pattern):
    """Child et al. (2019): the previous ``stride``
    keys plus every stride-th key, (i-j) mod s = 0."""

    stride: int = 1

    def __post_init__(self):
        check_positive_int("stride", self.stride)

    def _allowed(self, i, j, n):
        return (np.abs(i - j) < self.stride) | ((i - j) % self.stride == 0)

    def _key_blocks(self, I, bs, n):
        residues = np.unique(np.arange(I * bs, min((I + 1) * bs, n)) % self.stride)
        hits = np.flatnonzero(np.isin(np.arange(n) % self.stride, residues)) // bs
        local = _span(I * bs - self.stride + 1, (I + 1) * bs + self.stride - 2, bs)
        return np.concatenate([local, hits])


@dataclass(frozen=True)
class Longformer(Pattern):
    """Beltagy et al. (2020): a sliding window |i-j| <
    w plus global tokens that see and are seen by all."""

    window: int = 1
    global_tokens: tuple = (0,)

    def __post_init__(self):
        check_positive_int("window", self.window)
        tokens = self.global_tokens
        if isinstance(tokens, (np.ndarray, torch.Tensor)):
            tokens = tokens.tolist()
        if not isinstance(tokens, (list, tuple)) or not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in tokens
        ):
            raise TypeError(
                f"global_tokens must be a sequence of integer positions, got {self.global_tokens!r}"
            )
        object.__setattr__(self, "global_tokens", tuple(sorted({int(t) for t in tokens})))

    def validate(self, n):
        super().validate(n)
        bad = [t for t in self.global_tokens if not 0 <= t < n]
        if bad:
            raise ValueError(
                f"global_tokens must lie in [0, {n}) for a sequence of length {n}, got {bad}"
            )

    def _allowed(self, i, j, n):
        g = np.zeros(n + 1, dtype=bool)  # position n stands for every out-of-range index
        g[list(self.global_tokens)] = True
        return (np.abs(i - j) < self.window) | g[np.clip(i, 0, n)] | g[np.clip(j, 0, n)]

    def _key_blocks(self, I, bs, n):
        if any(I * bs <= t < (I + 1) * bs for t in self.global_tokens):
            return np.arange(math.ceil(n / bs))
        local = _span(I * bs - self.window + 1, (I + 1) * bs + self.window - 2, bs)
        return np.concatenate([local, np.asarray(self.global_tokens, dtype=np.int64) // bs])


@dataclass(frozen=True)
class StridedFar(Pattern):
    """The far keys of the strided pattern after sorting positions by (i
    mod s, i): query and key in the same residue class, key != query.
    Each class is contiguous, so the tiles form a block diagonal."""

    stride: int = 1

    def _classes(self, n):
        order = np.argsort(np.arange(n) % self.stride, kind="stable")
        return np.append(order % self.stride, -1), np.bincount(
            order % self.stride, minlength=self.stride
        )

    def _allowed(self, i, j, n):
        cls, _ = self._classes(n)
        ci, cj = cls[np.clip(i, 0, n)], cls[np.clip(j, 0, n)]
        return (ci == cj) & (ci >= 0) & (i != j)

    def _key_blocks(self, I, bs, n):
        cls, sizes = self._classes(n)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        first, last = cls[I * bs], cls[min((I + 1) * bs, n) - 1]
        return _span(int(starts[first]), int(starts[last + 1]) - 1, bs)


def strided_two_pass(q, k, v, pattern: Strided, block_size: int = 64) -> torch.Tensor:
    """Strided attention as two block-wise passes merged by the online softmax: the band |i-j| < s
    on the sequence, and the far keys i - j = ±s, ±2s, ... on the sequence sorted by residue mod s,
    where they are contiguous. (B, H, N, D) -> (B, H, N, Dv); O(n·(s + n/s)·d) work. Chapter 4."""
    n, s = q.shape[2], pattern.stride
    near = blockwise_state(q, k, v, SlidingWindow(causal=pattern.causal, window=s), block_size)
    order = torch.from_numpy(np.argsort(np.arange(n) % s, kind="stable")).to(q.device)
    far = blockwise_state(
        q[:, :, order],
        k[:, :, order],
        v[:, :, order],
        StridedFar(causal=pattern.causal, stride=s),
        block_size,
    )
    back = torch.argsort(order)
    return finish(merge_states(near, tuple(x[:, :, back] for x in far)))


def default_block_layout(n_blocks: int) -> np.ndarray:
    """Block layout used when none is given: neighbouring
    blocks |I-J| <= 1 plus block 0 as global."""
    n_blocks = check_positive_int("n_blocks", n_blocks)
    idx = np.arange(n_blocks)
    layout = np.abs(idx[:, None] - idx[None, :]) <= 1
    layout[0, :] = layout[:, 0] = True
    return layout


@dataclass(frozen=True)
class BlockSparse(Pattern):
    """Block-sparse attention: an (nb, nb) layout of
    allowed ``block_size`` blocks (None = default layout)."""

    block_size: int = 1
    layout: tuple | None = None

    def __post_init__(self):
        check_positive_int("block_size", self.block_size)
        if self.layout is not None:
            arr = np.asarray(
                self.layout.cpu() if isinstance(self.layout, torch.Tensor) else self.layout
            )
            if arr.dtype != np.bool_:
                raise TypeError(
                    f"layout must be a boolean (n_blocks, n_blocks) array, got dtype {arr.dtype}"
                )
            if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
                raise ValueError(
                    f"layout must be a square (n_blocks, n_blocks) array, got shape {arr.shape}"
                )
            object.__setattr__(self, "layout", tuple(map(tuple, arr.tolist())))

    def blocks(self, n: int) -> np.ndarray:
        nb = math.ceil(n / self.block_size)
        return (
            default_block_layout(nb) if self.layout is None else np.asarray(self.layout, dtype=bool)
        )

    def validate(self, n):
        super().validate(n)
        nb = math.ceil(n / self.block_size)
        layout = self.blocks(n)
        if layout.shape != (nb, nb):
            raise ValueError(
                f"layout must have shape ({nb}, {nb}) for n={n} and block_size={self.block_size}, "
                f"got {layout.shape}"
            )
        usable = np.tril(layout) if self.causal else layout
        empty = np.flatnonzero(~usable.any(axis=1))
        if empty.size:
            raise ValueError(
                f"layout leaves query block {int(empty[0])} with no key block"
                + (" at or before it (causal)" if self.causal else "")
            )

    def _allowed(self, i, j, n):
        layout = np.zeros((math.ceil(n / self.block_size) + 1,) * 2, dtype=bool)
        layout[:-1, :-1] = self.blocks(n)
        nb = layout.shape[0] - 1
        return layout[np.clip(i // self.block_size, 0, nb), np.clip(j // self.block_size, 0, nb)]

    def _key_blocks(self, I, bs, n):
        if bs != self.block_size:
            raise ValueError(
                f"block_size of the kernel ({bs}) must equal the layout's ({self.block_size})"
            )
        return np.flatnonzero(self.blocks(n)[I])


def sliding_window_mask(n: int, window: int, causal: bool = False) -> np.ndarray:
    """(n, n) mask of a sliding window: |i-j| < window, or 0 <= i-j < window when causal.

    Chapter 4.
    """
    return SlidingWindow(causal=causal, window=window).mask(n)


def strided_mask(n: int, stride: int, causal: bool = False) -> np.ndarray:
    """(n, n) mask of Child et al.'s strided pattern: |i-j| < stride or (i-j) mod stride = 0.

    Chapter 4.
    """
    return Strided(causal=causal, stride=stride).mask(n)


def longformer_mask(n: int, window: int, global_tokens=(0,), causal: bool = False) -> np.ndarray:
    """(n, n) mask of Longformer: |i-j| < window, plus full rows and columns at ``global_tokens``.

    Chapter 4.
    """
    return Longformer(causal=causal, window=window, global_tokens=global_tokens).mask(n)


def block_sparse_mask(n: int, block_size: int, layout=None, causal: bool = False) -> np.ndarray:
    """(n, n) mask from an (nb, nb) block layout, nb = ceil(n / block_size). Chapter 4."""
    return BlockSparse(causal=causal, block_size=block_size, layout=layout).mask(n)


def sparse_attention_numpy(q, k, v, mask) -> np.ndarray:
    """Dense attention with a pattern mask, float64
    NumPy. q, k, v: (B, H, N, D); mask (N, N) bool."""
    q = check_array("q", q, ndim=4)
    n = q.shape[2]
    check_mask("mask", mask, n, np.shape(k)[2])
    if not np.asarray(mask).any(axis=-1).all():
        raise ValueError("mask must let every query attend to at least one key")
    return reference.attention(q, k, v, mask=np.asarray(mask))


def sparse_attention(q, k, v, pattern: Pattern, block_size: int = 64) -> torch.Tensor:
    """Torch attention restricted to ``pattern``, block-wise (skips untouched tiles). (B, H, N, D)
    -> (B, H, N, Dv)."""
    if not isinstance(pattern, Pattern):
        raise TypeError(
            "pattern must be an attnbook.mechanisms.blockwise.Pattern, got "
            f"{type(pattern).__name__}"
        )
    if isinstance(pattern, Strided):
        return strided_two_pass(q, k, v, pattern, block_size)
    return blockwise_attention(q, k, v, pattern, block_size)


def tiles_computed(pattern: Pattern, n: int, block_size: int = 64) -> int:
    """Number of block_size × block_size tiles
    :func:`sparse_attention` computes for ``pattern`` at length n."""
    if isinstance(pattern, Strided):
        near = SlidingWindow(causal=pattern.causal, window=pattern.stride)
        far = StridedFar(causal=pattern.causal, stride=pattern.stride)
        return plan(near, n, block_size).tiles + plan(far, n, block_size).tiles
    return plan(pattern, n, block_size).tiles


# The pattern factories take every option: their defaults are the records' (attnbook.registry),
# filled in by Method.pattern, so each default is written once.
def sliding_window_pattern(
    n: int, causal: bool = False, *, window: int, block_size: int
) -> tuple[Pattern, int]:
    """(pattern, tile size) of ``sliding_window`` at length n: its record's pattern factory."""
    return SlidingWindow(causal=causal, window=window), block_size


def strided_pattern(
    n: int, causal: bool = False, *, stride: int | None, block_size: int
) -> tuple[Pattern, int]:
    """(pattern, tile size) of ``strided`` at length n; ``stride`` None means ceil(sqrt(n))."""
    stride = math.ceil(math.sqrt(n)) if stride is None else stride
    return Strided(causal=causal, stride=stride), block_size


def longformer_pattern(
    n: int, causal: bool = False, *, window: int, global_tokens, block_size: int
) -> tuple[Pattern, int]:
    """(pattern, tile size) of ``longformer`` at length n."""
    return Longformer(causal=causal, window=window, global_tokens=global_tokens), block_size


def block_sparse_pattern(
    n: int, causal: bool = False, *, block_size: int, layout
) -> tuple[Pattern, int]:
    """(pattern, tile size) of ``block_sparse`` at length n (the layout's block is the tile)."""
    return BlockSparse(causal=causal, block_size=block_size, layout=layout), block_size


def _pattern_of(method: str, q, causal: bool, options: dict) -> tuple[Pattern, int]:
    """(pattern, tile size) of the sparse ``method`` at q's length, its record's defaults filled."""
    from attnbook.registry import method_info

    return method_info(method).pattern(q.shape[2], causal, **options)


def sliding_window_attention(q, k, v, *, causal: bool = False, **options):
    """Sliding-window attention (Mistral-style), block-wise; exact once window >= N. Chapter 4.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv); options: ``window``, ``block_size``
    (defaults in the ``sliding_window`` record).
    """
    return sparse_attention(q, k, v, *_pattern_of("sliding_window", q, causal, options))


def strided_attention(q, k, v, *, causal: bool = False, **options):
    """Strided attention (Child et al. 2019): the last s keys plus every s-th key. Chapter 4.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv); options: ``stride`` (None means
    ceil(sqrt(N))), ``block_size`` (defaults in the ``strided`` record).
    """
    return sparse_attention(q, k, v, *_pattern_of("strided", q, causal, options))


def longformer_attention(q, k, v, *, causal: bool = False, **options):
    """Longformer attention: a sliding window plus global tokens, block-wise. Chapter 4.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv); options: ``window``,
    ``global_tokens``, ``block_size`` (defaults in the ``longformer`` record).
    """
    return sparse_attention(q, k, v, *_pattern_of("longformer", q, causal, options))


def block_sparse_attention(q, k, v, *, causal: bool = False, **options):
    """Block-sparse attention over a (nb, nb) block layout (default: neighbours plus block 0).

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv); options: ``block_size``, ``layout``
    (defaults in the ``block_sparse`` record). Chapter 4.
    """
    return sparse_attention(q, k, v, *_pattern_of("block_sparse", q, causal, options))


def flex_mask_mod(pattern: Pattern, n: int, device="cpu"):
    """``pattern`` for a sequence of length n as a FlexAttention
    ``mask_mod(b, h, q_idx, kv_idx) -> bool``: the rule of the pattern's ``_allowed``
    written in torch index arithmetic (tensors of the layout or the global tokens are
    captured), so that ``create_block_mask`` can find the tiles. Chapter 4."""
    if not isinstance(pattern, Pattern):
        raise TypeError(
            "pattern must be an attnbook.mechanisms.blockwise.Pattern, got "
            f"{type(pattern).__name__}"
        )
    pattern.validate(n)
    if isinstance(pattern, SlidingWindow):

        def rule(q, kv):
            return (q - kv).abs() < pattern.window
    elif isinstance(pattern, Strided):

        def rule(q, kv):
            return ((q - kv).abs() < pattern.stride) | ((q - kv) % pattern.stride == 0)
    elif isinstance(pattern, Longformer):
        is_global = torch.zeros(n, dtype=torch.bool, device=device)
        is_global[list(pattern.global_tokens)] = True

        def rule(q, kv):
            return ((q - kv).abs() < pattern.window) | is_global[q] | is_global[kv]
    elif isinstance(pattern, BlockSparse):
        layout = torch.as_tensor(pattern.blocks(n), device=device)
        bs = pattern.block_size

        def rule(q, kv):
            return layout[q // bs, kv // bs]
    else:
        raise TypeError(
            "pattern must be a SlidingWindow, Strided, Longformer or BlockSparse, got "
            f"{type(pattern).__name__}"
        )

    def mask_mod(b, h, q_idx, kv_idx):
        ok = rule(q_idx, kv_idx)
        return ok & (kv_idx <= q_idx) if pattern.causal else ok

    return mask_mod


def flex_sparse_attention(
    q, k, v, pattern: Pattern, block_size: int = 128, kernel=None
) -> torch.Tensor:
    """Attention restricted to ``pattern`` by FlexAttention: ``create_block_mask`` turns
    :func:`flex_mask_mod` into a block mask (tiles of ``block_size``: skipped, full, or masked
    element by element) and ``kernel`` (default ``flex_attention``, eager; pass
    ``torch.compile(flex_attention)`` for the generated kernel) runs it. q, k: (B, H, N, D), v: (B,
    H, N, Dv) -> (B, H, N, Dv). Chapter 4."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    n = check_qkv(q, k, v)[2]
    check_same_length(q, k, "a sparse pattern")
    block_size = check_positive_int("block_size", block_size)
    block_mask = create_block_mask(
        flex_mask_mod(pattern, n, q.device),
        None,
        None,
        n,
        n,
        device=q.device,
        BLOCK_SIZE=block_size,
    )
    return (flex_attention if kernel is None else kernel)(q, k, v, block_mask=block_mask)
