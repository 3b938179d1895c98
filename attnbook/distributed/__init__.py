"""Attention across devices: the sequence split over P ranks of torch.distributed (chapter 9).

``ring_attention`` (K/V blocks travel around a ring), ``allgather_attention`` (every rank gathers
K/V) and ``ulysses_attention`` (all-to-all from a sequence split to a head split) compute exact
softmax attention on this rank's shard, forward and backward, with gloo on CPU and NCCL on CUDA.
``Layout`` says which positions each rank holds (contiguous, zig-zag, striped); ``launch`` runs a
function on P local processes from a notebook; ``python -m attnbook.distributed.check`` under
torchrun checks a cluster. Importing this package starts nothing.
"""

from .allgather import allgather_attention
from .common import CommStats, DistributedAttentionError, backend_for
from .launch import LaunchError, launch
from .layout import LAYOUTS, Layout, make_layout
from .ring import ring_attention
from .ulysses import ulysses_attention

__all__ = [
    "ring_attention",
    "allgather_attention",
    "ulysses_attention",
    "Layout",
    "LAYOUTS",
    "make_layout",
    "CommStats",
    "DistributedAttentionError",
    "LaunchError",
    "backend_for",
    "launch",
]
