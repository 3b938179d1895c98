"""Suite "flash" (chapter 4): the torch FlashAttention loop against PyTorch's fused SDPA, in one run.

For B = 1, H = 4, D = 64 (the shape of the issue that set the targets) and n = 1024, 2048, 4096, causal
and not: the minimum time of ``repeats`` calls of each form, the two forms interleaved call by call
so that both see the same machine; then the peak memory of each at n = 16384 (causal); and a sweep
of the loop's tile size, which is how :data:`attnbook.mechanisms.flash.BLOCK_SIZE` was chosen. Every
form is checked against the other before it is timed.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from attnbook.bench import sweep
from attnbook.checks import checked
from attnbook.measure import peak_memory_bytes, sync
from attnbook.mechanisms.flash import BLOCK_SIZE, flash_attention

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
    """{name: minimum seconds} over ``repeats`` rounds, each round calling every function once in turn."""
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


def run(device: torch.device, quick: bool) -> list[dict]:
    if device.type == "cpu":
        torch.set_num_threads(2 if torch.get_num_threads() >= 2 else 1)
    rows = []
    ns = (512, 1024) if quick else (1024, 2048, 4096)
    repeats = 3 if quick else 9
    with torch.no_grad():
        for n in sweep(ns, "time"):
            q, k, v = _inputs(n, device)
            for causal in (False, True):
                ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                checked(
                    f"flash n={n} causal={causal}",
                    flash_attention(q, k, v, causal=causal),
                    ref,
                    rtol=1e-4,
                    atol=1e-5,
                )
                fns = {
                    "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                    **{
                        f"flash-b{b}": (
                            lambda b=b: flash_attention(q, k, v, causal=causal, block_size=b)
                        )
                        for b in TILES
                    },
                }
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
                            "ratio_to_sdpa": seconds / best["sdpa"],
                            **SHAPE,
                        }
                    )
        n = 2048 if quick else 16384
        q, k, v = _inputs(n, device)
        for name, fn in (
            ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
            ("flash", lambda: flash_attention(q, k, v, causal=True, block_size=BLOCK_SIZE)),
        ):
            rows.append(
                {
                    "part": "memory",
                    "form": name,
                    "n": n,
                    "causal": True,
                    "block_size": BLOCK_SIZE if name == "flash" else None,
                    "peak_bytes": int(peak_memory_bytes(fn, device=device)),
                    **SHAPE,
                }
            )
    return rows
