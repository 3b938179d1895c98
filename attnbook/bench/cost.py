"""Suite "cost" (chapter 2): time of one Transformer
layer's forward pass against n and against d."""

from __future__ import annotations

import torch

from attnbook import cost
from attnbook.bench import sweep
from attnbook.checks import checked
from attnbook.measure import time_fn
from attnbook.mechanisms.dense import dense_attention
from attnbook.models.gpt import Block, GPTConfig
from attnbook.reference import attention as reference_attention

HEADS = 4


def _layer(n: int, d: int, device) -> Block:
    return Block(GPTConfig(vocab_size=2, block_size=n, n_head=HEADS, d_model=d)).to(device).eval()


def _check_core(device) -> None:
    """The attention core must match the NumPy reference before anything is timed."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, 96, 16, generator=g) for _ in range(3))
    fast = dense_attention(q.to(device), k.to(device), v.to(device), causal=True)
    checked(
        "dense attention",
        fast,
        reference_attention(
            q.double().numpy(), k.double().numpy(), v.double().numpy(), causal=True
        ),
    )


def _row(sweep_name: str, n: int, d: int, device, repeats: int) -> dict:
    layer = _layer(n, d, device)
    x = torch.randn(1, n, d, device=device)
    with torch.no_grad():
        t = time_fn(layer, x, warmup=2, repeats=repeats, device=device)
    return {
        "sweep": sweep_name,
        "n": n,
        "d": d,
        "heads": HEADS,
        "min_s": t.min_s,
        "q10_s": t.q10_s,
        "median_s": t.median_s,
        "q25_s": t.q25_s,
        "q75_s": t.q75_s,
        "flops": cost.layer_flops(n, d, HEADS, 4 * d),
    }


def run(device: torch.device, quick: bool) -> list[dict]:
    _check_core(device)
    ns = [128, 256, 512, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
    ds = [64, 128, 256, 512] if quick else [128, 256, 512, 1024, 2048, 4096]
    repeats = 5 if quick else 10
    rows = [_row("n", n, 64 if quick else 256, device, repeats) for n in sweep(ns, "n sweep")]
    rows += [_row("d", 256 if quick else 1024, d, device, repeats) for d in sweep(ds, "d sweep")]
    return rows
