"""Suite "inference" (chapter 10): a decode step on the roofline, KV-cache formats, paged-cache
waste, streaming with attention sinks, speculative decoding. Every row names its ``part``."""

from __future__ import annotations

import numpy as np
import torch

from attnbook import cost
from attnbook.experiments import inference as xp
from attnbook.experiments.roofline import peak_bandwidth, peak_matmul
from attnbook.measure import count_flops, time_fn
from attnbook.models.decoder import Decoder, KVCache
from attnbook.models.mla import MLADecoder
from attnbook.models.paged import PagedKVCache, padded_attention, paged_attention
from attnbook.models.speculative import speculative_decode, target_decode
from attnbook.models.streaming import SinkCache, streaming_loss

#: the synthetic request trace: request lengths (prompt + output) ~ round(LogNormal(ln 256, 0.9)),
#: clipped to 1 .. TRACE_MAX_LEN, the length every contiguous request reserves
TRACE_MEDIAN, TRACE_SIGMA, TRACE_MAX_LEN = 256, 0.9, 2048


def trace_lengths(requests: int, seed: int = 0) -> list[int]:
    """Request lengths of the synthetic trace (see :data:`TRACE_MEDIAN`). Chapter 10."""
    rng = np.random.default_rng(seed)
    n = np.rint(rng.lognormal(np.log(TRACE_MEDIAN), TRACE_SIGMA, size=requests))
    return [int(x) for x in np.clip(n, 1, TRACE_MAX_LEN)]


def roofline_rows(device, quick: bool) -> list[dict]:
    d, L, H, context = (128, 2, 4, 128) if quick else (256, 4, 8, 256)
    torch.manual_seed(0)
    model = Decoder(65, L, d, H, max_len=2048).to(device).eval()
    model_numbers = xp.decoder_numbers(model)
    peak = peak_matmul(device, size=512 if quick else 1024).value
    bandwidth = peak_bandwidth(device, nbytes=2**26 if quick else 2**28).value
    rows = []
    for batch in [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32, 64]:
        cache = model.new_cache()
        with torch.no_grad():
            model(torch.zeros(batch, context - 1, dtype=torch.long, device=device), cache)
            token = torch.zeros(batch, 1, dtype=torch.long, device=device)
            counted = count_flops(lambda: model(token, cache))
        flops = cost.decode_flops(
            batch,
            context,
            matmul_params=model_numbers["matmul_params"],
            layers=L,
            d_model=d,
        )
        if counted != flops:
            raise AssertionError(f"decode FLOPs: counted {counted}, formula {flops}")
        nbytes = cost.decode_bytes(
            batch,
            context,
            weight_bytes=model_numbers["weight_bytes"],
            kv_bytes_per_token=model_numbers["kv_bytes_per_token"],
        )
        seconds = xp.decode_step_time(model, batch, context - 1, device=device)
        predicted = max(flops / peak, nbytes / bandwidth)
        rows.append(
            {
                "part": "roofline",
                "kind": "decode",
                "batch": batch,
                "context": context,
                "flops": flops,
                "bytes": nbytes,
                "intensity": flops / nbytes,
                "step_min_s": seconds,
                "tokens_per_s": batch / seconds,
                "predicted_tokens_per_s": batch / predicted,
                "peak_flops": peak,
                "bandwidth": bandwidth,
                **{f"model_{k}": v for k, v in model_numbers.items()},
            }
        )
    for n in [64, 256] if quick else [64, 256, 1024]:
        rows.append(
            {
                "part": "roofline",
                "kind": "ttft_tpot",
                "batch": 1,
                "context": n,
                "ttft_s": xp.prefill_time(model, 1, n, device=device),
                "tpot_s": xp.decode_step_time(model, 1, n, device=device),
            }
        )
    return rows


