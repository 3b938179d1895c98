"""A small GPT with a pluggable token-mixing layer (chapters 3, 5, 7 and 8).

Token + position embeddings, ``n_layer`` pre-norm blocks (mixer, then MLP), a final LayerNorm and a
head tied to the token embedding. ``short_conv`` puts a short causal depthwise convolution in front
of every mixer, as Zoology's backbones do (chapter 5). The mixer is any method of
:func:`attnbook.methods` (wrapped in multi-head self-attention) or one of the other mixers of the
registry (:func:`attnbook.registry.mixers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from attnbook.checks import check_bool, check_nonnegative_int, check_positive_int
from attnbook.mechanisms.dense import MultiHeadSelfAttention
from attnbook.registry import method_info, mixer_info, mixer_names, mixers

__all__ = ["GPTConfig", "GPT", "Block", "ShortConv", "make_mixer"]


@dataclass
class GPTConfig:
    """Shape of a :class:`GPT`. ``d_ff`` defaults to 4·d_model; ``short_conv`` is the kernel size of
    the causal depthwise convolution in front of each mixer (0: none). ``layer_mixers``: one mixer
    name per layer, for hybrids (chapter 5: ``("dense", "gated_delta_layer")``); empty (default):
    every layer is ``mixer``. ``mixer_options`` go to every layer, so each must accept them."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int | None = None
    mixer: str = "dense"
    mixer_options: dict = field(default_factory=dict)
    dropout: float = 0.0
    bias: bool = True
    short_conv: int = 0
    layer_mixers: tuple = ()

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            check_positive_int(name, getattr(self, name))
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        self.d_ff = 4 * self.d_model if self.d_ff is None else check_positive_int("d_ff", self.d_ff)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        check_bool("bias", self.bias)
        check_nonnegative_int("short_conv", self.short_conv)  # a kernel size, 0 for none
        if not isinstance(self.layer_mixers, (tuple, list)):
            raise TypeError(
                "layer_mixers must be a tuple of mixer names, got "
                f"{type(self.layer_mixers).__name__}"
            )
        self.layer_mixers = tuple(self.layer_mixers)
        if self.layer_mixers and len(self.layer_mixers) != self.n_layer:
            raise ValueError(
                f"layer_mixers must name one mixer per layer ({self.n_layer}), "
                f"got {len(self.layer_mixers)}: {self.layer_mixers}"
            )
        for name in {self.mixer, *self.layer_mixers}:
            if name not in mixer_names():
                raise ValueError(f"mixer must be one of {mixer_names()}, got {name!r}")
            info = mixer_info(name) if name in mixers() else method_info(name)
            info.check_options(self.mixer_options)

    def mixer_of(self, layer: int) -> str:
        """The mixer of layer ``layer`` (0-based)."""
        return self.layer_mixers[layer] if self.layer_mixers else self.mixer


def make_mixer(config: GPTConfig, name: str | None = None) -> nn.Module:
    """The causal token-mixing layer named ``name`` (default ``config.mixer``)."""
    name = config.mixer if name is None else name
    if name in mixers():
        return mixer_info(name).fn(config)
    return MultiHeadSelfAttention(
        config.d_model,
        config.n_head,
        method=name,
        causal=True,
        bias=config.bias,
        **config.mixer_options,
    )


class ShortConv(nn.Module):
    """Causal depthwise convolution over the sequence: x (B, N, d) -> (B, N, d), position i mixing
    positions i - k + 1 .. i of its own channel. Chapter 5: with it, one mixing layer sees each
    token
    together with the one before it (a key beside its value), which recall needs."""

    def __init__(self, d_model: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(
            d_model, d_model, kernel_size, groups=d_model, padding=kernel_size - 1, bias=bias
        )

    def forward(self, x):
        return self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)


class Block(nn.Module):
    """Pre-norm block: x + mixer(conv(LN(x))) (conv: :class:`ShortConv` if ``short_conv``, else the
    identity), then x + MLP(LN(x))."""

    def __init__(self, config: GPTConfig, mixer: str | None = None):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.conv = (
            ShortConv(config.d_model, config.short_conv, config.bias)
            if config.short_conv
            else nn.Identity()
        )
        self.mixer = make_mixer(config, mixer)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff, bias=config.bias),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model, bias=config.bias),
            nn.Dropout(config.dropout),
        )

    def forward(self, x):
        x = x + self.mixer(self.conv(self.ln1(x)))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only language model. idx: (B, N) token ids -> logits (B, N, |V|)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config, config.mixer_of(i)) for i in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tok.weight
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters, each shared tensor counted once (the tied head is not counted twice)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: (B, N) ints; targets: (B, N) ints (-100
        = ignore). Returns (logits, loss or None)."""
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            raise TypeError(
                f"idx must be a (B, N) torch.long tensor, got {getattr(idx, 'dtype', type(idx))}"
            )
        B, N = idx.shape
        if not 1 <= N <= self.config.block_size:
            raise ValueError(
                f"idx length must be in 1..block_size={self.config.block_size}, got {N}"
            )
        x = self.drop(self.tok(idx) + self.pos(torch.arange(N, device=idx.device)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(
                    f"targets must have shape {tuple(idx.shape)} like idx, got "
                    f"{tuple(targets.shape)}"
                )
            loss = F.cross_entropy(
                logits.reshape(B * N, -1), targets.reshape(B * N), ignore_index=-100
            )
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after idx: (B, N); returns (B, N + max_new_tokens)."""
        check_positive_int("max_new_tokens", max_new_tokens)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            probs = torch.softmax(logits[:, -1] / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
