"""Multi-head latent attention, MLA (DeepSeek-AI, 2024), with its latent KV cache (chapter 10).

Each token's keys and values are compressed into one latent c = W_DKV·x of width d_c; the
heads' keys and values are up-projections of it, k_h = W_UK,h·c and v_h = W_UV,h·c. Positions
enter through a separate, decoupled RoPE key of width d_h^R shared by all heads, so the cache
holds only (d_c + d_h^R) numbers per token and layer. Two decode forms:

- **naive**: up-project every cached latent to keys and values, then attend as usual;
- **absorbed**: fold W_UK,h into the query (q̃_h = W_UK,hᵀ·q_h scores latents directly) and W_UV,h
  into the output projection; no per-head key or value is ever formed.

Both give the same output (tests); the absorbed form is how MLA is served. Queries are plain
projections of x here (DeepSeek-V2 also compresses them, which changes no cache).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnbook.checks import check_nonnegative_int, check_positive_int, check_tensor
from attnbook.models.decoder import Decoder

__all__ = ["rope", "LatentCache", "MLAttention", "MLADecoder"]


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of the last (even) dimension. x: (..., N, r), positions: (N,)."""
    r = x.shape[-1]
    if r % 2:
        raise ValueError(f"the rotary width must be even, got {r}")
    freq = base ** (-torch.arange(0, r, 2, dtype=x.dtype, device=x.device) / r)
    angle = positions.to(x.dtype)[:, None] * freq  # (N, r/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class LatentCache:
    """MLA's cache: per layer the latents (B, T, d_c) and the shared RoPE keys (B, T, d_h^R)."""

    def __init__(self, layers: int):
        check_positive_int("layers", layers)
        self.latents: list[torch.Tensor | None] = [None] * layers
        self.rope_keys: list[torch.Tensor | None] = [None] * layers

    def append(self, layer: int, c: torch.Tensor, k_r: torch.Tensor):
        if self.latents[layer] is not None:
            c = torch.cat([self.latents[layer], c], dim=1)
            k_r = torch.cat([self.rope_keys[layer], k_r], dim=1)
        self.latents[layer], self.rope_keys[layer] = c, k_r
        return c, k_r

    def past(self, layer: int) -> int:
        return 0 if self.latents[layer] is None else self.latents[layer].shape[1]

    @property
    def tokens(self) -> int:
        return self.past(len(self.latents) - 1)

    def nbytes(self) -> int:
        """Bytes held by the cached tensors (measured, not computed from a formula)."""
        held = [t for t in self.latents + self.rope_keys if t is not None]
        return sum(t.numel() * t.element_size() for t in held)


