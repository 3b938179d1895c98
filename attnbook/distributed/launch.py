"""Run a function on P processes joined by torch.distributed, from a notebook cell (chapter 9).

:func:`launch` starts P fresh Python processes on this machine (gloo over loopback on CPU, NCCL with
one GPU each on CUDA), calls ``fn(rank, world_size, *args)`` in each, and returns rank 0's result.
No torchrun needed. A rank that raises, dies or overruns the timeout stops the launch with an
error that names it; the other ranks are terminated. ``fn`` must be importable (defined in a
module, not in the notebook), because each process imports it afresh.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import pickle
import queue as _queue
import socket
import time
import traceback

import torch

from .common import DEFAULT_TIMEOUT_S, backend_for

__all__ = ["LaunchError", "free_port", "launch"]


class LaunchError(RuntimeError):
    """A rank raised, died, or did not finish in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, device_type, fn, args, results, timeout_s, threads):
    import torch.distributed as dist

    try:
        torch.set_num_threads(threads)
        device = torch.device(device_type)
        if device.type == "cuda":
            torch.cuda.set_device(rank)
            device = torch.device("cuda", rank)
        dist.init_process_group(
            backend_for(device),
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
        value = fn(rank, world_size, *args)
        results.put((rank, "ok", pickle.dumps(value)))
        dist.destroy_process_group()
    except BaseException:  # report every failure, then exit non-zero
        results.put((rank, "error", traceback.format_exc()))
        raise SystemExit(1) from None


def launch(fn, world_size: int, *args, device="cpu", timeout_s: float = 120.0, threads: int = 1):
    """Call ``fn(rank, world_size, *args)`` on
    ``world_size`` new processes and return rank 0's value.

    device: "cpu" (gloo) or "cuda" (NCCL, rank r on GPU r). Each process uses ``threads`` torch
    threads. Raises LaunchError naming the rank when one raises or exits early, and when the whole
    launch takes longer than ``timeout_s`` seconds (process start-up included).
    """
    device = _check_launch(fn, world_size, device)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    # collectives give up before the launch does
    inner_timeout = max(5.0, min(DEFAULT_TIMEOUT_S, timeout_s / 2))
    procs = [
        ctx.Process(
            target=_worker,
            daemon=True,
            args=(r, world_size, port, device.type, fn, args, results, inner_timeout, threads),
        )
        for r in range(world_size)
    ]
    _start(procs, threads)
    deadline, finished = time.monotonic() + timeout_s, False
    try:
        values = _collect(results, procs, world_size, deadline, timeout_s)
        finished = True
    finally:
        for p in procs:
            if finished:  # every rank reported: let them leave the process group and exit
                p.join(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        results.close()
    return values[0]


def _check_launch(fn, world_size, device) -> torch.device:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    device = torch.device(device)
    backend_for(device)
    if device.type == "cuda" and torch.cuda.device_count() < world_size:
        raise ValueError(
            f"world_size={world_size} needs as many GPUs, found {torch.cuda.device_count()}"
        )
    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise TypeError(
            f"fn must be importable by name (a module-level function), got {fn!r}: {e}"
        ) from None
    return device


def _start(procs, threads: int) -> None:
    """Start the ranks with OMP_NUM_THREADS=threads, restoring the variable afterwards."""
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        for p in procs:
            p.start()
    finally:
        if env_before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = env_before


def _collect(results, procs, world_size: int, deadline: float, timeout_s: float) -> dict:
    """{rank: value} as the ranks report; LaunchError naming a rank that fails, dies or is late."""
    values = {}
    while len(values) < world_size:
        try:
            rank, status, payload = results.get(timeout=0.2)
        except _queue.Empty:
            dead = [
                (r, p.exitcode)
                for r, p in enumerate(procs)
                if p.exitcode not in (None, 0) and r not in values
            ]
            if dead:
                time.sleep(0.5)  # its report, if it wrote one, may still be in the queue
                try:
                    rank, status, payload = results.get(timeout=0.5)
                except _queue.Empty:
                    r, code = dead[0]
                    raise LaunchError(
                        f"rank {r} of {world_size} died (exit code {code}) without reporting"
                    ) from None
            elif time.monotonic() > deadline:
                missing = [r for r in range(world_size) if r not in values]
                raise LaunchError(
                    f"ranks {missing} of {world_size} did not finish within {timeout_s:g} s"
                ) from None
            else:
                continue
        if status == "error":
            raise LaunchError(f"rank {rank} of {world_size} failed:\n{payload}")
        values[rank] = pickle.loads(payload)
    return values