def kv_format_rows(device, quick: bool) -> list[dict]:
    L, d, H, steps = 2, 64, 8, 32
    rows = []
    torch.manual_seed(0)
    idx = torch.randint(0, 65, (1, steps), device=device)
    for name, G in [("MHA", H), ("GQA-2", 2), ("MQA", 1)]:
        model = Decoder(65, L, d, H, kv_heads=G, max_len=steps).to(device).eval()
        cache = model.new_cache()
        with torch.no_grad():
            model(idx, cache)
        rows.append(
            {
                "part": "kv_formats",
                "format": name,
                "layers": L,
                "tokens": steps,
                "cache_bytes": cache.nbytes(),
                "formula_bytes": cost.kv_cache_bytes(L, d, steps, H, G, bytes_per_element=4),
                "numbers_per_token_layer": cache.nbytes() // (4 * L * steps),
            }
        )
    d_c, d_r, d_h = 32, 8, 8
    for dtype in (torch.float32, torch.float64):
        model = MLADecoder(65, L, d, H, d_h, d_c, d_r).to(device=device, dtype=dtype).eval()
        with torch.no_grad():
            naive = model(idx)
            cache = model.new_cache()
            absorbed = torch.cat(
                [model(idx[:, t : t + 1], cache, absorbed=True) for t in range(steps)], dim=1
            )
        e = torch.finfo(dtype).bits // 8
        rows.append(
            {
                "part": "kv_formats",
                "format": "MLA",
                "dtype": str(dtype).removeprefix("torch."),
                "layers": L,
                "tokens": steps,
                "latent_dim": d_c,
                "rope_dim": d_r,
                "head_dim": d_h,
                "cache_bytes": cache.nbytes(),
                "formula_bytes": cost.kv_cache_bytes(
                    L, d, steps, H, bytes_per_element=e, latent_dim=d_c, rope_dim=d_r
                ),
                "numbers_per_token_layer": cache.nbytes() // (e * L * steps),
                "absorbed_vs_naive_rel_err": float(
                    (absorbed - naive).abs().max() / naive.abs().max()
                ),
            }
        )
    return rows


