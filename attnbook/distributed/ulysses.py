"""DeepSpeed-Ulysses: trade the sequence split for a head split with all-to-all (chapter 9).

Jacobs et al. (2023). Each rank holds all H heads of its N/P tokens; an all-to-all gives it H/P
heads of all N tokens, it attends locally, and a second all-to-all brings the output back to the
sequence split. Heads must be divisible by P.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .common import DEFAULT_TIMEOUT_S, make_plan
from .local import LocalAttention

__all__ = ["ulysses_attention", "seq_to_heads", "heads_to_seq"]


def _all_to_all(plan, x_parts, out_sizes, phase, what):
    """Send x_parts[j] to rank j; return the P received
    parts with the numbers of elements ``out_sizes``."""
    send = torch.cat([p.reshape(-1) for p in x_parts])
    recv = send.new_empty(sum(out_sizes))
    in_sizes = [p.numel() for p in x_parts]
    work = dist.all_to_all_single(recv, send, out_sizes, in_sizes, group=plan.group, async_op=True)
    r, elt = plan.rank, send.element_size()
    plan.stats.add(
        phase,
        elt * (sum(in_sizes) - in_sizes[r]),
        elt * (sum(out_sizes) - out_sizes[r]),
        messages=plan.world_size - 1,
    )
    try:
        work.wait(timeout=plan.timeout)
    except RuntimeError as e:
        raise plan.fail(what, e) from e
    return recv.split(out_sizes)


def _to_heads(x, plan, phase):
    B, H, n_r, C = x.shape
    h = H // plan.world_size
    parts = _all_to_all(
        plan,
        list(x.split(h, dim=1)),
        [B * h * s * C for s in plan.layout.sizes],
        phase,
        "all-to-all from sequence to heads",
    )
    return torch.cat([p.view(B, h, s, C) for p, s in zip(parts, plan.layout.sizes)], dim=-2)


def _to_seq(x, plan, phase):
    B, h, _, C = x.shape
    sizes, P = plan.layout.sizes, plan.world_size
    parts = _all_to_all(
        plan,
        list(x.split(sizes, dim=-2)),
        [B * h * sizes[plan.rank] * C] * P,
        phase,
        "all-to-all from heads to sequence",
    )
    return torch.cat([p.view(B, h, sizes[plan.rank], C) for p in parts], dim=1)


class _SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, plan):
        ctx.plan = plan
        return _to_heads(x, plan, "forward")

    @staticmethod
    def backward(ctx, g):
        return _to_seq(g.contiguous(), ctx.plan, "backward"), None


class _HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, plan):
        ctx.plan = plan
        return _to_seq(x, plan, "forward")

    @staticmethod
    def backward(ctx, g):
        return _to_heads(g.contiguous(), ctx.plan, "backward"), None


def seq_to_heads(x, plan):
    """(B, H, N_r, C) shards of the sequence -> (B, H/P, N, C), rank order along N
    (differentiable)."""
    return _SeqToHeads.apply(x, plan)


def heads_to_seq(x, plan):
    """(B, H/P, N, C) in rank order -> (B, H, N_r, C), the inverse of :func:`seq_to_heads`."""
    return _HeadsToSeq.apply(x, plan)


def ulysses_attention(
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
    """Exact attention with the sequence split over ``group``, by all-to-all over heads (chapter 9).

    Arguments and result as :func:`~attnbook.distributed.ring.ring_attention`: q, k (B, H, N_r, D),
    v (B, H, N_r, Dv), this rank's shard under ``layout``; returns (B, H, N_r, Dv). H must be a
    multiple of the world size P (ValueError otherwise, on every rank).
    """
    plan = make_plan("ulysses", q, k, v, causal, layout, group, stats, timeout_s)
    H, P = q.shape[1], plan.world_size
    if H % P:
        raise ValueError(
            f"ulysses attention splits the H={H} heads over the {P} ranks: H must be a multiple "
            f"of the world size, got H % P = {H % P}; use ring or allgather attention instead"
        )
    D = q.shape[-1]
    qkv = seq_to_heads(torch.cat([q, k, v], dim=-1), plan)
    plan.stats.steps += 1
    pieces = plan.layout.gathered_pieces()
    o = LocalAttention.apply(
        qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :], pieces, pieces, causal
    )
    return heads_to_seq(o, plan)
