"""Self-check of the distributed forms against single-device dense attention (chapter 9).

Run it on any machine or cluster with torchrun::

    torchrun --standalone --nproc-per-node 4 -m attnbook.distributed.check --method ring --seq-len
    1001 --causal

Every rank builds the same random q, k, v and output gradient (one seed), runs the chosen method
on its shard forward and backward, and compares its rows of the output and of the gradients with
dense attention computed in float64 on one device. Rank 0 prints one JSON line (method,
world_size, n, causal, max_rel_error, grad_max_rel_error, ...); every rank exits with status 1 if
either error exceeds 1e-5. Uses NCCL and one GPU per rank with ``--device cuda``, gloo otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

from .allgather import allgather_attention
from .common import CommStats, backend_for
from .layout import LAYOUTS, Layout
from .ring import ring_attention
from .ulysses import ulysses_attention

__all__ = ["METHODS", "TOLERANCE", "dense_attention", "verify", "verify_many", "main"]

METHODS = {"ring": ring_attention, "allgather": allgather_attention, "ulysses": ulysses_attention}
TOLERANCE = 1e-5


def dense_attention(q, k, v, causal: bool = False):
    """softmax(q kᵀ/√D) v on one device, q, k: (B, H, N, D), v: (B, H, N, Dv): the yardstick."""
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(
            torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1), float("-inf")
        )
    return torch.softmax(s, dim=-1) @ v


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def verify(
    rank: int,
    world_size: int,
    method: str,
    n: int,
    heads: int = 2,
    causal: bool = False,
    layout: str = "zigzag",
    batch: int = 1,
    head_dim: int = 16,
    seed: int = 0,
) -> dict:
    """Run ``method`` on this rank's shard (float32) and compare with float64 dense attention.

    Call on every rank of an initialised process group. Returns the report: errors relative to the
    largest reference entry (over all ranks, the same on every rank) and the bytes this rank sent
    and received, in all and per phase (forward, backward).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    device = _device()
    g = torch.Generator().manual_seed(seed)
    full = [
        torch.randn(batch, heads, n, head_dim, generator=g, dtype=torch.float64) for _ in range(4)
    ]
    ref_in = [x.clone().requires_grad_() for x in full[:3]]
    ref = dense_attention(*ref_in, causal=causal)
    ref.backward(full[3])
    lay = Layout(layout, n, world_size)
    mine = [lay.shard(x, rank).float().to(device).requires_grad_() for x in full[:3]]
    stats = CommStats()
    out = METHODS[method](*mine, causal=causal, layout=lay, stats=stats)
    out.backward(lay.shard(full[3], rank).float().to(device))

    def err(got, want):
        want = lay.shard(want.detach(), rank).to(device)
        return torch.stack([(got.double() - want).abs().max(), want.abs().max()])

    errs = torch.stack([err(out, ref)] + [err(x.grad, r.grad) for x, r in zip(mine, ref_in)])
    dist.all_reduce(errs, op=dist.ReduceOp.MAX)
    rel = (errs[:, 0] / errs[:, 1]).tolist()
    return {
        "method": method,
        "world_size": world_size,
        "n": n,
        "heads": heads,
        "head_dim": head_dim,
        "batch": batch,
        "causal": causal,
        "layout": layout,
        "max_rel_error": rel[0],
        "grad_max_rel_error": max(rel[1:]),
        "sent_bytes": stats.sent_bytes,
        "recv_bytes": stats.recv_bytes,
        "phases": {k: list(v) for k, v in stats.phases.items()},
        "ok": max(rel) <= TOLERANCE,
    }


def verify_many(rank: int, world_size: int, cases) -> list[list[dict]]:
    """:func:`verify` for each case (a dict of its keyword arguments, with ``method`` and ``n``).

    Returns, on every rank, one list per case of every rank's report (index = rank), so that the
    caller of :func:`~attnbook.distributed.launch.launch` sees all ranks' bytes.
    """
    reports = [verify(rank, world_size, **case) for case in cases]
    everyone = [None] * world_size
    dist.all_gather_object(everyone, reports)
    return [[everyone[r][i] for r in range(world_size)] for i in range(len(cases))]


def _positive(kind):
    """An argparse type: a number of ``kind`` (int or float) > 0, or an argparse error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__} > 0, got {text!r}"
            ) from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a finite {kind.__name__} > 0, got {text}")
        return value

    return parse


def main(argv=None) -> int:
    """Command line: see the module docstring. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m attnbook.distributed.check", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument(
        "--seq-len", type=_positive(int), required=True, help="sequence length n (any n >= 2P)"
    )
    parser.add_argument("--heads", type=_positive(int), default=4)
    parser.add_argument("--head-dim", type=_positive(int), default=16)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--layout", choices=LAYOUTS, default="zigzag")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--timeout", type=_positive(float), default=120.0, help="seconds any collective may wait"
    )
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error(
            "run under torchrun, e.g. torchrun --standalone --nproc-per-node 2 -m "
            "attnbook.distributed.check ..."
        )
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=args.timeout))
    try:
        report = verify(
            dist.get_rank(),
            dist.get_world_size(),
            args.method,
            args.seq_len,
            heads=args.heads,
            causal=args.causal,
            layout=args.layout,
            head_dim=args.head_dim,
        )
        if dist.get_rank() == 0:
            print(json.dumps(report), flush=True)
    finally:
        dist.destroy_process_group()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
