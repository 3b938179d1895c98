"""Ring attention: K/V blocks travel around the ranks while each keeps its queries (chapter 9).

Liu et al. (2023). At step s rank r holds the K/V block of rank r - s; it starts sending that block
to rank r + 1 and receiving the next one from rank r - 1 (isend/irecv), computes attention of its
queries to the block in hand while the transfer runs, merges the partial result by the online
softmax, and waits. The backward pass sends the blocks around again; the gradient of each block
travels with it and arrives back at its owner after P - 1 hops.
"""

from __future__ import annotations

import torch

from .common import DEFAULT_TIMEOUT_S, make_plan, post, wait
from .local import attend, attend_backward, merge

__all__ = ["ring_attention", "ring_forward", "ring_backward"]


def ring_forward(plan, q, k, v):
    """The forward ring on this rank's shard: returns (o (B, H, N_r, Dv), lse (B, H, N_r))."""
    r, P, lay = plan.rank, plan.world_size, plan.layout
    scale, D = q.shape[-1] ** -0.5, k.shape[-1]
    kv = torch.cat([k, v], dim=-1)  # one message per step
    o, lse = None, None
    for step in range(P):
        owner = (r - step) % P
        if step < P - 1:  # start moving the next block before computing on this one
            incoming = kv.new_empty(*kv.shape[:2], lay.sizes[(owner - 1) % P], kv.shape[-1])
            works = post(plan, "forward", send=kv, dst=plan.next, recv=incoming, src=plan.prev)
        o_b, lse_b = attend(
            q, kv[..., :D], kv[..., D:], lay.pieces(r), lay.pieces(owner), plan.causal, scale
        )
        o, lse = (o_b, lse_b) if o is None else merge(o, lse, o_b, lse_b)
        plan.stats.steps += 1
        if step < P - 1:
            wait(
                plan,
                works,
                f"step {step}: passing K/V on (to rank {plan.next}, from rank {plan.prev})",
            )
            kv = incoming
    return o, lse


def _block_gradient(plan, q, kv, D: int, do, lse, delta, dq, owner: int, scale: float):
    """This rank's share of the gradient of block ``owner``, (dK | dV) concatenated; adds the
    queries' gradient into ``dq``."""
    lay = plan.layout
    k, v = kv[..., :D], kv[..., D:]
    pieces = (lay.pieces(plan.rank), lay.pieces(owner))
    dk, dv = attend_backward(q, k, v, do, lse, delta, dq, *pieces, plan.causal, scale)
    plan.stats.steps += 1
    return torch.cat([dk, dv], dim=-1)


def _plus_peers(plan, own):
    """``own`` block's gradient plus every other rank's share, which arrives from rank r - 1."""
    if plan.world_size == 1:
        return own
    acc = torch.empty_like(own)
    wait(
        plan,
        post(plan, "backward", recv=acc, src=plan.prev, tag=1),
        f"receiving our K/V gradient from rank {plan.prev}",
    )
    return own + acc


def ring_backward(plan, q, k, v, o, lse, do):
    """The backward ring: returns (dq, dk, dv) for this rank's shard (chapter 9).

    The K/V blocks go round again (P - 1 hops); the gradient of block b starts at rank b + 1, gains
    each rank's contribution as it follows the block, and reaches rank b after P - 1 hops.
    """
    r, P, lay = plan.rank, plan.world_size, plan.layout
    scale, D = q.shape[-1] ** -0.5, k.shape[-1]
    delta = (do * o).sum(-1)
    dq = torch.zeros_like(q)
    kv = torch.cat([k, v], dim=-1)
    own = None
    sent, keep = [], []  # gradient sends still in flight, and their buffers
    for step in range(P):
        owner = (r - step) % P
        works = []
        if step >= 2:  # this block's gradient so far: rank r - 1 sent it before its next K/V block
            acc = kv.new_empty(kv.shape)
            works_acc = post(plan, "backward", recv=acc, src=plan.prev, tag=1)
        if step < P - 1:
            incoming = kv.new_empty(*kv.shape[:2], lay.sizes[(owner - 1) % P], kv.shape[-1])
            works += post(plan, "backward", send=kv, dst=plan.next, recv=incoming, src=plan.prev)
        grad = _block_gradient(plan, q, kv, D, do, lse, delta, dq, owner, scale)
        if step == 0:
            own = grad
        else:
            if step >= 2:
                where = f"backward step {step}: receiving a K/V gradient from rank {plan.prev}"
                wait(plan, works_acc, where)
                grad = grad + acc
            sent += post(plan, "backward", send=grad, dst=plan.next, tag=1)
            keep.append(grad)
        if works:
            hop = f"to rank {plan.next}, from rank {plan.prev}"
            wait(plan, works, f"backward step {step}: passing K/V on ({hop})")
            kv = incoming
    own = _plus_peers(plan, own)
    wait(plan, sent, f"sending K/V gradients to rank {plan.next}")
    return dq, own[..., :D], own[..., D:]


class _Ring(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan):
        o, lse = ring_forward(plan, q, k, v)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.plan = plan
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = ring_backward(ctx.plan, q, k, v, o, lse, do.contiguous())
        return dq, dk, dv, None


def ring_attention(
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
    """Exact attention with the sequence split over the ranks of ``group``, by a ring (chapter 9).

    q, k: (B, H, N_r, D), v: (B, H, N_r, Dv): this rank's shard, the rows ``Layout.shard`` gives it
    under ``layout`` ("contiguous", "zigzag", "striped" or a
    :class:`~attnbook.distributed.layout.Layout`). Returns this rank's rows of softmax(q kᵀ/√D) v,
    (B, H, N_r, Dv), differentiable. Peak memory per rank O(N/P); ``stats`` (a
    :class:`~attnbook.distributed.common.CommStats`) counts the bytes sent. Raises
    DistributedAttentionError if a peer dies or stalls for ``timeout_s`` seconds.
    """
    plan = make_plan("ring", q, k, v, causal, layout, group, stats, timeout_s)
    return _Ring.apply(q, k, v, plan)