def _paged_waste_rows(quick: bool) -> list[dict]:
    """Reserved-but-unused KV slots of a paged cache at block sizes 8, 16, 32, against a
    contiguous cache and the formulas (chapter 10)."""
    lengths = trace_lengths(200 if quick else 1000)
    rows = []
    for block in (8, 16, 32):
        cache = PagedKVCache(sum(-(-n // block) for n in lengths), block, 1, 1)
        for i, n in enumerate(lengths):
            cache.add(i)
            cache.append(i, torch.zeros(1, n, 1), torch.zeros(1, n, 1))
        live = sum(cache.lengths.values())
        rows.append(
            {
                "part": "paged",
                "kind": "waste",
                "block_size": block,
                "requests": len(lengths),
                "median_length": TRACE_MEDIAN,
                "sigma": TRACE_SIGMA,
                "max_len": TRACE_MAX_LEN,
                "mean_length": live / len(lengths),
                "waste_paged": 1 - live / cache.reserved_slots(),
                "waste_contiguous": cost.contiguous_waste(lengths, TRACE_MAX_LEN),
                "waste_paged_formula": cost.paged_waste(lengths, block),
            }
        )
    return rows


def _paged_decode_row(device) -> dict:
    """Decode through pages against a contiguous padded cache: B ragged sequences, one query
    each; times and the largest difference of the outputs (chapter 10)."""
    B, H, G, dk, block = (8, 8, 8, 64, 16)
    batch_lengths = trace_lengths(B, seed=1)
    cache = PagedKVCache(sum(-(-n // block) for n in batch_lengths), block, G, dk, device=device)
    keys, values = [], []
    torch.manual_seed(0)
    for i, n in enumerate(batch_lengths):
        k, v = torch.randn(G, n, dk, device=device), torch.randn(G, n, dk, device=device)
        cache.add(i)
        cache.append(i, k, v)
        keys.append(k)
        values.append(v)
    S = max(batch_lengths)
    k_pad = torch.stack([torch.nn.functional.pad(k, (0, 0, 0, S - k.shape[1])) for k in keys])
    v_pad = torch.stack([torch.nn.functional.pad(v, (0, 0, 0, S - v.shape[1])) for v in values])
    lengths_t = torch.tensor(batch_lengths, device=device)
    q = torch.randn(B, H, 1, dk, device=device)
    seqs = list(range(B))
    paged_out = paged_attention(q, cache, seqs)
    padded_out = padded_attention(q, k_pad, v_pad, lengths_t)
    t_paged = time_fn(paged_attention, q, cache, seqs, repeats=20, device=device)
    t_padded = time_fn(padded_attention, q, k_pad, v_pad, lengths_t, repeats=20, device=device)
    return {
        "part": "paged",
        "kind": "decode_time",
        "batch": B,
        "heads": H,
        "head_dim": dk,
        "block_size": block,
        "lengths": batch_lengths,
        "paged_min_s": t_paged.min_s,
        "contiguous_min_s": t_padded.min_s,
        "max_abs_diff": float((paged_out - padded_out).abs().max()),
    }


def paged_rows(device, quick: bool) -> list[dict]:
    """Paged KV cache (chapter 10): slot waste per block size, then one decode-time row."""
    return _paged_waste_rows(quick) + [_paged_decode_row(device)]


def sinks_rows(device, quick: bool, corpus) -> list[dict]:
    block, window, sinks = 64, 64, 4
    steps, T, streams = (150, 384, 2) if quick else (600, 1024, 4)
    model, result = xp.train_decoder(
        corpus,
        layers=2,
        d_model=64,
        heads=4,
        block_size=block,
        steps=steps,
        positions=False,
        max_len=T,
        device=device,
    )
    starts = torch.linspace(0, len(corpus.val) - T - 1, streams).long().tolist()
    stream = torch.stack([corpus.val[s : s + T] for s in starts]).to(device)
    rows = []
    configs = [
        ("full", lambda: KVCache(2)),
        ("window", lambda: SinkCache(2, 0, window)),
        ("window+sinks", lambda: SinkCache(2, sinks, window - sinks)),
    ]
    for name, make in configs:
        losses, sizes = streaming_loss(model, stream, make())
        rows.append(
            {
                "part": "sinks",
                "cache": name,
                "train_context": block,
                "cache_tokens": None if name == "full" else window,
                "sinks": sinks if name == "window+sinks" else 0,
                "stream_tokens": T,
                "streams": streams,
                "train_steps": steps,
                "val_loss_trained": result.final_val_loss,
                "loss_within_train_context": float(losses[: block - 1].mean()),
                "loss_beyond_train_context": float(losses[block - 1 :].mean()),
                "loss_curve": [round(float(x), 4) for x in losses],
                "cache_bytes_at_train_context": sizes[block - 1],
                "cache_bytes_max": max(sizes),
                "cache_bytes_final": sizes[-1],
            }
        )
    return rows


def _greedy_identical(target, draft, prompts, new: int) -> bool:
    """True, or an AssertionError: greedy speculative decoding (γ = 4) emits exactly the target's
    own greedy tokens for every prompt."""
    for p in prompts:
        if not torch.equal(
            target_decode(target, p, new), speculative_decode(target, draft, p, new, 4)[0]
        ):
            raise AssertionError("greedy speculative decoding differs from target-only decoding")
    return True


def speculative_rows(device, quick: bool, corpus) -> list[dict]:
    block, steps = 64, (150 if quick else 500)
    sizes = {"block_size": block, "steps": steps, "batch_size": 16, "device": device}
    target, _ = xp.train_decoder(corpus, layers=3, d_model=96, heads=4, **sizes)
    draft, _ = xp.train_decoder(corpus, layers=1, d_model=32, heads=2, **sizes)
    prompts, new = (3, 32) if quick else (12, 48)
    starts = torch.linspace(0, len(corpus.val) - 20, prompts).long().tolist()
    prompt_list = [corpus.val[s : s + 16][None].to(device) for s in starts]
    identical = _greedy_identical(target, draft, prompt_list, new)
    t_target = xp.decode_step_time(target, 1, 32, device=device)
    t_draft = xp.decode_step_time(draft, 1, 32, device=device)
    ratio = t_draft / t_target

    def run_target():
        for i, p in enumerate(prompt_list):
            target_decode(target, p, new, greedy=False, generator=torch.Generator().manual_seed(i))

    base = time_fn(run_target, warmup=0, repeats=2 if quick else 3, device=device).min_s
    rows = []
    for gamma in range(1, 7):
        totals = {"accepted": 0, "trials": 0, "calls": 0, "emitted": 0}

        def run_spec():
            for key in totals:
                totals[key] = 0
            for i, p in enumerate(prompt_list):
                g = torch.Generator().manual_seed(i)
                _, s = speculative_decode(target, draft, p, new, gamma, greedy=False, generator=g)
                totals["accepted"] += s.accepted
                totals["trials"] += s.trials
                totals["calls"] += s.target_calls
                totals["emitted"] += s.emitted

        seconds = time_fn(run_spec, warmup=0, repeats=2 if quick else 3, device=device).min_s
        alpha = totals["accepted"] / totals["trials"]
        rows.append(
            {
                "part": "speculative",
                "gamma": gamma,
                "alpha": alpha,
                "tokens_per_call": totals["emitted"] / totals["calls"],
                "tokens_per_call_formula": cost.expected_tokens_per_step(alpha, gamma),
                "prompts": prompts,
                "new_tokens": new,
                "greedy_identical": identical,
                "cost_ratio": ratio,
                "speedup": base / seconds,
                "speedup_predicted": cost.speculative_speedup(alpha, gamma, ratio),
                "target_only_s": base,
                "speculative_s": seconds,
            }
        )
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    from attnbook.experiments.data import CharCorpus, load_tinyshakespeare

    corpus = CharCorpus(load_tinyshakespeare())
    return (
        roofline_rows(device, quick)
        + kv_format_rows(device, quick)
        + paged_rows(device, quick)
        + sinks_rows(device, quick, corpus)
        + speculative_rows(device, quick, corpus)
    )
