"""What every distributed form shares (chapter 9, Attention across devices): the process-group
backend for a device, the per-rank byte counter, the check that all ranks were handed consistent
inputs, and point-to-point transfers that fail with a clear error instead of hanging.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .layout import Layout, make_layout

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CommStats",
    "DistributedAttentionError",
    "Plan",
    "backend_for",
    "make_plan",
    "post",
    "wait",
    "nbytes",
]

DEFAULT_TIMEOUT_S = 60.0
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
_METHODS = ["ring", "allgather", "ulysses"]


class DistributedAttentionError(RuntimeError):
    """A collective or transfer failed or timed out: a peer rank died, stalled or disagreed."""


def backend_for(device) -> str:
    """The torch.distributed backend for ``device``: NCCL on CUDA, gloo on CPU (chapter 9)."""
    device = torch.device(device)
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise ValueError(f"device must be 'cpu' or 'cuda' for distributed attention, got {device}")


def nbytes(t: torch.Tensor) -> int:
    """Bytes of tensor ``t``'s elements (what a transfer of ``t`` moves)."""
    return t.numel() * t.element_size()


@dataclass
class CommStats:
    """Bytes this rank sent and received, counted where each transfer is posted (chapter 9).

    ``sent_bytes``/``recv_bytes`` count the payload (q, k, v, outputs and their gradients);
    ``control_bytes`` the small metadata exchange that checks the inputs; ``steps`` the compute
    steps.
    """

    sent_bytes: int = 0
    recv_bytes: int = 0
    messages: int = 0
    control_bytes: int = 0
    steps: int = 0
    phases: dict = field(default_factory=dict)

    def add(self, phase: str, sent: int, received: int, messages: int = 1) -> None:
        """Count one posted transfer (or collective) of ``phase`` ("forward" or "backward")."""
        self.sent_bytes += sent
        self.recv_bytes += received
        self.messages += messages
        s, r = self.phases.get(phase, (0, 0))
        self.phases[phase] = (s + sent, r + received)


@dataclass(frozen=True)
class Plan:
    """One call's rank, world, layout and options, agreed by every rank."""

    method: str
    rank: int
    world_size: int
    layout: Layout
    causal: bool
    group: object
    stats: CommStats
    timeout: datetime.timedelta

    @property
    def next(self) -> int:
        return (
            dist.get_global_rank(self.group, (self.rank + 1) % self.world_size)
            if self.group
            else (self.rank + 1) % self.world_size
        )

    @property
    def prev(self) -> int:
        return (
            dist.get_global_rank(self.group, (self.rank - 1) % self.world_size)
            if self.group
            else (self.rank - 1) % self.world_size
        )

    def fail(self, what: str, error: Exception) -> DistributedAttentionError:
        return DistributedAttentionError(
            f"{self.method} attention, rank {self.rank} of {self.world_size}: {what} failed or "
            "timed out after "
            f"{self.timeout.total_seconds():g} s; a peer rank has probably died or stopped "
            f"({error})"
        )


