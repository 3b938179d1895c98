"""Serving experiments of chapter 10 (Attention at inference): small character-level decoders
trained on tiny Shakespeare, and what a decode step costs, counted and timed.
"""

from __future__ import annotations

import torch
from torch import nn

from attnbook.checks import check_positive_int
from attnbook.measure import time_fn
from attnbook.models.decoder import Decoder

__all__ = [
    "CausalLM",
    "train_decoder",
    "decoder_numbers",
    "decode_step_time",
    "prefill_time",
]


class CausalLM(nn.Module):
    """``Decoder`` with the training interface of ``attnbook.models.train.train``:
    (x, y) -> (logits, mean next-token loss). x, y: (B, N) token ids."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        logits = self.decoder(x)
        if y is None:
            return logits, None
        return logits, nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


def train_decoder(
    corpus,
    *,
    layers: int,
    d_model: int,
    heads: int,
    block_size: int,
    steps: int,
    batch_size: int = 32,
    positions: bool = True,
    max_len: int | None = None,
    lr: float = 3e-3,
    seed: int = 0,
    device="cpu",
):
    """Train a :class:`Decoder` on ``corpus`` (a ``CharCorpus``) at context ``block_size``.

    ``positions=False`` zeroes and freezes the position embedding (a causal model without
    positions, for streaming). ``max_len`` (default ``block_size``) is the longest sequence the
    trained decoder accepts. Returns the decoder in eval mode and the ``TrainResult``.
    """
    from attnbook.models.train import train

    check_positive_int("block_size", block_size)
    max_len = block_size if max_len is None else check_positive_int("max_len", max_len)

    def build():
        dec = Decoder(corpus.vocab_size, layers, d_model, heads, max_len=max(max_len, block_size))
        if not positions:
            nn.init.zeros_(dec.pos.weight)
            dec.pos.weight.requires_grad_(False)
        return CausalLM(dec).to(device)

    def get_batch(split, generator):
        return corpus.get_batch(split, batch_size, block_size, generator, device=device)

    result = train(
        build,
        get_batch,
        steps,
        lr=lr,
        eval_every=steps,
        eval_batches=4,
        seed=seed,
        progress=False,
    )
    return result.model.decoder.eval(), result


def decoder_numbers(model: Decoder, bytes_per_element: int = 4) -> dict:
    """What the decode-step formulas need, read off a ``Decoder``: ``matmul_params`` (weights of
    linear layers and the head), ``weight_bytes`` (every parameter, the tied head once, but not
    the position table, of which a step reads one row),
    ``layers``, ``d_model`` and ``kv_bytes_per_token`` (one sequence, all layers). Chapter 10."""
    from attnbook.cost.memory import kv_cache_bytes

    att = model.att[0]
    d_model = model.tok.weight.shape[1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return {
        "matmul_params": sum(m.weight.numel() for m in linears),
        "weight_bytes": (sum(p.numel() for p in model.parameters()) - model.pos.weight.numel())
        * bytes_per_element,
        "layers": len(model.att),
        "d_model": d_model,
        "kv_bytes_per_token": kv_cache_bytes(
            len(model.att), d_model, 1, att.heads, att.kv_heads, bytes_per_element
        ),
    }


@torch.no_grad()
def _filled_cache(model: Decoder, batch: int, context: int, device):
    cache = model.new_cache()
    vocab = model.tok.weight.shape[0]
    model(torch.randint(0, vocab, (batch, context), device=device), cache)
    return cache


@torch.no_grad()
def decode_step_time(model: Decoder, batch: int, context: int, *, device="cpu", repeats: int = 7):
    """Fastest time (s) of one decode step of ``batch`` sequences whose cache holds ``context``
    tokens; the step appends one token, which is dropped again between repeats. Chapter 10."""
    from attnbook.models.speculative import truncate_cache

    check_positive_int("batch", batch)
    check_positive_int("context", context)
    cache = _filled_cache(model, batch, context, device)
    token = torch.zeros(batch, 1, dtype=torch.long, device=device)

    def step():
        model(token, cache)
        truncate_cache(cache, context)

    return time_fn(step, warmup=2, repeats=repeats, device=device).min_s


@torch.no_grad()
def prefill_time(model: Decoder, batch: int, n: int, *, device="cpu", repeats: int = 5) -> float:
    """Fastest time (s) of the prefill of ``n`` prompt tokens into a fresh cache: the time to
    first token. Chapter 10."""
    check_positive_int("n", n)
    vocab = model.tok.weight.shape[0]
    prompt = torch.randint(0, vocab, (batch, n), device=device)
    return time_fn(
        lambda: model(prompt, model.new_cache()), warmup=1, repeats=repeats, device=device
    ).min_s
