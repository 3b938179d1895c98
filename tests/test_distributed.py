"""Chapter 9: attention across devices. The single-process parts (layouts, the blockwise kernel, the
cost model's FLOPs against FlopCounterMode); the distributed forms against dense attention for
P = 1, 2, 4 with n not divisible by P, the bytes they send against the cost model, bad input and
faults. Process spawning is what costs: each test launches once and runs a batch of cases.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.flop_counter import FlopCounterMode

from attnbook import reference
from attnbook.cost import comm
from attnbook.distributed import (
    LaunchError,
    Layout,
    allgather_attention,
    launch,
    ring_attention,
    ulysses_attention,
)
from attnbook.distributed.check import METHODS, dense_attention, verify
from attnbook.distributed.layout import pair_kind
from attnbook.distributed.local import LocalAttention, attend, merge

COSTS = {"ring": comm.ring_cost, "allgather": comm.allgather_cost, "ulysses": comm.ulysses_cost}


# ---------------------------------------------------------------- one process


@pytest.mark.parametrize("kind", ["contiguous", "zigzag", "striped"])
@pytest.mark.parametrize("n, P", [(37, 1), (37, 2), (37, 4), (64, 4), (9, 3)])
def test_layout_holds_every_position_once_and_unshards(kind, n, P):
    lay = Layout(kind, n, P)
    positions = torch.cat([lay.positions(r) for r in range(P)])
    assert positions.shape == (n,)
    assert sorted(positions.tolist()) == list(range(n))
    assert sum(lay.sizes) == n and max(lay.sizes) - min(lay.sizes) <= (2 if kind == "zigzag" else 1)
    x = torch.randn(2, 3, n, 5)
    shards = [lay.shard(x, r) for r in range(P)]
    assert [s.shape[-2] for s in shards] == lay.sizes
    assert torch.equal(lay.unshard(shards), x)
    for r in range(P):  # pieces cover the local rows in order
        pieces = lay.pieces(r)
        assert pieces[0].start == 0 and pieces[-1].stop == lay.sizes[r]
        assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))


def test_layout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="layout must be one of"):
        Layout("diagonal", 8, 2)
    with pytest.raises(ValueError, match="needs n >= 8"):
        Layout("zigzag", 7, 4)
    with pytest.raises(ValueError, match="world_size must be an integer >= 1"):
        Layout("contiguous", 8, 0)
    with pytest.raises(ValueError, match="must have n=8"):
        Layout("contiguous", 8, 2).shard(torch.zeros(1, 1, 7, 2), 0)


def test_zigzag_balances_causal_work_and_contiguous_does_not():
    """Per-rank forward FLOPs of causal ring attention: zig-zag equal on every rank, contiguous 1 :
    2 : ... : P."""
    P, n, H, D = 4, 64, 2, 8
    zig = [
        c.flops_forward
        for c in comm.ring_cost(n, P, heads=H, head_dim=D, causal=True, layout="zigzag")
    ]
    con = [
        c.flops_forward
        for c in comm.ring_cost(n, P, heads=H, head_dim=D, causal=True, layout="contiguous")
    ]
    block = 4 * H * D * (n // P) ** 2
    assert con == [block * (r + 1) for r in range(P)]  # r full blocks and the diagonal block
    chunk = 4 * H * D * (n // (2 * P)) ** 2
    assert zig == [chunk * (2 * P + 1)] * P  # 2(P-1) unmasked chunk pairs and 3 on the own shard
    full = comm.ring_cost(n, P, heads=H, head_dim=D, causal=False)
    assert [c.flops_forward for c in full] == [block * P] * P


def test_pair_kind_classifies_by_position():
    lay = Layout("contiguous", 12, 3)
    a, b = lay.pieces(0)[0], lay.pieces(1)[0]
    assert (pair_kind(b, a, True), pair_kind(a, b, True), pair_kind(a, a, True)) == (
        "full",
        "skip",
        "masked",
    )
    assert pair_kind(a, b, False) == "full"


def test_dense_yardstick_equals_numpy_reference():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 11, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for causal in (False, True):
        want = reference.attention(q.numpy(), k.numpy(), v.numpy(), causal=causal)
        assert dense_attention(q, k, v, causal).shape == want.shape
        np.testing.assert_allclose(
            dense_attention(q, k, v, causal).numpy(), want, rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("kind", ["contiguous", "zigzag", "striped"])
def test_blockwise_kernel_and_merge_equal_dense(kind, monkeypatch):
    """attend over each rank's keys, merged by the online softmax, equals dense attention; so do the
    blockwise backward's gradients; query tiles smaller than a piece change nothing."""
    monkeypatch.setattr("attnbook.distributed.local.Q_TILE", 5)
    n, P = 23, 3
    lay = Layout(kind, n, P)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, n, 6, generator=g, dtype=torch.float64) for _ in range(3))
    want = dense_attention(q, k, v, causal=True)
    for r in range(P):
        o = lse = None
        for owner in range(P):
            o_b, lse_b = attend(
                lay.shard(q, r),
                lay.shard(k, owner),
                lay.shard(v, owner),
                lay.pieces(r),
                lay.pieces(owner),
                True,
                6**-0.5,
            )
            o, lse = (o_b, lse_b) if o is None else merge(o, lse, o_b, lse_b)
        torch.testing.assert_close(o, lay.shard(want, r), rtol=1e-12, atol=1e-12)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    ys = [
        lay.unshard([lay.shard(x, r) for r in range(P)]).clone().requires_grad_() for x in (q, k, v)
    ]
    pieces = lay.gathered_pieces()
    cat = [torch.cat([lay.shard(y, r) for r in range(P)], dim=-2) for y in ys]
    out = LocalAttention.apply(*cat, pieces, pieces, True)
    do = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(do)
    torch.testing.assert_close(
        lay.unshard(list(out.detach().split(lay.sizes, dim=-2))), want, rtol=1e-12, atol=1e-12
    )
    dense_attention(*xs, causal=True).backward(lay.unshard(list(do.split(lay.sizes, dim=-2))))
    for x, y in zip(xs, ys):
        torch.testing.assert_close(y.grad, x.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "causal, kind", [(False, "contiguous"), (True, "contiguous"), (True, "zigzag")]
)
def test_local_flops_equal_flop_counter(causal, kind):
    """The cost model's pair FLOPs against torch's FlopCounterMode, forward and backward."""
    lay = Layout(kind, 40, 4)
    q, k, v = (torch.randn(2, 3, 40, 8, requires_grad=True) for _ in range(3))
    pieces = lay.gathered_pieces()
    want_f, want_b = comm.attention_pair_flops(pieces, pieces, causal, heads=3, head_dim=8, batch=2)
    with FlopCounterMode(display=False) as fwd:
        out = LocalAttention.apply(q, k, v, pieces, pieces, causal)
    with FlopCounterMode(display=False) as bwd:
        out.sum().backward()
    assert (fwd.get_total_flops(), bwd.get_total_flops()) == (want_f, want_b)


