"""Suite "distributed" (chapter 9): ring, all-gather and Ulysses attention over P processes.

For P in {1, 2, 4} and an n sweep, each method runs on P processes started by
:func:`attnbook.distributed.launch.launch` (gloo over loopback on CPU; NCCL with one GPU per rank
on CUDA, when there are P GPUs). One row per (method, P, n, causal): the forward time (median
over repeats of the slowest rank, every repeat started together after a barrier), the bytes each
rank sent as counted by the code next to the cost model's, the peak memory of the forward pass
per rank, and the per-rank FLOPs of the model. Before anything is timed, every method's outputs
and gradients are checked against float64 dense attention (relative error <= 1e-5). Rows of
kind "pingpong" time one-way messages between two ranks, from which the chapter fits the
latency α and bandwidth β of the link. Each process uses one torch thread.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.distributed as dist

from attnbook.cost import comm
from attnbook.distributed.check import METHODS, verify
from attnbook.distributed.common import CommStats
from attnbook.distributed.launch import launch
from attnbook.distributed.layout import Layout
from attnbook.measure import peak_memory_bytes

__all__ = ["SHAPE", "WORLD_SIZES", "sizes", "run", "pingpong_worker", "attention_worker"]

SHAPE = {"batch": 1, "heads": 4, "head_dim": 64}
WORLD_SIZES = (1, 2, 4)
CASES = ((False, "contiguous"), (True, "zigzag"))
COSTS = {"ring": comm.ring_cost, "allgather": comm.allgather_cost, "ulysses": comm.ulysses_cost}


def sizes(quick: bool) -> list[int]:
    """Sequence lengths swept: 256 .. 1024 (quick) or 512 .. 4096 (full)."""
    return [256, 512, 1024] if quick else [512, 1024, 2048, 4096]


def _device(device_type: str, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")


def _slowest(seconds: float, device) -> float:
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _timed(fn, device, repeats: int) -> list[float]:
    """Seconds of the slowest rank for each of ``repeats`` calls, all ranks starting together."""
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(_slowest(time.perf_counter() - t0, device))
    return out


def attention_worker(rank: int, world_size: int, device_type: str, ns, repeats: int) -> list[dict]:
    """Every method at every n on this rank; returns one row per case with per-rank lists."""
    device = _device(device_type, rank)
    rows = []
    B, H, D = SHAPE["batch"], SHAPE["heads"], SHAPE["head_dim"]
    for method in METHODS:
        for causal, layout in CASES:
            check = verify(rank, world_size, method, 67, heads=H, causal=causal, layout=layout)
            if not check["ok"]:
                raise RuntimeError(
                    f"{method} disagrees with dense attention, refusing to time it: {check}"
                )
            for n in ns:
                lay = Layout(layout, n, world_size)
                g = torch.Generator().manual_seed(n)
                q, k, v = (
                    lay.shard(torch.randn(B, H, n, D, generator=g), rank).to(device)
                    for _ in range(3)
                )
                stats = CommStats()

                def call(stats=None):
                    with torch.no_grad():
                        return METHODS[method](q, k, v, causal=causal, layout=lay, stats=stats)

                call(stats)
                times = _timed(call, device, repeats)
                peak = peak_memory_bytes(call, device=device)
                mine = {"sent": stats.sent_bytes, "recv": stats.recv_bytes, "peak": peak}
                everyone = [None] * world_size
                dist.all_gather_object(everyone, mine)
                rows.append(
                    {
                        "method": method,
                        "world_size": world_size,
                        "n": n,
                        "batch": B,
                        "heads": H,
                        "head_dim": D,
                        "causal": causal,
                        "layout": layout,
                        "median_s": float(np.median(times)),
                        "q25_s": float(np.quantile(times, 0.25)),
                        "q75_s": float(np.quantile(times, 0.75)),
                        "min_s": float(min(times)),
                        "sent_bytes": [e["sent"] for e in everyone],
                        "recv_bytes": [e["recv"] for e in everyone],
                        "peak_bytes": [e["peak"] for e in everyone],
                        "max_rel_error": check["max_rel_error"],
                        "grad_max_rel_error": check["grad_max_rel_error"],
                    }
                )
    return rows


def pingpong_worker(
    rank: int, world_size: int, device_type: str, sizes_bytes, repeats: int
) -> list[dict]:
    """Rank 0 sends m bytes to rank 1, which sends them back; one-way time = round trip / 2."""
    device = _device(device_type, rank)
    rows = []
    for m in sizes_bytes:
        buf = torch.randn(m // 4, device=device)
        times = []
        for i in range(repeats + 1):
            dist.barrier()
            t0 = time.perf_counter()
            if rank == 0:
                dist.send(buf, 1)
                dist.recv(buf, 1)
            elif rank == 1:
                dist.recv(buf, 0)
                dist.send(buf, 0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first round trip is a warm-up
                times.append((time.perf_counter() - t0) / 2)
        rows.append(
            {
                "kind": "pingpong",
                "bytes": m,
                "median_s": float(np.median(times)),
                "q25_s": float(np.quantile(times, 0.25)),
                "min_s": float(min(times)),
            }
        )
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    """The suite: ping-pong between 2 ranks, then every
    method for P in WORLD_SIZES over :func:`sizes`."""
    device = torch.device(device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else None
    worlds = [P for P in WORLD_SIZES if gpus is None or P <= gpus]
    repeats = 3 if quick else 5
    rows = []
    if 2 in worlds:
        ping = [2**i for i in range(10, 23 if quick else 25, 2)]
        for row in launch(
            pingpong_worker, 2, device.type, ping, 5 if quick else 10, device=device, timeout_s=600
        ):
            rows.append({**row, "world_size": 2})
    for P in worlds:
        got = launch(
            attention_worker, P, device.type, sizes(quick), repeats, device=device, timeout_s=1800
        )
        for row in got:
            model = COSTS[row["method"]](
                row["n"],
                P,
                heads=row["heads"],
                head_dim=row["head_dim"],
                causal=row["causal"],
                layout=row["layout"],
                batch=row["batch"],
            )
            if row["sent_bytes"] != [c.sent_forward for c in model]:
                raise RuntimeError(
                    f"bytes sent {row['sent_bytes']} differ from the cost model's: {row}"
                )
            rows.append(
                {
                    "kind": "attention",
                    **row,
                    "model_sent_bytes": [c.sent_forward for c in model],
                    "model_kv_bytes": [c.kv_bytes for c in model],
                    "flops_forward": [c.flops_forward for c in model],
                    "cpu_count": os.cpu_count(),
                }
            )
    return rows
