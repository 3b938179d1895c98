"""A paged KV cache (Kwon et al., 2023, PagedAttention), attention through its block table (ch. 10).

The cache's memory is a pool of fixed-size pages (blocks) of ``block_size`` token slots. Each
sequence owns a block table, the list of its pages in order; a :class:`BlockAllocator` hands out
pages from a free list and counts references, so sequences that share a prefix share its pages
(:meth:`PagedKVCache.fork`) and a shared page is copied before it is written (copy-on-write).
:func:`paged_attention` reads keys and values through the block tables; :func:`contiguous_attention`
is the reference it must equal.
"""

from __future__ import annotations

import math

import torch

from attnbook.checks import check_positive_int, check_tensor

__all__ = [
    "BlockAllocator",
    "PagedKVCache",
    "padded_attention",
    "paged_attention",
    "contiguous_attention",
]


class BlockAllocator:
    """Pages 0 .. num_blocks−1: a free list and a reference count per page. Chapter 10."""

    def __init__(self, num_blocks: int):
        check_positive_int("num_blocks", num_blocks)
        self.free = list(range(num_blocks - 1, -1, -1))  # pop() hands out page 0 first
        self.refs = [0] * num_blocks

    def allocate(self) -> int:
        if not self.free:
            raise MemoryError("the KV cache is out of pages: free a sequence or add pages")
        page = self.free.pop()
        self.refs[page] = 1
        return page

    def share(self, page: int) -> int:
        if self.refs[page] < 1:
            raise ValueError(f"page {page} is not allocated")
        self.refs[page] += 1
        return page

    def release(self, page: int) -> None:
        if self.refs[page] < 1:
            raise ValueError(f"page {page} is not allocated")
        self.refs[page] -= 1
        if self.refs[page] == 0:
            self.free.append(page)

    @property
    def used(self) -> int:
        return len(self.refs) - len(self.free)


class PagedKVCache:
    """Keys and values of many sequences in pages (num_blocks, kv_heads, block_size, d_k). Ch. 10.

    One layer's cache (a model keeps one per layer, all sharing the block tables).
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype=torch.float32,
        device="cpu",
    ):
        for name, value in [
            ("block_size", block_size),
            ("kv_heads", kv_heads),
            ("head_dim", head_dim),
        ]:
            check_positive_int(name, value)
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        shape = (num_blocks, kv_heads, block_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.tables: dict[object, list[int]] = {}
        self.lengths: dict[object, int] = {}

    def _check_seq(self, seq) -> None:
        if seq not in self.tables:
            raise KeyError(f"unknown sequence {seq!r}")

    def add(self, seq) -> None:
        """Start an empty sequence ``seq``."""
        if seq in self.tables:
            raise ValueError(f"sequence {seq!r} exists already")
        self.tables[seq], self.lengths[seq] = [], 0

    def fork(self, parent, child) -> None:
        """``child`` starts as a copy of ``parent`` that shares all its pages (no copy yet)."""
        self._check_seq(parent)
        self.add(child)
        self.tables[child] = [self.allocator.share(p) for p in self.tables[parent]]
        self.lengths[child] = self.lengths[parent]

    def free(self, seq) -> None:
        self._check_seq(seq)
        for page in self.tables.pop(seq):
            self.allocator.release(page)
        del self.lengths[seq]

    def append(self, seq, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write n new tokens' keys and values, each (kv_heads, n, d_k), at the end of ``seq``."""
        self._check_seq(seq)
        check_tensor("k", k, ndim=3)
        if k.shape != v.shape or k.shape[0] != self.k.shape[1] or k.shape[2] != self.k.shape[3]:
            raise ValueError(
                f"k and v must both be (kv_heads={self.k.shape[1]}, n, d_k={self.k.shape[3]}), "
                f"got {tuple(k.shape)} and {tuple(v.shape)}"
            )
        table, b = self.tables[seq], self.block_size
        for i in range(k.shape[1]):
            pos = self.lengths[seq]
            if pos % b == 0:
                table.append(self.allocator.allocate())
            page = table[-1]
            if self.allocator.refs[page] > 1:  # copy-on-write: the page is shared
                fresh = self.allocator.allocate()
                self.k[fresh], self.v[fresh] = self.k[page], self.v[page]
                self.allocator.release(page)
                table[-1] = page = fresh
            self.k[page, :, pos % b], self.v[page, :, pos % b] = k[:, i], v[:, i]
            self.lengths[seq] = pos + 1

    def gather(self, seq) -> tuple[torch.Tensor, torch.Tensor]:
        """The contiguous keys and values of ``seq``, each (kv_heads, T, d_k): the reference."""
        self._check_seq(seq)
        table, n = self.tables[seq], self.lengths[seq]
        k = self.k[table].transpose(0, 1).flatten(1, 2)[:, :n]
        v = self.v[table].transpose(0, 1).flatten(1, 2)[:, :n]
        return k, v

    def block_table(self, seqs) -> torch.Tensor:
        """Padded block tables of ``seqs``: (B, max pages) page ids, unused entries 0."""
        width = max(len(self.tables[s]) for s in seqs)
        rows = [self.tables[s] + [0] * (width - len(self.tables[s])) for s in seqs]
        return torch.tensor(rows, dtype=torch.long, device=self.k.device)

    def reserved_slots(self) -> int:
        """Token slots in pages in use (the memory a server holds for the live sequences)."""
        return self.allocator.used * self.block_size


def padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Causal attention of each row's last N tokens over a padded cache. Chapter 10.

    q: (B, H, N, d_k) at positions T_b − N .. T_b − 1; k, v: (B, kv_heads, S, d_k) with row b's
    T_b = ``lengths[b]`` tokens first (S >= max T_b); slots past T_b and later keys are masked.
    """
    B, H, N, d = q.shape
    group = H // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    slot = torch.arange(k.shape[2], device=q.device)
    query_pos = lengths[:, None] - N + torch.arange(N, device=q.device)  # (B, N)
    allowed = slot[None, None, :] <= query_pos[:, :, None]  # (B, N, S): causal, within T_b
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    return scores.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1) @ v


def paged_attention(q: torch.Tensor, cache: PagedKVCache, seqs) -> torch.Tensor:
    """Causal attention of each sequence's last N tokens, read through the block table. Chapter 10.

    q: (B, H, N, d_k), row b the queries of sequence ``seqs[b]`` at its positions T_b − N .. T_b − 1
    (lengths may differ: a ragged batch). Keys and values are gathered page by page into
    (B, kv_heads, pages·block_size, d_k), then :func:`padded_attention`.
    """
    check_tensor("q", q, ndim=4)
    seqs = list(seqs)
    if len(seqs) != q.shape[0]:
        raise ValueError(f"q has {q.shape[0]} rows but {len(seqs)} sequences were given")
    for s in seqs:
        cache._check_seq(s)
        if cache.lengths[s] < q.shape[2]:
            raise ValueError(
                f"sequence {s!r} holds {cache.lengths[s]} tokens, fewer than N={q.shape[2]}"
            )
    table = cache.block_table(seqs)  # (B, P)
    k = cache.k[table].permute(0, 2, 1, 3, 4).flatten(2, 3)  # (B, kv_heads, P·b, d_k)
    v = cache.v[table].permute(0, 2, 1, 3, 4).flatten(2, 3)
    lengths = torch.tensor([cache.lengths[s] for s in seqs], device=q.device)
    return padded_attention(q, k, v, lengths)


def contiguous_attention(q: torch.Tensor, keys: list, values: list) -> torch.Tensor:
    """The reference: each row's causal attention over its own contiguous cache. Chapter 10.

    q: (B, H, N, d_k); keys[b], values[b]: (kv_heads, T_b, d_k). Returns (B, H, N, d_k).
    """
    check_tensor("q", q, ndim=4)
    B, H, N, d = q.shape
    out = []
    for b in range(B):
        k, v = keys[b], values[b]
        group = H // k.shape[0]
        k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
        T = k.shape[1]
        allowed = torch.ones(N, T, dtype=torch.bool, device=q.device).tril(diagonal=T - N)
        scores = (q[b] @ k.transpose(-1, -2)) / math.sqrt(d)
        out.append(scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v)
    return torch.stack(out)