class MLAttention(nn.Module):
    """Causal multi-head latent attention. x: (B, N, d) -> (B, N, d). Chapter 10.

    ``heads`` H query heads of width ``head_dim`` d_h (content) plus ``rope_dim`` d_h^R (position),
    a latent of width ``latent_dim`` d_c. ``absorbed=True`` uses the absorbed form (needs no
    per-head keys or values); with a :class:`LatentCache` the N new tokens also see the cached ones.
    """

    def __init__(self, d_model: int, heads: int, head_dim: int, latent_dim: int, rope_dim: int):
        super().__init__()
        for name, value in [
            ("d_model", d_model),
            ("heads", heads),
            ("head_dim", head_dim),
            ("latent_dim", latent_dim),
        ]:
            check_positive_int(name, value)
        check_nonnegative_int("rope_dim", rope_dim)
        if rope_dim % 2:
            raise ValueError(f"rope_dim must be even (pairs are rotated), got {rope_dim}")
        self.heads, self.head_dim, self.latent_dim, self.rope_dim = (
            heads,
            head_dim,
            latent_dim,
            rope_dim,
        )
        self.q = nn.Linear(d_model, heads * (head_dim + rope_dim), bias=False)
        self.down = nn.Linear(d_model, latent_dim, bias=False)  # W_DKV
        self.up_k = nn.Linear(latent_dim, heads * head_dim, bias=False)  # W_UK
        self.up_v = nn.Linear(latent_dim, heads * head_dim, bias=False)  # W_UV
        self.k_rope = nn.Linear(d_model, rope_dim, bias=False) if rope_dim else None  # W_KR
        self.out = nn.Linear(heads * head_dim, d_model, bias=False)

    def _queries(self, x: torch.Tensor, positions: torch.Tensor):
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.heads, self.head_dim + self.rope_dim).transpose(1, 2)
        q_c, q_r = q.split([self.head_dim, self.rope_dim], dim=-1)
        return q_c, rope(q_r, positions)  # (B, H, N, d_h), (B, H, N, d_h^R)

    def forward(
        self,
        x: torch.Tensor,
        cache: LatentCache | None = None,
        layer: int = 0,
        *,
        absorbed: bool = False,
    ) -> torch.Tensor:
        check_tensor("x", x, ndim=3)
        B, N, _ = x.shape
        past = 0 if cache is None else cache.past(layer)
        positions = torch.arange(past, past + N, device=x.device)
        c = self.down(x)  # (B, N, d_c): all that is cached, with the RoPE key
        k_r = (
            rope(self.k_rope(x), positions)
            if self.rope_dim
            else x.new_zeros(B, N, 0)  # (B, N, d_h^R)
        )
        if cache is not None:
            c, k_r = cache.append(layer, c, k_r)
        q_c, q_r = self._queries(x, positions)
        H, dh, T = self.heads, self.head_dim, c.shape[1]
        rope_scores = q_r @ k_r.unsqueeze(1).transpose(-1, -2)  # (B, H, N, T)
        if absorbed:
            w_uk = self.up_k.weight.view(H, dh, self.latent_dim)  # k_h = W_UK,h · c
            q_latent = q_c @ w_uk  # (B, H, N, d_c): W_UK,hᵀ q_h
            content = q_latent @ c.unsqueeze(1).transpose(-1, -2)
        else:
            k_c = self.up_k(c).view(B, T, H, dh).transpose(1, 2)  # (B, H, T, d_h)
            content = q_c @ k_c.transpose(-1, -2)
        scores = (content + rope_scores) / math.sqrt(dh + self.rope_dim)
        allowed = torch.ones(N, T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        p = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        if absorbed:
            mixed = p @ c.unsqueeze(1)  # (B, H, N, d_c): attention over the latents
            w_uv = self.up_v.weight.view(H, dh, self.latent_dim)
            w_o = self.out.weight.view(-1, H, dh)  # (d, H, d_h)
            folded = torch.einsum("dhk,hkc->hcd", w_o, w_uv)  # W_O,h · W_UV,h: (H, d_c, d)
            return torch.einsum("bhnc,hcd->bnd", mixed, folded)
        v = self.up_v(c).view(B, T, H, dh).transpose(1, 2)
        return self.out((p @ v).transpose(1, 2).reshape(B, N, H * dh))


class MLADecoder(Decoder):
    """Token embedding, L pre-norm layers (MLA + MLP), tied head; positions by RoPE only
    (:class:`~attnbook.models.decoder.Decoder`'s parts, MLA in place of its attention).

    idx: (B, N) -> logits (B, N, |V|). Chapter 10.
    """

    def __init__(
        self,
        vocab_size: int,
        layers: int,
        d_model: int,
        heads: int,
        head_dim: int,
        latent_dim: int,
        rope_dim: int,
    ):
        nn.Module.__init__(self)
        self._build(
            vocab_size,
            layers,
            d_model,
            lambda: MLAttention(d_model, heads, head_dim, latent_dim, rope_dim),
        )

    def new_cache(self) -> LatentCache:
        return LatentCache(len(self.att))

    def forward(
        self, idx: torch.Tensor, cache: LatentCache | None = None, *, absorbed: bool = False
    ) -> torch.Tensor:
        self._check_idx(idx)
        return self._layers(self.tok(idx), cache, absorbed=absorbed)
