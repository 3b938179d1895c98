"""Block-wise sparse attention with an online softmax (chapter 4, Long sequences).

A *pattern* says which (query i, key j) pairs may interact. The sequence is cut
into tiles of ``block_size`` positions; only the (query tile, key tile) pairs
that hold at least one allowed pair are computed, so the work is proportional
to the number of tiles touched, not to n². Each step takes a chunk of up to
``CHUNK`` key tiles for many query tiles at once, and a running max / running
sum softmax merges the steps of a query tile, as in FlashAttention.
The plan (which tiles, which need an element mask) is built once per
(pattern, n, block_size) and cached, like FlexAttention's block mask.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attnbook.checks import check_positive_int, check_same_length

__all__ = [
    "Pattern",
    "Plan",
    "plan",
    "blockwise_state",
    "merge_states",
    "finish",
    "blockwise_attention",
]


@dataclass(frozen=True)
class Pattern:
    """Base of every sparse pattern: ``allowed(i, j, n)``
    and the key tiles each query tile needs."""

    causal: bool = False

    def validate(self, n: int) -> None:
        """Raise ValueError when the pattern does not fit a sequence of length n."""
        check_positive_int("n", n)

    def _allowed(self, i, j, n):  # pragma: no cover - every pattern overrides it
        raise NotImplementedError

    def _key_blocks(self, I: int, bs: int, n: int) -> np.ndarray:
        """Key tiles (before the causal cut) that query tile I may need; a superset is fine."""
        return np.arange(math.ceil(n / bs))

    def allowed(self, i, j, n: int) -> np.ndarray:
        """Boolean array: may query position i attend to key position j (broadcast NumPy ints)."""
        ok = self._allowed(i, j, n) & (j < n) & (j >= 0)
        return ok & (j <= i) if self.causal else ok

    def mask(self, n: int) -> np.ndarray:
        """The (n, n) boolean mask, True = may attend."""
        self.validate(n)
        idx = np.arange(n)
        return np.broadcast_to(self.allowed(idx[:, None], idx[None, :], n), (n, n)).copy()

    def key_blocks(self, I: int, bs: int, n: int) -> np.ndarray:
        """Sorted key tiles visited by query tile I."""
        J = np.unique(np.asarray(self._key_blocks(I, bs, n), dtype=np.int64))
        J = J[(J >= 0) & (J < math.ceil(n / bs))]
        return J[J <= I] if self.causal else J


CHUNK = 16  # key tiles gathered per query tile and step
# query tiles processed together: each step's working set stays cache-sized, so time is linear in n
GROUP = 16


@dataclass(frozen=True)
class _Step:
    rows: object  # slice or LongTensor (na,) of query tiles, relative to the group's first tile
    cols: object  # slice (one key tile each) or LongTensor (na, c) of key tiles
    partial: (
        tuple | None
    )  # (query tiles within the step, (p, bs, c·bs) allowed mask) where not all allowed


@dataclass(frozen=True)
class Plan:
    """The tiles a pattern touches: ``groups`` of query tiles ``((first, last + 1), steps)`` to run
    in
    order, and ``tiles`` (their number)."""

    groups: tuple
    tiles: int
    n_query_tiles: int


def _as_index(idx: np.ndarray):
    if idx.ndim == 1 and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))


def _steps(pattern: Pattern, n: int, bs: int, first: int, last: int) -> tuple[tuple, int]:
    """The steps of query tiles first..last-1: step (t, c) holds, for every query tile whose t-th
    chunk of
    key tiles has c tiles, that chunk; a query tile appears at most once per step."""
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    tiles = 0
    for I in range(first, last):
        J = pattern.key_blocks(I, bs, n)
        tiles += J.size
        for t in range(0, J.size, CHUNK):
            groups.setdefault((t // CHUNK, min(CHUNK, J.size - t)), []).append(
                (I, J[t : t + CHUNK])
            )
    ar = np.arange(bs)
    steps = []
    for (_, c), members in sorted(groups.items()):
        rows = np.array([I for I, _ in members], dtype=np.int64)
        cols = np.stack([J for _, J in members])  # (na, c)
        keys = (cols[:, :, None] * bs + ar).reshape(rows.size, 1, c * bs)
        ok = np.broadcast_to(
            pattern.allowed(rows[:, None, None] * bs + ar[None, :, None], keys, n),
            (rows.size, bs, c * bs),
        )
        full = ok.all(axis=(1, 2))
        partial = None
        if not full.all():
            where = np.flatnonzero(~full)
            partial = (torch.from_numpy(where), torch.from_numpy(np.ascontiguousarray(ok[where])))
        contiguous_cols = c == 1 and isinstance(_as_index(cols[:, 0]), slice)
        steps.append(
            _Step(
                _as_index(rows - first),
                _as_index(cols[:, 0]) if contiguous_cols else _as_index(cols),
                partial,
            )
        )
    return tuple(steps), tiles


@functools.lru_cache(maxsize=64)
def plan(pattern: Pattern, n: int, block_size: int) -> Plan:
    """Tiles of ``pattern`` on a sequence of length n cut into tiles of ``block_size``, in groups of
    :data:`GROUP` query tiles."""
    pattern.validate(n)
    bs = check_positive_int("block_size", block_size)
    nq = math.ceil(n / bs)
    groups, tiles = [], 0
    for first in range(0, nq, GROUP):
        last = min(first + GROUP, nq)
        steps, count = _steps(pattern, n, bs, first, last)
        groups.append(((first, last), steps))
        tiles += count
    return Plan(tuple(groups), tiles, nq)


def _take(blocks: torch.Tensor, cols) -> torch.Tensor:
    """Key or value tiles (B, H, nq, bs, D) -> (B, H, na, c·bs, D) for the step's ``cols``."""
    x = blocks[:, :, cols]
    return x if isinstance(cols, slice) else x.flatten(3, 4)


