"""Suite "flash" (chapter 4): the torch FlashAttention
loop against PyTorch's fused SDPA, in one run.

For B = 1, H = 4, D = 64 (the shape of the issue that set the targets) and n = 1024, 2048, 4096,
causal and not: the minimum time of ``repeats`` calls of each form, the forms interleaved call by
call so that all see the same machine; then the peak memory of each at n = 16384 (causal); and a
sweep of the loop's tile size, which is how :data:`attnbook.mechanisms.flash.BLOCK_SIZE` was
chosen. The forms are the bare functions (``sdpa``, ``flash-bB``) and the same two through the
public API, ``attnbook.attention(..., method="flash" | "sdpa")`` (``flash-api``, ``sdpa-api``: what
a reader calls); every ``ratio_to_sdpa`` is against bare SDPA. Every form is checked against SDPA
before it is timed.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from attnbook.bench import sweep
from attnbook.checks import checked
from attnbook.measure import peak_memory_bytes, sync
from attnbook.mechanisms.flash import BLOCK_SIZE, flash_attention
from attnbook.registry import attention

__all__ = ["SHAPE", "interleaved_min", "run"]

SHAPE = {"batch": 1, "heads": 4, "head_dim": 64}
TILES = (64, 128, 256, 512)


def _inputs(n: int, device):
    g = torch.Generator().manual_seed(n)
    return [
        torch.randn(SHAPE["batch"], SHAPE["heads"], n, SHAPE["head_dim"], generator=g).to(device)
        for _ in range(3)
    ]


def interleaved_min(fns: dict, repeats: int, device) -> dict:
    """{name: minimum seconds} over ``repeats`` rounds, each calling every function once in turn."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _forms(q, k, v, causal: bool) -> dict:
    """SDPA, the loop at every tile size, and both through the public API, by form name."""
    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        **{
            f"flash-b{b}": (lambda b=b: flash_attention(q, k, v, causal=causal, block_size=b))
            for b in TILES
        },
        **{
            f"{m}-api": (lambda m=m: attention(q, k, v, method=m, causal=causal))
            for m in ("flash", "sdpa")
        },
    }


def _time_rows(n: int, device, repeats: int) -> list[dict]:
    rows = []
    q, k, v = _inputs(n, device)
    for causal in (False, True):
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        fns = _forms(q, k, v, causal)
        for form in (f"flash-b{BLOCK_SIZE}", "flash-api"):
            checked(f"{form} n={n} causal={causal}", fns[form](), ref, rtol=1e-4, atol=1e-5)
        best = interleaved_min(fns, repeats, device)
        for name, seconds in best.items():
            rows.append(
                {
                    "part": "time",
                    "form": name,
                    "n": n,
                    "causal": causal,
                    "min_s": seconds,
                    "block_size": int(name.split("-b")[1]) if "-b" in name else None,
                    "api": name.endswith("-api"),
                    "ratio_to_sdpa": seconds / best["sdpa"],
                    **SHAPE,
                }
            )
    return rows


def _memory_rows(n: int, device) -> list[dict]:
    q, k, v = _inputs(n, device)
    fns = _forms(q, k, v, True)
    fns["flash"] = fns[f"flash-b{BLOCK_SIZE}"]
    return [
        {
            "part": "memory",
            "form": name,
            "n": n,
            "causal": True,
            "block_size": BLOCK_SIZE if name.startswith("flash") else None,
            "api": name.endswith("-api"),
            "peak_bytes": int(peak_memory_bytes(fns[name], device=device)),
            **SHAPE,
        }
        for name in ("sdpa", "flash", "sdpa-api", "flash-api")
    ]


def run(device: torch.device, quick: bool) -> list[dict]:
    ns = (512, 1024) if quick else (1024, 2048, 4096)
    repeats = 3 if quick else 9
    with torch.no_grad():
        rows = [row for n in sweep(ns, "time") for row in _time_rows(n, device, repeats)]
        return rows + _memory_rows(2048 if quick else 16384, device)
