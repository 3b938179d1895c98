"""All-gather context parallelism: every rank gathers the whole K/V, keeps its queries (chapter 9).

The form of the Llama 3 paper (Dubey et al. 2024): one all-gather of K and V (shards padded to the
largest), then local attention of this rank's queries to every key; the backward pass returns each
K/V gradient to its owner with a reduce-scatter. Memory per rank O(N): the whole K/V is resident.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .common import DEFAULT_TIMEOUT_S, make_plan, nbytes
from .local import LocalAttention

__all__ = ["allgather_attention", "gather_sequence"]


class _GatherSequence(torch.autograd.Function):
    """All-gather along the sequence (dim -2) of shards of unequal length; backward:
    reduce-scatter."""

    @staticmethod
    def forward(ctx, x, plan):
        sizes, P, longest = plan.layout.sizes, plan.world_size, max(plan.layout.sizes)
        padded = x.new_zeros(*x.shape[:-2], longest, x.shape[-1])
        padded[..., : x.shape[-2], :] = x
        parts = [torch.empty_like(padded) for _ in range(P)]
        work = dist.all_gather(parts, padded, group=plan.group, async_op=True)
        # a bandwidth-optimal (ring) all-gather moves P - 1 shards in and out of every rank
        plan.stats.add(
            "forward", (P - 1) * nbytes(padded), (P - 1) * nbytes(padded), messages=P - 1
        )
        _wait(plan, work, "all-gathering K/V")
        ctx.plan = plan
        return torch.cat([part[..., :size, :] for part, size in zip(parts, sizes)], dim=-2)

    @staticmethod
    def backward(ctx, g):
        plan = ctx.plan
        sizes, P, longest = plan.layout.sizes, plan.world_size, max(plan.layout.sizes)
        parts = [g.new_zeros(*g.shape[:-2], longest, g.shape[-1]) for _ in range(P)]
        for part, piece, size in zip(parts, g.split(sizes, dim=-2), sizes):
            part[..., :size, :] = piece
        mine = torch.empty_like(parts[0])
        work = dist.reduce_scatter(mine, parts, group=plan.group, async_op=True)
        plan.stats.add("backward", (P - 1) * nbytes(mine), (P - 1) * nbytes(mine), messages=P - 1)
        _wait(plan, work, "reduce-scattering K/V gradients")
        return mine[..., : sizes[plan.rank], :], None


def _wait(plan, work, what):
    try:
        work.wait(timeout=plan.timeout)
    except RuntimeError as e:
        raise plan.fail(what, e) from e


def gather_sequence(x, plan):
    """The shards x of every rank, concatenated in rank order along dim -2 (differentiable)."""
    return _GatherSequence.apply(x, plan)


def allgather_attention(
    q,
    k,
    v,
    *,
    causal: bool = False,
    layout="contiguous",
    group=None,
    stats=None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
):
    """Exact attention with the sequence split over ``group``, by all-gathering K/V (chapter 9).

    Arguments and result as :func:`~attnbook.distributed.ring.ring_attention`: q, k (B, H, N_r, D),
    v (B, H, N_r, Dv), this rank's shard under ``layout``; returns (B, H, N_r, Dv). Peak memory per
    rank O(N) (the gathered K/V).
    """
    plan = make_plan("allgather", q, k, v, causal, layout, group, stats, timeout_s)
    D = k.shape[-1]
    kv = gather_sequence(torch.cat([k, v], dim=-1), plan)
    plan.stats.steps += 1
    return LocalAttention.apply(
        q,
        kv[..., :D],
        kv[..., D:],
        plan.layout.pieces(plan.rank),
        plan.layout.gathered_pieces(),
        causal,
    )
