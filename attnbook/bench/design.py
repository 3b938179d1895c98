"""Suite "design" (chapter 6): depth against width at a fixed parameter count.

GPT models with L layers of width d, d chosen so that the blocks hold about the same
number of parameters N ≈ 12·L·d² for every L (heads of width 16). For each: latency of
one forward pass on a single token and on a short prompt (batch 1: the sequential
depth dominates), and throughput in tokens/s of a large batch (the matrix products
dominate). On CPU the suite times single-threaded, as the long-sequence suite does, and
restores the thread count afterwards.
"""
from __future__ import annotations

import torch

from .. import cost
from ..gpt import GPT, GPTConfig
from ..measure import time_fn
from . import checked, suite, sweep

__all__ = ["HEAD_DIM", "VOCAB", "shapes", "measure_shape"]

HEAD_DIM, VOCAB = 16, 65
LAYERS = (1, 2, 4, 8, 16, 32, 64)


def shapes(n_params: int, layers=LAYERS) -> list[tuple[int, int]]:
    """(L, d) pairs whose blocks hold about ``n_params`` parameters, d a multiple of the head width."""
    return [(L, cost.width_for_params(n_params, L, multiple=HEAD_DIM)) for L in layers]


def _model(layers: int, d: int, block: int, device) -> GPT:
    config = GPTConfig(vocab_size=VOCAB, block_size=block, n_layer=layers, n_head=d // HEAD_DIM, d_model=d, mixer="sdpa")
    model = GPT(config).to(device).eval()
    expected = cost.gpt_params(layers, d, VOCAB, block)
    if model.num_params() != expected:
        raise RuntimeError(f"GPT(L={layers}, d={d}) has {model.num_params()} parameters, the formula {expected}")
    return model


def _check_mixer(device) -> None:
    """The timed models use the 'sdpa' mixer: it must match 'dense' before anything is timed."""
    from ..attention import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, HEAD_DIM, generator=g).to(device) for _ in range(3))
    checked("sdpa", attention(q, k, v, method="sdpa", causal=True), attention(q, k, v, method="dense", causal=True))


def measure_shape(layers: int, d: int, device, prompt: int = 64, batch: int = 32, seq: int = 128,
                  repeats: int = 5) -> dict:
    """Latency (1 token and a ``prompt``-token prompt, batch 1) and throughput (batch × seq tokens) of one shape."""
    model = _model(layers, d, max(prompt, seq), device)
    g = torch.Generator().manual_seed(layers)
    one, short, big = (torch.randint(0, VOCAB, shape, generator=g).to(device) for shape in ((1, 1), (1, prompt), (batch, seq)))
    with torch.no_grad():
        t1, tp, tb = (time_fn(model, x, warmup=2, repeats=repeats, device=device) for x in (one, short, big))
    flops = cost.model_flops(seq, d, d // HEAD_DIM, 4 * d, layers, VOCAB, batch=batch)
    return {"layers": layers, "d": d, "heads": d // HEAD_DIM, "params": model.num_params(),
            "block_params": layers * cost.block_params(d), "prompt": prompt, "batch": batch, "seq": seq,
            "token_median_s": t1.median_s, "token_q25_s": t1.q25_s, "token_q75_s": t1.q75_s,
            "prompt_median_s": tp.median_s, "prompt_q25_s": tp.q25_s, "prompt_q75_s": tp.q75_s,
            "batch_median_s": tb.median_s, "batch_q25_s": tb.q25_s, "batch_q75_s": tb.q75_s,
            "tokens_per_s": batch * seq / tb.median_s, "batch_flops": flops}


@suite("design", "depth vs width at fixed parameters: latency (batch 1) and throughput (large batch)")
def run(device: torch.device, quick: bool) -> list[dict]:
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        _check_mixer(device)
        n_params = 12 * 512**2 if quick else 12 * 1024**2
        return [measure_shape(L, d, device) for L, d in sweep(shapes(n_params), "shapes")]
    finally:
        torch.set_num_threads(threads)
