"""Block-wise sparse attention with an online softmax (chapter 4, Long sequences).

A *pattern* says which (query i, key j) pairs may interact. The sequence is cut
into tiles of ``block_size`` positions; only the (query tile, key tile) pairs
that hold at least one allowed pair are computed, so the work is proportional
to the number of tiles touched, not to n². Tiles are visited in groups (one
group per diagonal offset J - I, all query tiles of a group in parallel), and
a running max / running sum softmax merges the groups, as in FlashAttention.
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

from ..checks import check_positive_int

__all__ = ["Pattern", "Plan", "plan", "blockwise_attention"]


@dataclass(frozen=True)
class Pattern:
    """Base of every sparse pattern: ``allowed(i, j, n)`` and the key tiles each query tile needs."""

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


@dataclass(frozen=True)
class _Step:
    rows: object  # slice or LongTensor of query tiles
    cols: object  # slice or LongTensor of key tiles
    partial: tuple | None  # (tile indices within the step, (p, bs, bs) allowed mask) for tiles not fully allowed


@dataclass(frozen=True)
class Plan:
    """The tiles a pattern touches: ``steps`` (one per diagonal offset) and ``tiles`` (their number)."""

    steps: tuple
    tiles: int
    n_query_tiles: int


def _as_index(idx: np.ndarray):
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + idx.size)
    return torch.from_numpy(idx.astype(np.int64))


@functools.lru_cache(maxsize=64)
def plan(pattern: Pattern, n: int, block_size: int) -> Plan:
    """Tiles of ``pattern`` on a sequence of length n cut into tiles of ``block_size``."""
    pattern.validate(n)
    bs = check_positive_int("block_size", block_size)
    nq = math.ceil(n / bs)
    pairs = [(I, J) for I in range(nq) for J in pattern.key_blocks(I, bs, n)]
    offsets: dict[int, list[int]] = {}
    for I, J in pairs:
        offsets.setdefault(int(J) - I, []).append(I)
    ar = np.arange(bs)
    steps = []
    for delta in sorted(offsets, key=abs):
        rows = np.asarray(offsets[delta], dtype=np.int64)
        cols = rows + delta
        ok = pattern.allowed((rows[:, None, None] * bs + ar[None, :, None]),
                             (cols[:, None, None] * bs + ar[None, None, :]), n)
        ok = np.broadcast_to(ok, (rows.size, bs, bs))
        full = ok.all(axis=(1, 2))
        partial = None
        if not full.all():
            where = np.flatnonzero(~full)
            partial = (torch.from_numpy(where), torch.from_numpy(np.ascontiguousarray(ok[where])))
        steps.append(_Step(_as_index(rows), _as_index(cols), partial))
    return Plan(tuple(steps), len(pairs), nq)


def _to(index, device):
    return index if isinstance(index, slice) else index.to(device)


def _write(state: torch.Tensor, rows, new: torch.Tensor) -> torch.Tensor:
    """Out-of-place ``state[:, :, rows] = new`` (keeps autograd simple)."""
    if isinstance(rows, slice):
        if rows.start == 0 and rows.stop == state.shape[2]:
            return new
        return torch.cat([state[:, :, :rows.start], new, state[:, :, rows.stop:]], dim=2)
    return state.index_copy(2, rows, new)


def blockwise_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
                        block_size: int = 64) -> torch.Tensor:
    """Softmax attention restricted to ``pattern``, computing only the tiles it touches.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv). Differentiable (autograd through
    the tile loop). Chapter 4.
    """
    B, H, N, D = q.shape
    if k.shape[2] != N:
        raise ValueError(f"sparse patterns are self-attention: k must have N={N} positions, got {tuple(k.shape)}")
    p = plan(pattern, N, block_size)
    bs, nq = block_size, p.n_query_tiles
    pad = nq * bs - N
    qb = F.pad(q * (1.0 / math.sqrt(D)), (0, 0, 0, pad)).view(B, H, nq, bs, D)
    kb = F.pad(k, (0, 0, 0, pad)).view(B, H, nq, bs, D)
    vb = F.pad(v, (0, 0, 0, pad)).view(B, H, nq, bs, v.shape[-1])
    m = q.new_full((B, H, nq, bs), float("-inf"))
    l = q.new_zeros((B, H, nq, bs))
    acc = q.new_zeros((B, H, nq, bs, v.shape[-1]))
    for step in p.steps:
        rows, cols = _to(step.rows, q.device), _to(step.cols, q.device)
        s = qb[:, :, rows] @ kb[:, :, cols].transpose(-1, -2)  # (B, H, tiles, bs, bs)
        if step.partial is not None:
            idx, ok = step.partial[0].to(q.device), step.partial[1].to(q.device)
            s[:, :, idx] = s[:, :, idx].masked_fill(~ok, float("-inf"))
        m_old = m[:, :, rows]
        m_new = torch.maximum(m_old, s.detach().amax(dim=-1))  # the max only stabilises: no gradient
        m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        e = (s - m_safe[..., None]).exp_()
        alpha = torch.exp(m_old - m_safe)
        l = _write(l, rows, alpha * l[:, :, rows] + e.sum(dim=-1))
        acc = _write(acc, rows, alpha[..., None] * acc[:, :, rows] + e @ vb[:, :, cols])
        m = _write(m, rows, m_new)
    out = acc / torch.where(l > 0, l, torch.ones_like(l))[..., None]
    return out.reshape(B, H, nq * bs, -1)[:, :, :N]
