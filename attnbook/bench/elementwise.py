"""Suite "elementwise" (chapter 7): training-time
scaling, decoding cost vs context, and a quality sweep.

Three parts, each row tagged with ``part``:

* ``train``: forward + backward time of the attention core against n, element-wise attention
  (parallel form, t = 2 and 6) beside dense softmax attention;
* ``decode``: time per generated token and state bytes against the context length, the recurrent
  element-wise step (fixed state) against dense attention reading a KV cache (which grows);
* ``quality``: small models trained on the same budget per task (tiny Shakespeare, MQAR, the
  synthetic forecasting task) for softmax, linear and element-wise attention, with seeds; the
  character models also get their spikiness measured.

Each form is checked against its reference before it is timed (:func:`attnbook.bench.checked`).
"""

from __future__ import annotations

import math

import torch

from attnbook import reference
from attnbook.bench import sweep
from attnbook.checks import checked
from attnbook.experiments import elementwise_tasks
from attnbook.measure import time_fn
from attnbook.mechanisms import elementwise
from attnbook.mechanisms.dense import dense_attention

__all__ = [
    "TRAIN_SHAPE",
    "DECODE_SHAPE",
    "QUALITY",
    "random_qkv",
    "check_parallel",
    "train_scaling",
    "decode_costs",
    "quality_sweep",
]

TRAIN_SHAPE = {"batch": 1, "heads": 4, "head_dim": 32}
DECODE_SHAPE = {"batch": 1, "heads": 4, "head_dim": 64}
#: Shared budgets of the quality sweep (quick sizes; the full sweep multiplies the steps by 4).
QUALITY = {
    "tinyshakespeare": dict(
        block_size=32, steps=150, batch_size=16, d_model=32, n_layer=2, n_head=2, lr=3e-3
    ),
    "mqar": dict(
        seq_len=24,
        num_pairs=4,
        vocab_size=17,
        steps=200,
        batch_size=32,
        d_model=32,
        n_layer=2,
        n_head=2,
        lr=3e-3,
    ),
    "timeseries": dict(
        seq_len=64, steps=150, batch_size=16, d_model=32, n_layer=2, n_head=2, lr=3e-3
    ),
}


def random_qkv(n: int, shape: dict, device, seed: int = 0, requires_grad: bool = False):
    """Three random (B, H, n, D) tensors with B, H, D from ``shape`` (seeded by seed + n)."""
    g = torch.Generator().manual_seed(seed + n)
    return [
        torch.randn(shape["batch"], shape["heads"], n, shape["head_dim"], generator=g)
        .to(device)
        .requires_grad_(requires_grad)
        for _ in range(3)
    ]


def check_parallel(order: int, device) -> None:
    """Refuse (CorrectnessError) a causal parallel
    form that differs from the NumPy Taylor reference."""
    q, k, v = random_qkv(96, TRAIN_SHAPE, device)
    ref = elementwise.elementwise_taylor_numpy(
        *(x.double().cpu().numpy() for x in (q, k, v)), order=order, causal=True
    )
    checked(
        f"elementwise t={order}",
        elementwise.elementwise_attention(q, k, v, order=order, causal=True),
        ref,
        rtol=1e-4,
        atol=1e-5,
    )


