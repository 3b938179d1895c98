"""Gradient checkpointing every k layers (chapter 3, Memory).

Only the input of each segment of k layers is kept after the forward pass; the
backward pass recomputes one segment at a time {Chen et al., 2016}.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from attnbook.checks import check_nonnegative_int, check_positive_int, check_tensor
from attnbook.models.gpt import Block, GPTConfig

__all__ = ["CheckpointedStack"]


class CheckpointedStack(nn.Module):
    """L ``attnbook.models.gpt.Block`` layers (or any
    modules, see :meth:`of`); x: (B, N, d) -> (B, N, d).

    ``every=k`` runs each segment of k layers under ``torch.utils.checkpoint``;
    ``every=0`` stores every activation (no checkpointing).
    """

    def __init__(
        self,
        layers: int,
        d_model: int,
        heads: int,
        block_size: int,
        every: int = 0,
        mixer: str = "dense",
    ):
        super().__init__()
        check_positive_int("layers", layers)
        config = GPTConfig(
            vocab_size=1,
            block_size=block_size,
            n_layer=layers,
            n_head=heads,
            d_model=d_model,
            mixer=mixer,
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(layers))
        self.every = every

    @classmethod
    def of(cls, modules, every: int = 0) -> CheckpointedStack:
        """A stack of any modules mapping (B, N, d) -> (B,
        N, d), e.g. to study checkpointing in isolation."""
        stack = cls.__new__(cls)
        nn.Module.__init__(stack)
        stack.blocks = nn.ModuleList(modules)
        if len(stack.blocks) == 0:
            raise ValueError("modules must hold at least one module")
        stack.every = every
        return stack

    @property
    def every(self) -> int:
        return self._every

    @every.setter
    def every(self, k: int) -> None:
        check_nonnegative_int("every", k)
        if k > len(self.blocks):
            raise ValueError(
                f"every must be at most the number of layers ({len(self.blocks)}), got {k}"
            )
        self._every = k

    @staticmethod
    def _run(x, *blocks):
        for block in blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, ndim=3)
        if self.every == 0:
            return self._run(x, *self.blocks)
        for start in range(0, len(self.blocks), self.every):
            segment = self.blocks[start : start + self.every]
            x = checkpoint(self._run, x, *segment, use_reentrant=False)
        return x
