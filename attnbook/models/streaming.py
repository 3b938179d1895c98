"""Streaming decode in constant memory: a sliding-window KV cache with attention sinks (chapter 10).

:class:`SinkCache` keeps the first ``sinks`` tokens and the last ``window`` tokens of every layer
and evicts the rest (Xiao et al., 2023, StreamingLLM); ``sinks=0`` is the plain sliding window.
It stands in for :class:`attnbook.models.decoder.KVCache` in a ``Decoder`` whose position
embedding is switched off (:func:`streaming_loss` needs a model without absolute positions, as
the evicted tokens' positions would otherwise be lost).
"""

from __future__ import annotations

import math

import torch

from attnbook.checks import check_nonnegative_int, check_positive_int
from attnbook.models.decoder import KVCache

__all__ = ["SinkCache", "streaming_loss"]


class SinkCache(KVCache):
    """KV cache of at most ``sinks + window`` tokens per layer: the first ``sinks`` and the last
    ``window`` seen. Keys/values (B, kv_heads, T, d_k). Chapter 10."""

    def __init__(self, layers: int, sinks: int, window: int):
        super().__init__(layers)
        self.sinks = check_nonnegative_int("sinks", sinks)
        self.window = check_positive_int("window", window)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        k, v = super().append(layer, k, v)  # attention sees the new tokens with the kept ones
        if k.shape[2] > self.sinks + self.window:
            keep = torch.cat(
                [
                    torch.arange(self.sinks, device=k.device),
                    torch.arange(k.shape[2] - self.window, k.shape[2], device=k.device),
                ]
            )
            self.keys[layer], self.values[layer] = k[:, :, keep], v[:, :, keep]
        return k, v


@torch.no_grad()
def streaming_loss(model, stream: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, list[int]]:
    """Next-token loss (nats) at every position of ``stream`` (B, T), decoding one token at a time
    through ``cache``; and the cache's measured bytes after each step. Chapter 10.

    Returns the (T − 1,) losses averaged over the batch and the list of cache sizes in bytes.
    """
    if not isinstance(stream, torch.Tensor) or stream.dtype != torch.long or stream.dim() != 2:
        raise TypeError("stream must be a (B, T) torch.long tensor")
    if stream.shape[1] < 2:
        raise ValueError(f"stream must hold at least 2 tokens, got {stream.shape[1]}")
    losses, sizes = [], []
    for t in range(stream.shape[1] - 1):
        logits = model(stream[:, t : t + 1], cache)[:, -1]
        losses.append(torch.nn.functional.cross_entropy(logits, stream[:, t + 1]))
        sizes.append(cache.nbytes())
    if any(not math.isfinite(float(x)) for x in losses):
        raise FloatingPointError("a streaming loss is not finite")
    return torch.stack(losses), sizes