def train_scaling(device, quick: bool) -> list[dict]:
    """Forward + backward seconds of the causal attention core vs n (no model around it)."""
    ns = [256 * 2**i for i in range(5 if quick else 8)]  # 256 .. 4096 (quick) or 32768
    forms = {
        "softmax": (lambda q, k, v: dense_attention(q, k, v, causal=True), 4096 if quick else 16384)
    }
    for t in (2, 6):
        check_parallel(t, device)
        forms[f"EA t={t}"] = (
            lambda q, k, v, t=t: elementwise.elementwise_attention(q, k, v, order=t, causal=True),
            ns[-1],
        )
    q, k, v = random_qkv(96, TRAIN_SHAPE, device)
    checked(
        "softmax",
        forms["softmax"][0](q, k, v),
        reference.attention(*(x.double().cpu().numpy() for x in (q, k, v)), causal=True),
    )
    rows = []
    for n in sweep(ns, "train scaling"):
        q, k, v = random_qkv(n, TRAIN_SHAPE, device, requires_grad=True)
        for name, (fn, n_max) in forms.items():
            if n > n_max:
                continue

            def fwd_bwd(fn=fn):
                q.grad = k.grad = v.grad = None
                fn(q, k, v).sum().backward()

            t = time_fn(fwd_bwd, warmup=1, repeats=3 if quick else 5, device=device)
            rows.append(
                {
                    "part": "train",
                    "form": name,
                    "n": n,
                    **TRAIN_SHAPE,
                    "median_s": t.median_s,
                    "q25_s": t.q25_s,
                    "q75_s": t.q75_s,
                    "min_s": t.min_s,
                }
            )
    return rows


def _dense_decode(cache_k, cache_v, length: int, q_t, k_t, v_t):
    """Append (k_t, v_t) at position ``length`` of
    preallocated caches, attend over length+1 keys."""
    cache_k[:, :, length], cache_v[:, :, length] = k_t, v_t
    keys, values = cache_k[:, :, : length + 1], cache_v[:, :, : length + 1]
    w = torch.softmax((keys @ q_t.unsqueeze(-1)).squeeze(-1) / math.sqrt(q_t.shape[-1]), dim=-1)
    return (w.unsqueeze(-2) @ values).squeeze(-2)


def _checked_decoders(q, k, v, L: int, tokens: int, order: int):
    """EA's state after L tokens and a dense KV cache holding them, each checked at position L (EA
    against its parallel form's row L, dense against the NumPy reference for that query row);
    returns (state, cache_k, cache_v)."""
    state = elementwise.elementwise_prefill(k[:, :, :L], v[:, :, :L], order=order)
    _, o = elementwise.elementwise_step(state, q[:, :, L], k[:, :, L], v[:, :, L])
    par = elementwise.elementwise_attention(
        q[:, :, : L + 1], k[:, :, : L + 1], v[:, :, : L + 1], order=order, causal=True
    )
    checked(f"EA step at L={L}", o, par[:, :, L], rtol=1e-3, atol=1e-4)
    cache_k = torch.zeros(q.shape[0], q.shape[1], L + tokens, q.shape[3], device=q.device)
    cache_v = torch.zeros_like(cache_k)
    cache_k[:, :, :L], cache_v[:, :, :L] = k[:, :, :L], v[:, :, :L]
    dense_o = _dense_decode(cache_k, cache_v, L, q[:, :, L], k[:, :, L], v[:, :, L])
    qn, kn, vn = (
        x.double().cpu().numpy() for x in (q[:, :, L : L + 1], k[:, :, : L + 1], v[:, :, : L + 1])
    )
    ref = reference.scaled_dot_product_attention(qn, kn, vn)[0][:, :, 0]
    checked(f"dense decode at L={L}", dense_o, ref)
    return state, cache_k, cache_v


def _decode_forms(q, k, v, L: int, tokens: int, order: int):
    """[(form, fn, state bytes)]: ``tokens`` decoding steps after L tokens, EA's recurrent step
    and softmax over a KV cache, both checked first."""
    state, cache_k, cache_v = _checked_decoders(q, k, v, L, tokens, order)

    def ea_tokens(state=state):
        for i in range(tokens):
            state, _ = elementwise.elementwise_step(
                state, q[:, :, L + i], k[:, :, L + i], v[:, :, L + i]
            )

    def dense_tokens():
        for i in range(tokens):
            _dense_decode(cache_k, cache_v, L + i, q[:, :, L + i], k[:, :, L + i], v[:, :, L + i])

    elem = q.element_size()
    ea_bytes = (state.A.numel() + state.Z.numel()) * elem
    kv_bytes = 2 * L * q.shape[1] * q.shape[3] * q.shape[0] * elem
    return [
        (f"EA t={order} (recurrent)", ea_tokens, ea_bytes),
        ("softmax + KV cache", dense_tokens, kv_bytes),
    ]


