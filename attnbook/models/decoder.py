"""A decoder with a KV cache, for multi-head, multi-query and grouped-query attention (chapter 3).

Each layer projects queries to H heads and keys/values to ``kv_heads`` heads
(H for multi-head, 1 for multi-query, in between for grouped-query attention);
decoding appends one token's keys and values per layer to the cache.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbook.checks import check_positive_int
from attnbook.mechanisms.dense import attention_weights

__all__ = ["KVCache", "CachedAttention", "Decoder"]


class KVCache:
    """Per-layer keys and values, each (B, kv_heads, T, d_k), grown one step at a time."""

    def __init__(self, layers: int):
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    @property
    def tokens(self) -> int:
        """Tokens cached (in the last layer, which is updated last)."""
        return 0 if self.keys[-1] is None else self.keys[-1].shape[2]

    def nbytes(self) -> int:
        """Bytes held by the cached tensors (measured, not computed from a formula)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)


class CachedAttention(nn.Module):
    """Causal self-attention with ``kv_heads`` key/value heads shared by groups of query heads.

    x: (B, N, d) -> (B, N, d). With a cache, the N new tokens attend to the cached ones too.
    """

    def __init__(self, d_model: int, heads: int, kv_heads: int | None = None):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("heads", heads)
        kv_heads = heads if kv_heads is None else check_positive_int("kv_heads", kv_heads)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        if heads % kv_heads:
            raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
        self.heads, self.kv_heads, self.d_k = heads, kv_heads, d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * kv_heads * self.d_k)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.heads, self.d_k).transpose(1, 2)
        k, v = self.kv(x).view(B, N, 2, self.kv_heads, self.d_k).permute(2, 0, 3, 1, 4)
        past = 0
        if cache is not None:
            past = 0 if cache.keys[layer] is None else cache.keys[layer].shape[2]
            k, v = cache.append(layer, k, v)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        # query i (absolute position past + i) may see keys 0 .. past + i
        allowed = torch.ones(N, past + N, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = attention_weights(q, k, mask=allowed) @ v
        return self.out(y.transpose(1, 2).reshape(B, N, self.heads * self.d_k))


class Decoder(nn.Module):
    """Token embedding, L pre-norm layers (cached attention
    + MLP), tied head. idx: (B, N) -> logits (B, N, |V|)."""

    def __init__(
        self,
        vocab_size: int,
        layers: int,
        d_model: int,
        heads: int,
        kv_heads: int | None = None,
        max_len: int = 4096,
    ):
        super().__init__()
        attention = lambda: CachedAttention(d_model, heads, kv_heads)  # noqa: E731
        self._build(vocab_size, layers, d_model, attention, max_len=max_len)

    def _build(
        self, vocab_size: int, layers: int, d_model: int, attention, max_len: int | None = None
    ) -> None:
        """The parts every decoder of the book shares: token embedding (and learned positions up
        to ``max_len`` when given), ``layers`` pre-norm layers of ``attention()`` and an MLP, the
        final norm and the tied head (chapter 10's MLA decoder builds itself from them too)."""
        check_positive_int("vocab_size", vocab_size)
        check_positive_int("layers", layers)
        self.tok = nn.Embedding(vocab_size, d_model)
        if max_len is not None:
            self.max_len = check_positive_int("max_len", max_len)
            self.pos = nn.Embedding(max_len, d_model)
        self.ln1 = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.att = nn.ModuleList(attention() for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
            )
            for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight

    @staticmethod
    def _check_idx(idx) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            raise TypeError(
                f"idx must be a (B, N) torch.long tensor, got {getattr(idx, 'dtype', type(idx))}"
            )

    def _layers(self, x: torch.Tensor, cache, **options) -> torch.Tensor:
        """The layers, the final norm and the head on embeddings x: (B, N, d) -> logits."""
        for i, (ln1, att, ln2, mlp) in enumerate(zip(self.ln1, self.att, self.ln2, self.mlp)):
            x = x + att(ln1(x), cache, i, **options)
            x = x + mlp(ln2(x))
        return self.head(self.ln_f(x))

    def new_cache(self) -> KVCache:
        return KVCache(len(self.att))

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        self._check_idx(idx)
        start = cache.tokens if cache is not None else 0
        if start + idx.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length {start + idx.shape[1]} exceeds max_len={self.max_len}"
            )
        x = self.tok(idx) + self.pos(torch.arange(start, start + idx.shape[1], device=idx.device))
        return self._layers(x, cache)
