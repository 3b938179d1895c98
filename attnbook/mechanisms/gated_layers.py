"""The delta rule, Gated DeltaNet and GLA as GPT token mixers (chapters 4, 5 and 8).

As in DeltaNet (Yang et al. 2024), Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025) and GLA (Yang et
al. 2024), everything the recurrence reads is a projection of the layer's input x: (B, N, d):

* q, k, v: linear maps to H heads of width d/H; q and k L2-normalised per head (so the delta
  rule's transition I − β k kᵀ has eigenvalues in [0, 1]);
* β = σ(W_β x), one per head and token, in (0, 1) (delta rules);
* the log forget gate log σ(W_g x + 4) / 16, as GLA parameterises it (τ = 16), one per head
  (Gated DeltaNet's g) or one per head and key channel (GLA's gk); the constant 4 starts the
  gates near 1 (a decay of about 0.999 per token).

The heads' outputs are concatenated and projected back to d. The papers' output gate and output
norm are left out (one change at a time); a short convolution in front is the ``short_conv``
option of :class:`attnbook.models.gpt.GPTConfig`, as for every mixer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from attnbook.checks import check_positive_int
from attnbook.mechanisms.delta import delta_chunked
from attnbook.mechanisms.gla import CHUNK_SIZE as GLA_CHUNK_SIZE
from attnbook.mechanisms.gla import gla_chunked
from attnbook.mechanisms.linear import CHUNK_SIZE as DELTA_CHUNK_SIZE

__all__ = ["GatedRecurrentLayer", "delta_layer", "gated_delta_layer", "gla_layer", "KINDS"]

#: the recurrences a :class:`GatedRecurrentLayer` runs
KINDS = ("delta", "gated_delta", "gla")
_GATE_TAU = 16.0
_GATE_BIAS = 4.0


class GatedRecurrentLayer(nn.Module):
    """x: (B, N, d) -> (B, N, d) through the chunked delta rule, Gated DeltaNet or GLA, causal.

    ``kind``: one of :data:`KINDS`; ``heads`` must divide ``d_model``. Chapter 5 trains it.
    """

    def __init__(
        self, d_model: int, heads: int, kind: str, *, chunk_size: int = 16, bias: bool = True
    ):
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("heads", heads)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.heads, self.kind = heads, kind
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.beta = nn.Linear(d_model, heads) if kind != "gla" else None
        gate_width = {"delta": 0, "gated_delta": heads, "gla": d_model}[kind]
        self.gate = nn.Linear(d_model, gate_width) if gate_width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, d = x.shape
        H = self.heads

        def heads(t):  # (B, N, H·w) -> (B, H, N, w)
            return t.reshape(B, N, H, -1).transpose(1, 2)

        q, k, v = (heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q / q.shape[-1] ** 0.5
        log_gate = None
        if self.gate is not None:
            log_gate = heads(F.logsigmoid(self.gate(x) + _GATE_BIAS) / _GATE_TAU)
        if self.kind == "gla":
            o, _ = gla_chunked(q, k, v, log_gate, self.chunk_size)
        else:
            beta = torch.sigmoid(self.beta(x)).transpose(1, 2)  # (B, H, N)
            g = None if log_gate is None else log_gate[..., 0]
            o, _ = delta_chunked(q, k, v, beta, g, self.chunk_size)
        return self.out(o.transpose(1, 2).reshape(B, N, d))


def _layer(config, kind: str) -> GatedRecurrentLayer:
    default = GLA_CHUNK_SIZE if kind == "gla" else DELTA_CHUNK_SIZE
    chunk_size = config.mixer_options.get("chunk_size", default)
    return GatedRecurrentLayer(
        config.d_model, config.n_head, kind, chunk_size=chunk_size, bias=config.bias
    )


def delta_layer(config) -> GatedRecurrentLayer:
    """The DeltaNet layer of a :class:`~attnbook.models.gpt.GPTConfig` (chapter 5)."""
    return _layer(config, "delta")


def gated_delta_layer(config) -> GatedRecurrentLayer:
    """The Gated DeltaNet layer of a :class:`~attnbook.models.gpt.GPTConfig` (chapter 5)."""
    return _layer(config, "gated_delta")


def gla_layer(config) -> GatedRecurrentLayer:
    """The GLA layer of a :class:`~attnbook.models.gpt.GPTConfig` (chapter 5)."""
    return _layer(config, "gla")