def test_overlap_block_size_solves_compute_equals_transfer():
    F, beta = 989e12, 50e9
    c = comm.overlap_block_size(F, beta, dtype_bytes=2)
    assert c == pytest.approx(F * 2 / (2 * beta))
    BHD = 128  # at c the step's compute equals its transfer, with and without latency
    for alpha in (0.0, 5e-6):
        c = comm.overlap_block_size(F, beta, dtype_bytes=2, alpha_s=alpha, work_fraction=0.5)
        assert 4 * 0.5 * BHD * c**2 / F == pytest.approx(
            comm.message_time(2 * BHD * c * 2, alpha, beta), rel=1e-9
        )


# ---------------------------------------------------------------- P processes


def cases_worker(rank, world_size, cases):
    """Run each (method, n, heads, causal, layout) case: errors, bytes by phase, FLOPs counted by
    torch."""
    out = []
    for method, n, heads, causal, layout in cases:
        report = verify(
            rank, world_size, method, n, heads=heads, causal=causal, layout=layout, head_dim=8
        )
        lay = Layout(layout, n, world_size)
        x = [lay.shard(torch.randn(1, heads, n, 8), rank).requires_grad_() for _ in range(3)]
        with FlopCounterMode(display=False) as fwd:
            o = METHODS[method](*x, causal=causal, layout=lay)
        with FlopCounterMode(display=False) as bwd:
            o.sum().backward()
        report.update(flops_forward=fwd.get_total_flops(), flops_backward=bwd.get_total_flops())
        out.append(report)
    everyone = [None] * world_size
    dist.all_gather_object(everyone, out)
    return everyone


def _cases(P):
    n = 37 if P > 1 else 13  # not divisible by 2 nor 4
    heads = 4
    out = []
    for method in ("ring", "allgather", "ulysses"):
        out += [(method, n, heads, False, "contiguous"), (method, n, heads, True, "zigzag")]
    out += [("ring", n, heads, True, "contiguous"), ("ring", n, heads, True, "striped")]
    return out


@pytest.mark.parametrize("P", [1, 2, 4])
def test_every_form_equals_dense_and_its_cost_model(P):
    """Outputs and gradients within 1e-5 of float64 dense attention (float32 inputs); the bytes each
    rank sends and receives, forward and backward, equal the cost model's; so do the FLOPs torch
    counts."""
    cases = _cases(P)
    per_rank = launch(cases_worker, P, cases, timeout_s=240)
    assert len(per_rank) == P
    for i, (method, n, heads, causal, layout) in enumerate(cases):
        model = COSTS[method](n, P, heads=heads, head_dim=8, causal=causal, layout=layout)
        for r in range(P):
            rep = per_rank[r][i]
            label = f"{method} P={P} n={n} causal={causal} {layout} rank {r}"
            assert rep["max_rel_error"] <= 1e-5 and rep["grad_max_rel_error"] <= 1e-5, (label, rep)
            assert rep["ok"]
            fwd_sent, fwd_recv = rep["phases"].get("forward", (0, 0))
            bwd_sent, bwd_recv = rep["phases"].get("backward", (0, 0))
            m = model[r]
            assert (fwd_sent, fwd_recv, bwd_sent, bwd_recv) == (
                m.sent_forward,
                m.recv_forward,
                m.sent_backward,
                m.recv_backward,
            ), label
            assert (rep["flops_forward"], rep["flops_backward"]) == (
                m.flops_forward,
                m.flops_backward,
            ), label
            assert rep["sent_bytes"] == m.sent and (P == 1) == (m.sent == 0)
    if (
        P > 1
    ):  # the ring moves what the closed form says: (P - 1) blocks of 2·B·H·n_b·D·4 bytes, per pass
        ring = [c for c in comm.ring_cost(36 * P, P, heads=4, head_dim=8, causal=False)]
        assert all(c.sent_forward == (P - 1) * 2 * 4 * 36 * 8 * 4 for c in ring)