def _to(index, device):
    return index if isinstance(index, slice) else index.to(device)


def _write(state: torch.Tensor, rows, new: torch.Tensor) -> torch.Tensor:
    """Out-of-place ``state[:, :, rows] = new`` (keeps autograd simple)."""
    if isinstance(rows, slice):
        if rows.start == 0 and rows.stop == state.shape[2]:
            return new
        return torch.cat([state[:, :, : rows.start], new, state[:, :, rows.stop :]], dim=2)
    return state.index_copy(2, rows, new)


def blockwise_state(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern, block_size: int = 64
):
    """Online-softmax state (a, m, l) of attention
    restricted to ``pattern``, computing only its tiles.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> a: (B, H, N, Dv) unnormalised output, m: (B, H, N)
    running max (no gradient), l: (B, H, N) running sum; the output is a / l (:func:`finish`). Query
    tiles run in groups of :data:`GROUP`, each group's state written once. Chapter 4.
    """
    B, H, N, D = q.shape
    check_same_length(q, k, "a sparse pattern")
    p = plan(pattern, N, block_size)
    bs, nq = block_size, p.n_query_tiles
    pad = nq * bs - N
    qb = F.pad(q * (1.0 / math.sqrt(D)), (0, 0, 0, pad)).view(B, H, nq, bs, D)
    kb = F.pad(k, (0, 0, 0, pad)).view(B, H, nq, bs, D)
    vb = F.pad(v, (0, 0, 0, pad)).view(B, H, nq, bs, v.shape[-1])
    acc_all = q.new_empty((B, H, nq, bs, v.shape[-1]))
    m_all, l_all = q.new_empty((B, H, nq, bs)), q.new_empty((B, H, nq, bs))
    for (first, last), steps in p.groups:
        g = last - first
        q_group = qb[:, :, first:last]
        m = q.new_full((B, H, g, bs), float("-inf"))
        l = q.new_zeros((B, H, g, bs))
        acc = q.new_zeros((B, H, g, bs, v.shape[-1]))
        for step in steps:
            rows, cols = _to(step.rows, q.device), _to(step.cols, q.device)
            s = q_group[:, :, rows] @ _take(kb, cols).transpose(-1, -2)  # (B, H, na, bs, c·bs)
            if step.partial is not None:
                idx, ok = step.partial[0].to(q.device), step.partial[1].to(q.device)
                s[:, :, idx] = s[:, :, idx].masked_fill(~ok, float("-inf"))
            m_old = m[:, :, rows]
            m_new = torch.maximum(
                m_old, s.detach().amax(dim=-1)
            )  # the max only stabilises: no gradient
            m_safe = _finite(m_new)
            e = (s - m_safe[..., None]).exp_()
            alpha = torch.exp(m_old - m_safe)
            l = _write(l, rows, alpha * l[:, :, rows] + e.sum(dim=-1))
            acc = _write(acc, rows, alpha[..., None] * acc[:, :, rows] + e @ _take(vb, cols))
            m = _write(m, rows, m_new)
        acc_all[:, :, first:last], m_all[:, :, first:last], l_all[:, :, first:last] = acc, m, l
    return (
        acc_all.reshape(B, H, nq * bs, -1)[:, :, :N],
        m_all.reshape(B, H, -1)[:, :, :N],
        l_all.reshape(B, H, -1)[:, :, :N],
    )


def _finite(m: torch.Tensor) -> torch.Tensor:
    """m with -inf (no key seen yet) replaced by 0, so exp(x - m) stays defined."""
    return torch.where(torch.isinf(m), torch.zeros_like(m), m)


def merge_states(a, b):
    """Combine two online-softmax states (a, m, l) over disjoint key sets into one."""
    m = torch.maximum(a[1], b[1])
    wa, wb = torch.exp(a[1] - _finite(m)), torch.exp(b[1] - _finite(m))
    return a[0] * wa[..., None] + b[0] * wb[..., None], m, a[2] * wa + b[2] * wb


def finish(state) -> torch.Tensor:
    """Output a / l of a state; rows that saw no key (only padding) give 0."""
    acc, _, l = state
    return acc / torch.where(l > 0, l, torch.ones_like(l))[..., None]


def blockwise_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern, block_size: int = 64
) -> torch.Tensor:
    """Softmax attention restricted to ``pattern``, computing only the tiles it touches.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv). Differentiable (autograd through
    the tile loop). Chapter 4.
    """
    return finish(blockwise_state(q, k, v, pattern, block_size))