def decode_costs(device, quick: bool, order: int = 2, tokens: int = 10, lengths=None) -> list[dict]:
    """Seconds per generated token and state bytes vs context length L: EA's step against a dense
    KV cache (chapter 7).

    ``lengths`` defaults to 256 .. 32768 (quick) or 256 .. 131072 (full).
    """
    if lengths is None:
        lengths = (
            [256, 1024, 4096, 16384, 32768] if quick else [256, 1024, 4096, 16384, 65536, 131072]
        )
    rows = []
    with torch.no_grad():
        for L in sweep(lengths, "decode"):
            q, k, v = random_qkv(L + tokens, DECODE_SHAPE, device, seed=1)
            for form, fn, state_bytes in _decode_forms(q, k, v, L, tokens, order):
                t = time_fn(fn, warmup=2, repeats=15 if quick else 25, device=device)
                rows.append(
                    {
                        "part": "decode",
                        "form": form,
                        "context": L,
                        **DECODE_SHAPE,
                        "order": order,
                        "s_per_token": t.median_s / tokens,
                        "q25_s": t.q25_s / tokens,
                        "q75_s": t.q75_s / tokens,
                        "min_s": t.min_s / tokens,
                        "state_bytes": int(state_bytes),
                    }
                )
    return rows


def quality_sweep(device, quick: bool) -> list[dict]:
    """Train every (method, options) of
    :data:`attnbook.experiments.elementwise_tasks.METHODS` on the three tasks."""
    from attnbook.experiments.data import CharCorpus, load_tinyshakespeare

    seeds = (0, 1) if quick else (0, 1, 2)
    scale = 1 if quick else 4
    corpus = CharCorpus(load_tinyshakespeare())
    probe = corpus.get_batch(
        "val",
        16,
        QUALITY["tinyshakespeare"]["block_size"],
        generator=torch.Generator().manual_seed(123),
        device=device,
    )[0]
    rows = []
    for method, options in sweep(elementwise_tasks.METHODS, "quality"):
        for seed in seeds:
            budget = {
                **QUALITY["tinyshakespeare"],
                "steps": QUALITY["tinyshakespeare"]["steps"] * scale,
            }
            row, model = elementwise_tasks.train_char(
                corpus, method, options, seed=seed, device=device, **budget
            )
            rows.append({"part": "quality", **row, **elementwise_tasks.spikiness(model, probe)})
            budget = {**QUALITY["mqar"], "steps": QUALITY["mqar"]["steps"] * scale}
            row = elementwise_tasks.train_mqar(method, options, seed=seed, device=device, **budget)
            rows.append(
                {
                    "part": "quality",
                    **{
                        k: row[k]
                        for k in (
                            "task",
                            "method",
                            "options",
                            "label",
                            "seed",
                            "accuracy",
                            "val_loss",
                            "steps",
                            "train_s",
                        )
                    },
                }
            )
            budget = {**QUALITY["timeseries"], "steps": QUALITY["timeseries"]["steps"] * scale}
            row, _ = elementwise_tasks.train_forecast(
                method, options, seed=seed, device=device, **budget
            )
            rows.append({"part": "quality", **row})
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    """All three parts. On CPU single-threaded, as the long-sequence suite (the record's
    ``cpu_threads``, set by the runner, so the stored label says so): two threads turn the timing
    curves' cache effects into steps that depend on the thread count, and the tiny models of the
    quality part gain nothing from them."""
    return train_scaling(device, quick) + decode_costs(device, quick) + quality_sweep(device, quick)
