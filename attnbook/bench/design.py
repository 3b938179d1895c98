"""Suite "design" (chapter 6): depth against width at a fixed parameter count.

GPT models with L layers of width d, d chosen so that the blocks hold about the same
number of parameters N ≈ 12·L·d² for every L (heads of width 16). For each: latency of
one forward pass on a single token and on a short prompt (batch 1: the sequential
depth dominates), and throughput in tokens/s of a large batch (the matrix products
dominate). On CPU the suite times single-threaded, as the long-sequence suite does (and
leaves torch at one thread, so that the stored label says so).
"""

from __future__ import annotations

import numpy as np
import torch

from attnbook import cost
from attnbook.bench import sweep
from attnbook.checks import checked
from attnbook.measure import time_fn
from attnbook.models.gpt import GPT, GPTConfig

__all__ = ["HEAD_DIM", "VOCAB", "shapes", "measure_shapes"]

HEAD_DIM, VOCAB = 16, 65
LAYERS = (1, 2, 4, 8, 16, 32, 64)


def shapes(n_params: int, layers=LAYERS) -> list[tuple[int, int]]:
    """(L, d) pairs whose blocks hold about ``n_params``
    parameters, d a multiple of the head width."""
    return [(L, cost.width_for_params(n_params, L, multiple=HEAD_DIM)) for L in layers]


def _model(layers: int, d: int, block: int, device) -> GPT:
    config = GPTConfig(
        vocab_size=VOCAB,
        block_size=block,
        n_layer=layers,
        n_head=d // HEAD_DIM,
        d_model=d,
        mixer="sdpa",
    )
    model = GPT(config).to(device).eval()
    expected = cost.gpt_params(layers, d, VOCAB, block)
    if model.num_params() != expected:
        raise RuntimeError(
            f"GPT(L={layers}, d={d}) has {model.num_params()} parameters, the formula {expected}"
        )
    return model


def _check_mixer(device) -> None:
    """The timed models use the 'sdpa' mixer: it must match 'dense' before anything is timed."""
    from attnbook.registry import attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, HEAD_DIM, generator=g).to(device) for _ in range(3))
    checked(
        "sdpa",
        attention(q, k, v, method="sdpa", causal=True),
        attention(q, k, v, method="dense", causal=True),
    )


def _timings(layers: int, d: int, device, prompt: int, batch: int, seq: int, repeats: int) -> dict:
    model = _model(layers, d, max(prompt, seq), device)
    g = torch.Generator().manual_seed(layers)
    inputs = {"token": (1, 1), "prompt": (1, prompt), "batch": (batch, seq)}
    with torch.no_grad():
        return {
            kind: time_fn(
                model,
                torch.randint(0, VOCAB, shape, generator=g).to(device),
                warmup=2,
                repeats=repeats,
                device=device,
            )
            for kind, shape in inputs.items()
        }


def measure_shapes(
    shapes_,
    device,
    prompt: int = 64,
    batch: int = 8,
    seq: int = 128,
    repeats: int = 5,
    rounds: int = 3,
) -> list[dict]:
    """Latency (1 token, and a ``prompt``-token prompt, batch 1)
    and throughput (batch × seq tokens) of each (L, d).

    The shapes are timed in ``rounds`` interleaved passes, so that a burst of load from other jobs
    does not fall on one shape only; a row reports the median of the passes' medians (and of their
    quartiles), and the fastest call seen.
    """
    passes = [
        [_timings(L, d, device, prompt, batch, seq, repeats) for L, d in shapes_]
        for _ in sweep(range(rounds), "rounds")
    ]
    rows = []
    for i, (L, d) in enumerate(shapes_):
        row = {
            "layers": L,
            "d": d,
            "heads": d // HEAD_DIM,
            "params": cost.gpt_params(L, d, VOCAB, max(prompt, seq)),
            "block_params": L * cost.layer_params(d),
            "prompt": prompt,
            "batch": batch,
            "seq": seq,
        }
        for kind in ("token", "prompt", "batch"):
            ts = [p[i][kind] for p in passes]
            row.update(
                {
                    f"{kind}_median_s": float(np.median([t.median_s for t in ts])),
                    f"{kind}_q25_s": float(np.median([t.q25_s for t in ts])),
                    f"{kind}_q75_s": float(np.median([t.q75_s for t in ts])),
                    f"{kind}_min_s": min(t.min_s for t in ts),
                }
            )
        row["tokens_per_s"] = batch * seq / row["batch_median_s"]
        row["batch_flops"] = cost.model_flops(seq, d, d // HEAD_DIM, 4 * d, L, VOCAB, batch=batch)
        rows.append(row)
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    """Single-threaded on CPU (the record's ``cpu_threads``, set by the runner)."""
    _check_mixer(device)
    n_params = 12 * 512**2 if quick else 12 * 1024**2
    return measure_shapes(shapes(n_params), device, rounds=3 if quick else 5)
