"""Which token positions each of P ranks holds (chapter 9, Attention across devices).

A :class:`Layout` splits the positions 0..n-1 of a sequence over P ranks. Each rank's shard is a
list of :class:`Piece` objects, runs of its local rows with the global positions they hold:

- ``contiguous``: rank r holds one block of about n/P consecutive positions (the first n mod P
  ranks one more). Causal attention leaves the last rank P times the work of the first.
- ``zigzag``: the sequence is cut into 2P chunks and rank r holds chunks r and 2P-1-r, one early
  and one late, so that every rank does the same causal work (the layout of ring-flash-attention
  and of Llama 3's context parallelism).
- ``striped``: rank r holds positions r, r+P, r+2P, ... (Brandon et al.'s striped attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..checks import check_positive_int

__all__ = ["LAYOUTS", "Piece", "Layout", "make_layout", "pair_kind", "split_sizes"]

LAYOUTS = ("contiguous", "zigzag", "striped")


def split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` near-equal consecutive chunks of n: the first n mod parts get one more."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


@dataclass(frozen=True, eq=False)
class Piece:
    """Local rows start..stop of a shard, holding the global ``positions`` (1-D int64)."""

    start: int
    stop: int
    positions: torch.Tensor

    @cached_property
    def lo(self) -> int:
        return int(self.positions.min())

    @cached_property
    def hi(self) -> int:
        return int(self.positions.max())

    def shifted(self, offset: int) -> Piece:
        """The same positions, at local rows start+offset..stop+offset."""
        return Piece(self.start + offset, self.stop + offset, self.positions)


def pair_kind(q: Piece, k: Piece, causal: bool) -> str:
    """How queries ``q`` meet keys ``k``: "full" (every
    pair allowed), "masked" (some) or "skip" (none)."""
    if not causal or q.lo >= k.hi:
        return "full"
    if q.hi < k.lo:
        return "skip"
    return "masked"


@dataclass(frozen=True)
class Layout:
    """The positions 0..n-1 split over ``world_size`` ranks in the way ``kind`` names.

    Chapter 9.
    """

    kind: str
    n: int
    world_size: int

    def __post_init__(self):
        if self.kind not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.kind!r}")
        check_positive_int("world_size", self.world_size)
        check_positive_int("n", self.n)
        need = 2 * self.world_size if self.kind == "zigzag" else self.world_size
        if self.n < need:
            raise ValueError(
                f"the {self.kind} layout over {self.world_size} ranks needs n >= {need} tokens, "
                f"got n={self.n}"
            )

    @cached_property
    def _pieces(self) -> list[list[Piece]]:
        n, P = self.n, self.world_size
        if self.kind == "striped":
            return [[Piece(0, len(range(r, n, P)), torch.arange(r, n, P))] for r in range(P)]
        parts = P if self.kind == "contiguous" else 2 * P
        bounds = [0]
        for size in split_sizes(n, parts):
            bounds.append(bounds[-1] + size)
        chunks = [torch.arange(bounds[i], bounds[i + 1]) for i in range(parts)]
        owned = [[r] if self.kind == "contiguous" else [r, 2 * P - 1 - r] for r in range(P)]
        out = []
        for ids in owned:
            pieces, start = [], 0
            for i in ids:
                pieces.append(Piece(start, start + len(chunks[i]), chunks[i]))
                start += len(chunks[i])
            out.append(pieces)
        return out

    def pieces(self, rank: int) -> list[Piece]:
        """The pieces of ``rank``'s shard, local rows counted from 0."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {rank}")
        return self._pieces[rank]

    @property
    def sizes(self) -> list[int]:
        """Number of tokens each rank holds."""
        return [pieces[-1].stop for pieces in self._pieces]

    def positions(self, rank: int) -> torch.Tensor:
        """Global positions of ``rank``'s local rows, in order (int64, length sizes[rank])."""
        return torch.cat([p.positions for p in self.pieces(rank)])

    def gathered_pieces(self) -> list[Piece]:
        """Every rank's pieces, placed at their rows of the shards concatenated in rank order."""
        out, offset = [], 0
        for r in range(self.world_size):
            out.extend(p.shifted(offset) for p in self.pieces(r))
            offset += self.sizes[r]
        return out

    def shard(self, x: torch.Tensor, rank: int, dim: int = -2) -> torch.Tensor:
        """The rows of the full ``x`` (size n along ``dim``) that ``rank`` holds."""
        if x.shape[dim] != self.n:
            raise ValueError(f"x must have n={self.n} along dim {dim}, got shape {tuple(x.shape)}")
        return x.index_select(dim, self.positions(rank).to(x.device))

    def unshard(self, shards, dim: int = -2) -> torch.Tensor:
        """The full tensor from the ``world_size`` shards (inverse of :meth:`shard`)."""
        if len(shards) != self.world_size:
            raise ValueError(f"shards must hold {self.world_size} tensors, got {len(shards)}")
        cat = torch.cat(list(shards), dim=dim)
        order = torch.argsort(torch.cat([self.positions(r) for r in range(self.world_size)]))
        return cat.index_select(dim, order.to(cat.device))


def make_layout(kind, n: int, world_size: int) -> Layout:
    """A :class:`Layout` from its name (or return
    ``kind`` itself if it is one and fits n, world_size)."""
    if isinstance(kind, Layout):
        if (kind.n, kind.world_size) != (n, world_size):
            raise ValueError(
                f"layout is for n={kind.n} over {kind.world_size} ranks, but the inputs have "
                f"n={n} over {world_size} ranks"
            )
        return kind
    return Layout(kind, n, world_size)