def bad_input_worker(rank, world_size):
    """Each bad call must raise the same clear error on every rank; returns the messages."""
    messages = {}
    g = torch.Generator().manual_seed(0)

    def x(heads=2, n=None, dtype=torch.float32):
        n = n if n is not None else Layout("contiguous", 8 * world_size, world_size).sizes[rank]
        return torch.randn(1, heads, n, 4, generator=g).to(dtype)

    calls = {
        "heads differ": lambda: ring_attention(*(x(heads=2 + rank) for _ in range(3))),
        "dtype differs": lambda: allgather_attention(
            *(x(dtype=torch.float64 if rank else torch.float32) for _ in range(3))
        ),
        "causal differs": lambda: ring_attention(*(x() for _ in range(3)), causal=bool(rank)),
        "shards off the layout": lambda: ring_attention(*(x(n=7 + 2 * rank) for _ in range(3))),
        "heads not divisible": lambda: ulysses_attention(
            *(x(heads=world_size + 1) for _ in range(3))
        ),
        "k shape": lambda: ring_attention(x(), x(n=3), x()),
    }
    for name, call in calls.items():
        try:
            call()
        except (ValueError, TypeError) as e:
            messages[name] = f"{type(e).__name__}: {e}"
        else:
            messages[name] = "no error"
    dist.barrier()  # every rank is still in step after the errors
    return messages


def test_bad_input_is_refused_on_every_rank():
    P = 2
    got = launch(bad_input_worker, P, timeout_s=120)
    assert "rank 1 has heads H = 3 but rank 0 has 2" in got["heads differ"]
    assert "dtype = torch.float64 but rank 0 has torch.float32" in got["dtype differs"]
    assert "causal = 1" in got["causal differs"]
    assert (
        "but the contiguous layout of n=" in got["shards off the layout"]
        and "shard with Layout.shard" in got["shards off the layout"]
    )
    assert f"H={P + 1} heads over the {P} ranks" in got["heads not divisible"]
    assert "k must have the shape of q" in got["k shape"]
    with pytest.raises(ValueError, match="ulysses needs heads divisible"):
        comm.ulysses_cost(16, P, heads=P + 1, head_dim=4, causal=False)


def dying_worker(rank, world_size, mode):
    """Rank 1 dies (mode "die") or stalls (mode "stall") in step 0 of the ring, after posting its
    first
    transfer and before its second; the other ranks must stop with a clear error."""
    import attnbook.distributed.ring as ring

    if rank == 1:
        real, calls = ring.attend, []

        def attend(*args):
            calls.append(1)
            if len(calls) == 1:
                if mode == "die":
                    os._exit(7)
                time.sleep(600)
            return real(*args)

        ring.attend = attend
    x = [torch.randn(1, 2, 16, 4) for _ in range(3)]
    return ring_attention(*x, layout="contiguous", timeout_s=4)


@pytest.mark.parametrize("mode", ["die", "stall"])
def test_a_rank_that_dies_or_stalls_mid_ring_stops_the_others(mode):
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as info:
        launch(dying_worker, 3, mode, timeout_s=60)
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert elapsed < 50, f"took {elapsed:.0f} s"
    # rank 0 or 2 stops in a ring transfer with a clear error (or the launcher saw rank 1 die first)
    assert (
        "DistributedAttentionError" in message and "peer rank has probably died" in message
    ) or "rank 1 of 3 died (exit code 7)" in message, message


def forever(rank, world_size):
    time.sleep(600)


def test_launcher_bounds_time_and_refuses_bad_arguments():
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match=r"did not finish within 5 s"):
        launch(forever, 2, timeout_s=5)
    assert time.monotonic() - t0 < 30
    with pytest.raises(TypeError, match="importable"):
        launch(lambda rank, world_size: rank, 2)
    with pytest.raises(ValueError, match="world_size must be an integer >= 1"):
        launch(forever, 0)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        launch(forever, 1, device="meta")


def test_distributed_forms_need_an_initialised_group():
    x = torch.zeros(1, 1, 4, 2)
    with pytest.raises(RuntimeError, match="needs torch.distributed initialised"):
        ring_attention(x, x, x)
