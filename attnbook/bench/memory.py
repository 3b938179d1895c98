"""Suite "memory" (chapter 3): activation bytes,
formula vs measured, and the checkpointing sweep."""

from __future__ import annotations

import torch

from attnbook import cost
from attnbook.bench import sweep
from attnbook.measure import peak_memory_bytes, saved_tensor_bytes, sync, time_fn
from attnbook.models.checkpointing import CheckpointedStack
from attnbook.models.gpt import Block, GPTConfig


def _cuda_retained_bytes(block, x) -> int:
    """CUDA: bytes still allocated after the forward pass (saved activations + output)."""
    sync(x.device)
    before = torch.cuda.memory_allocated(x.device)
    out = block(x)
    sync(x.device)
    retained = torch.cuda.memory_allocated(x.device) - before - out.numel() * out.element_size()
    del out
    return int(retained)


def activation_rows(device, quick: bool) -> list[dict]:
    shapes = [(1, 256, 64, 4), (2, 512, 64, 4), (1, 1024, 128, 8), (4, 256, 128, 2)]
    if not quick:
        shapes += [(1, 2048, 256, 8), (2, 4096, 256, 4), (8, 1024, 512, 8)]
    rows = []
    rng_state = torch.device(device).type == "cuda"  # see cost.block_saved_bytes
    for b, n, d, H in sweep(shapes, "activations"):
        for mixer in ("dense", "sdpa"):
            block = (
                Block(GPTConfig(vocab_size=2, block_size=n, n_head=H, d_model=d, mixer=mixer))
                .to(device)
                .train()
            )
            x = torch.randn(b, n, d, device=device, requires_grad=True)
            row = {
                "kind": "activations",
                "mixer": mixer,
                "batch": b,
                "n": n,
                "d": d,
                "heads": H,
                "formula_bytes": cost.block_saved_bytes(
                    b, n, d, H, fused=mixer == "sdpa", rng_state=rng_state and mixer == "sdpa"
                ),
                "saved_bytes": saved_tensor_bytes(block, x),
                "korthikanti_16bit_bytes": cost.korthikanti_layer_bytes(n, b, d, H),
            }
            if device.type == "cuda":
                row["cuda_retained_bytes"] = _cuda_retained_bytes(block, x)
            rows.append(row)
    return rows


def checkpoint_rows(device, quick: bool) -> list[dict]:
    layers, b, n, d, H = (8, 4, 256, 64, 4) if quick else (16, 8, 1024, 256, 4)
    stack = CheckpointedStack(layers, d, H, n).to(device).train()
    x = torch.randn(b, n, d, device=device, requires_grad=True)

    def step():
        stack(x).square().mean().backward()

    rows = []
    for k in sweep(range(0, layers + 1), "checkpoint every k"):
        stack.every = k
        peak = peak_memory_bytes(step, device=device) if device.type in ("cpu", "cuda") else None
        t = time_fn(step, warmup=1, repeats=3 if quick else 5, device=device)
        rows.append(
            {
                "kind": "checkpoint",
                "every": k,
                "layers": layers,
                "batch": b,
                "n": n,
                "d": d,
                "heads": H,
                "saved_bytes": saved_tensor_bytes(stack, x),
                "peak_bytes": peak,
                "step_median_s": t.median_s,
                "step_q25_s": t.q25_s,
                "step_q75_s": t.q75_s,
                "step_min_s": t.min_s,
            }
        )
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    rows = activation_rows(device, quick)
    bad = [r for r in rows if r["saved_bytes"] != r["formula_bytes"]]
    if bad:
        raise AssertionError(f"activation formula disagrees with the measured count: {bad[0]}")
    return rows + checkpoint_rows(device, quick)