def _check_shapes(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(
                f"{name} must be a 4-D tensor (B, H, N_local, D), got "
                f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must have the (B, H, N_local) of q {tuple(q.shape[:3])}, got {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        raise ValueError(
            f"q, k, v must share one floating dtype of {_DTYPES}, got {q.dtype}, {k.dtype}, "
            f"{v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")


#: The fields every rank sends in :func:`make_plan`, in order; N_local ("") may differ by rank.
_AGREED = ("batch B", "heads H", "", "head dim D", "value dim Dv", "dtype", "causal", "method")


def _check_setup(method: str, causal, timeout_s) -> None:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"{method} attention needs torch.distributed initialised "
            "(torchrun, or attnbook.distributed.launch.launch)"
        )
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")


def _exchange(method: str, mine, group, stats, timeout_s: float) -> list:
    """Every rank's ``mine`` (an all-gather, counted as control bytes), or a named error."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    everyone = [torch.empty_like(mine) for _ in range(world)]
    work = dist.all_gather(everyone, mine, group=group, async_op=True)
    try:
        work.wait(timeout=datetime.timedelta(seconds=timeout_s))
    except RuntimeError as e:
        raise DistributedAttentionError(
            f"{method} attention, rank {rank}: exchanging input shapes failed or timed out "
            f"after {timeout_s:g} s; a peer rank has probably died ({e})"
        ) from e
    stats.control_bytes += 2 * (world - 1) * nbytes(mine)
    return everyone


def _shown(name: str, value: int):
    """A field of :data:`_AGREED` as the user passed it (the dtype and method by name)."""
    return _DTYPES[value] if name == "dtype" else _METHODS[value] if name == "method" else value


def _check_agreement(method: str, rank: int, mine, everyone) -> None:
    for r, theirs in enumerate(everyone):
        for i, name in enumerate(_AGREED):
            if name and int(theirs[i]) != int(mine[i]):
                raise ValueError(
                    f"{method} attention: rank {r} has {name} = {_shown(name, int(theirs[i]))} "
                    f"but rank {rank} has {_shown(name, int(mine[i]))}; every rank must pass the "
                    "same shapes, dtype and options"
                )


def make_plan(method: str, q, k, v, causal: bool, layout, group, stats, timeout_s: float) -> Plan:
    """Check this rank's inputs, agree with every rank on shapes, dtype and options, build the
    layout (chapter 9).

    Every rank sends its (B, H, N_local, D, Dv, dtype, causal, method) to all others (an all-gather
    of 8 integers, counted as control bytes); a rank whose entry differs gets a ValueError that
    names the rank and the field, on every rank, so that no rank goes on alone and hangs.
    """
    _check_shapes(q, k, v)
    _check_setup(method, causal, timeout_s)
    stats = CommStats() if stats is None else stats
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    B, H, n_local, D = q.shape
    fields = [B, H, n_local, D, v.shape[-1], _DTYPES.index(q.dtype), int(causal)]
    mine = torch.tensor([*fields, _METHODS.index(method)], dtype=torch.int64, device=q.device)
    everyone = _exchange(method, mine, group, stats, timeout_s)
    _check_agreement(method, rank, mine, everyone)
    sizes = [int(t[2]) for t in everyone]
    lay = make_layout(layout, sum(sizes), world)
    if sizes != lay.sizes:
        raise ValueError(
            f"{method} attention: the ranks hold {sizes} tokens, but the {lay.kind} layout of "
            f"n={lay.n} over {world} ranks gives them {lay.sizes}; shard with Layout.shard"
        )
    timeout = datetime.timedelta(seconds=timeout_s)
    return Plan(method, rank, world, lay, causal, group, stats, timeout)


def post(plan: Plan, phase: str, send=None, recv=None, src=None, dst=None, tag: int = 0):
    """Start sending ``send`` to ``dst`` and receiving
    into ``recv`` from ``src`` (either may be None).

    Messages between two ranks are matched in the order they are posted, per ``tag``. Counts the
    bytes in ``plan.stats`` under ``phase`` and returns the pending works for :func:`wait`.
    """
    ops = []
    if send is not None:
        ops.append(dist.P2POp(dist.isend, send, dst, group=plan.group, tag=tag))
    if recv is not None:
        ops.append(dist.P2POp(dist.irecv, recv, src, group=plan.group, tag=tag))
    if not ops:
        return []
    plan.stats.add(
        phase,
        nbytes(send) if send is not None else 0,
        nbytes(recv) if recv is not None else 0,
        messages=int(send is not None),
    )
    return dist.batch_isend_irecv(ops)


def wait(plan: Plan, works, what: str) -> None:
    """Wait for ``works``; raise :class:`DistributedAttentionError`
    naming ``what`` on failure or timeout."""
    for work in works:
        try:
            work.wait(timeout=plan.timeout)
        except RuntimeError as e:
            raise plan.fail(what, e) from e
