"""Communication cost of attention across devices:
the α–β model (chapter 9, Attention across devices).

Per rank, for the three distributed forms of :mod:`attnbook.distributed` on a sequence of n tokens
split over P ranks under a layout: FLOPs of the forward and backward passes (a multiply-add is 2
FLOPs), bytes sent and received, messages, compute steps, and the bytes of K/V resident at once.
A message of m bytes takes α + m/β seconds (latency α, bandwidth β); a ring step takes the longer
of its compute and its transfer, because the transfer of the next block overlaps the computation
on this one.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..checks import check_bool, check_positive_float, check_positive_int, check_sizes
from ..distributed.layout import make_layout, pair_kind

__all__ = [
    "INTERCONNECTS",
    "H100_BF16_FLOPS",
    "RankCost",
    "attention_pair_flops",
    "ring_cost",
    "allgather_cost",
    "ulysses_cost",
    "message_time",
    "ring_time",
    "overlap_block_size",
]

# Peak bandwidth per direction, bytes/s. NVLink 4: 900 GB/s in both directions together per H100
# SXM (NVIDIA H100 datasheet); InfiniBand NDR: 400 Gb/s per port; Ethernet: 100 Gb/s per port.
INTERCONNECTS = {
    "NVLink 4 (H100)": 450e9,
    "InfiniBand NDR (400 Gb/s)": 50e9,
    "Ethernet (100 Gb/s)": 12.5e9,
}
H100_BF16_FLOPS = (
    989e12  # dense BF16 tensor-core peak of an H100 SXM (the datasheet's 1979 is with sparsity)
)


@dataclass(frozen=True)
class RankCost:
    """The cost of one rank's share of one attention call (chapter 9).

    ``step_flops``/``step_bytes``: forward FLOPs of each compute step and bytes of the transfer that
    overlaps it (0 when none); ``kv_bytes``: K/V elements held at once in the forward pass, in
    bytes.
    """

    rank: int
    flops_forward: int
    flops_backward: int
    sent_forward: int
    recv_forward: int
    sent_backward: int
    recv_backward: int
    messages_forward: int
    steps: int
    kv_bytes: int
    step_flops: tuple
    step_bytes: tuple

    @property
    def sent(self) -> int:
        return self.sent_forward + self.sent_backward

    @property
    def received(self) -> int:
        return self.recv_forward + self.recv_backward


def _check_shape(n, world_size, heads, head_dim, causal, batch, dtype_bytes) -> None:
    check_sizes(
        n=n,
        world_size=world_size,
        heads=heads,
        head_dim=head_dim,
        batch=batch,
        dtype_bytes=dtype_bytes,
    )
    check_bool("causal", causal)


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def attention_pair_flops(
    q_pieces, k_pieces, causal: bool, heads: int, head_dim: int, batch: int = 1
):
    """(forward, backward) FLOPs of queries ``q_pieces`` attending to keys ``k_pieces`` (chapter 9).

    Each piece pair a causal mask does not hide entirely is computed whole: forward q kᵀ and p v,
    4·B·H·|q|·|k|·D; backward recomputes q kᵀ and forms dV, dP, dQ, dK, 10·B·H·|q|·|k|·D.
    """
    pairs = sum(
        len(qp.positions) * len(kp.positions)
        for qp in q_pieces
        for kp in k_pieces
        if pair_kind(qp, kp, causal) != "skip"
    )
    return 4 * batch * heads * pairs * head_dim, 10 * batch * heads * pairs * head_dim


def ring_cost(
    n: int,
    world_size: int,
    *,
    heads: int,
    head_dim: int,
    causal: bool,
    layout="contiguous",
    batch: int = 1,
    dtype_bytes: int = 4,
) -> list[RankCost]:
    """Per-rank cost of ring attention (chapter 9).

    Forward: P steps; at steps 0..P-2 rank r sends the K/V block it holds (of rank r - s) and
    receives the next, 2·B·H·n_b·D·b bytes each way. Backward: the same P - 1 K/V transfers, plus
    P - 1 transfers of a K/V gradient (the blocks of ranks r - 1, ..., r - P + 1 leaving, its own
    and those of ranks r - 2, ..., r - P + 1 arriving).
    """
    _check_shape(n, world_size, heads, head_dim, causal, batch, dtype_bytes)
    lay = make_layout(layout, n, world_size)
    P, blk = (
        world_size,
        lambda owner: 2 * batch * heads * lay.sizes[owner % P] * head_dim * dtype_bytes,
    )
    out = []
    for r in range(P):
        fl = [
            attention_pair_flops(
                lay.pieces(r), lay.pieces((r - s) % P), causal, heads, head_dim, batch
            )
            for s in range(P)
        ]
        kv_sent = sum(blk(r - s) for s in range(P - 1))
        kv_recv = sum(blk(r - s - 1) for s in range(P - 1))
        grad_sent = sum(blk(r - s) for s in range(1, P))
        grad_recv = sum(blk(r - s) for s in range(2, P)) + (blk(r) if P > 1 else 0)
        out.append(
            RankCost(
                r,
                sum(f for f, _ in fl),
                sum(b for _, b in fl),
                kv_sent,
                kv_recv,
                kv_sent + grad_sent,
                kv_recv + grad_recv,
                P - 1,
                P,
                blk(r) + (max(blk(o) for o in range(P)) if P > 1 else 0),
                tuple(f for f, _ in fl),
                tuple(blk(r - s) if s < P - 1 else 0 for s in range(P)),
            )
        )
    return out


def allgather_cost(
    n: int,
    world_size: int,
    *,
    heads: int,
    head_dim: int,
    causal: bool,
    layout="contiguous",
    batch: int = 1,
    dtype_bytes: int = 4,
) -> list[RankCost]:
    """Per-rank cost of all-gather attention (chapter 9).

    Forward: an all-gather of K/V shards padded to the longest, n_max; a ring all-gather moves P - 1
    shards in and out of every rank, (P - 1)·2·B·H·n_max·D·b each way. Backward: a reduce-scatter of
    the K/V gradients, the same bytes. The whole K/V is resident: 2·B·H·n·D·b, plus the P padded
    parts.
    """
    _check_shape(n, world_size, heads, head_dim, causal, batch, dtype_bytes)
    lay = make_layout(layout, n, world_size)
    P, longest = world_size, max(lay.sizes)
    moved = (P - 1) * 2 * batch * heads * longest * head_dim * dtype_bytes
    everyone = lay.gathered_pieces()
    out = []
    for r in range(P):
        f, b = attention_pair_flops(lay.pieces(r), everyone, causal, heads, head_dim, batch)
        kv = 2 * batch * heads * (n + P * longest) * head_dim * dtype_bytes
        out.append(RankCost(r, f, b, moved, moved, moved, moved, P - 1, 1, kv, (f,), (moved,)))
    return out


def ulysses_cost(
    n: int,
    world_size: int,
    *,
    heads: int,
    head_dim: int,
    causal: bool,
    layout="contiguous",
    batch: int = 1,
    dtype_bytes: int = 4,
) -> list[RankCost]:
    """Per-rank cost of DeepSpeed-Ulysses attention (chapter 9).

    Forward: an all-to-all of q, k, v (3·D channels) from the sequence split to H/P heads of all n
    tokens (rank r sends its n_r rows of the other ranks' heads, B·(H/P)·3D·n_r·(P-1)·b bytes, and
    receives B·(H/P)·3D·(n - n_r)·b), local attention of H/P heads over all n tokens, and an
    all-to-all of the output (D channels) back. Backward: the same two all-to-alls in reverse order
    and direction.
    """
    if heads % world_size:
        raise ValueError(
            f"ulysses needs heads divisible by the world size, got H={heads}, P={world_size}"
        )
    _check_shape(n, world_size, heads, head_dim, causal, batch, dtype_bytes)
    lay = make_layout(layout, n, world_size)
    P, h, unit = (
        world_size,
        heads // world_size,
        batch * (heads // world_size) * head_dim * dtype_bytes,
    )
    everyone = lay.gathered_pieces()
    f, b = attention_pair_flops(everyone, everyone, causal, h, head_dim, batch)
    out = []
    for r in range(P):
        mine, others = lay.sizes[r] * (P - 1), n - lay.sizes[r]
        sent = 3 * unit * mine + unit * others
        recv = 3 * unit * others + unit * mine
        kv = 2 * unit * n
        out.append(RankCost(r, f, b, sent, recv, recv, sent, 2 * (P - 1), 1, kv, (f,), (0,)))
    return out


def message_time(nbytes, alpha_s: float, bandwidth: float):
    """α + m/β: seconds to move m bytes over a link of latency α (s) and bandwidth β (bytes/s)."""
    _check_nonnegative("nbytes", nbytes)
    _check_nonnegative("alpha_s", alpha_s)
    check_positive_float("bandwidth", bandwidth)
    return alpha_s + nbytes / bandwidth


def ring_time(cost: RankCost, flops_per_s: float, alpha_s: float, bandwidth: float) -> float:
    """Forward seconds of one ring rank when each transfer overlaps the step it runs beside.

    Σ_s max(F_s / F, α + m_s / β) over the steps that send, plus the last step's compute.

    Chapter 9.
    """
    check_positive_float("flops_per_s", flops_per_s)
    _check_nonnegative("alpha_s", alpha_s)
    check_positive_float("bandwidth", bandwidth)
    total = 0.0
    for flops, nbytes in zip(cost.step_flops, cost.step_bytes):
        compute = flops / flops_per_s
        total += max(compute, message_time(nbytes, alpha_s, bandwidth)) if nbytes else compute
    return total


def overlap_block_size(
    flops_per_s: float,
    bandwidth: float,
    dtype_bytes: int = 2,
    work_fraction: float = 1.0,
    alpha_s: float = 0.0,
    batch_heads_dim: int = 128,
) -> float:
    """Smallest block c = n/P at which a ring step's compute hides the transfer of the next block.

    A step computes 4·w·B·H·D·c² FLOPs (w = ``work_fraction``: 1 without a mask, 1/2 for a balanced
    causal layout) and moves 2·B·H·D·c·b bytes. With α = 0, compute ≥ transfer iff c ≥ F·b /
    (2·w·β), whatever B, H and D; with α > 0 the quadratic in c is solved for B·H·D =
    ``batch_heads_dim``.

    Chapter 9.
    """
    check_positive_float("flops_per_s", flops_per_s)
    check_positive_float("bandwidth", bandwidth)
    check_positive_int("dtype_bytes", dtype_bytes)
    if check_positive_float("work_fraction", work_fraction) > 1:
        raise ValueError(f"work_fraction must be in (0, 1], got {work_fraction}")
    _check_nonnegative("alpha_s", alpha_s)
    check_positive_int("batch_heads_dim", batch_heads_dim)
    if alpha_s == 0.0:
        return flops_per_s * dtype_bytes / (2 * work_fraction * bandwidth)
    a = 4 * work_fraction * batch_heads_dim / flops_per_s
    b = -2 * batch_heads_dim * dtype_bytes / bandwidth
    return (-b + (b * b + 4 * a * alpha_s) ** 0.5) / (2 * a)
