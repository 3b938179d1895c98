"""Suite "generative" (chapter 8): the generative function against attention in a small GPT.

Two parts, both per mixer (dense attention, "generative", "generative+avg", and "linear" /
"elementwise" when those methods are registered):

* ``train``: nanoGPT's shakespeare_char model (6 layers, 6 heads, width 384, block 256, dropout
  0.2) trained on tiny Shakespeare with nanoGPT's recipe (batch 64, 5,000 iterations, cosine
  schedule): the GPU edition's answer at the scale where nanoGPT reports about 1.47 nats for
  attention. ``quick`` (CPU) runs only the first few iterations at a small batch: a labelled smoke
  comparison, not a converged result.
* ``cost``: one mixing layer at width 384, forward + backward time and peak memory against
  the context length n (attention grows like n², the generative function like n).

Suite "generative-small" trains the chapter's CPU-sized model (2 layers, width 64, context 64,
batch 16) for many more steps than the notebook can afford, to see whether the early lead of
one mixer lasts.
"""

from __future__ import annotations

import multiprocessing

import torch

from attnbook import cost
from attnbook.bench import sweep
from attnbook.checks import checked
from attnbook.experiments.data import CharCorpus, load_tinyshakespeare
from attnbook.measure import peak_memory_bytes, time_fn
from attnbook.mechanisms.dense import dense_attention
from attnbook.mechanisms.generative import GenerativeMixer, generative_numpy
from attnbook.models.gpt import GPT, GPTConfig, make_mixer
from attnbook.models.train import train
from attnbook.reference import attention as reference_attention
from attnbook.registry import methods, mixers

__all__ = [
    "NANOGPT_SHAKESPEARE_CHAR",
    "NANOGPT_RECIPE",
    "SMALL_SHAPE",
    "comparison_mixers",
    "train_mixer",
    "mixer_cost",
    "final_losses",
]

NANOGPT_SHAKESPEARE_CHAR = {
    "n_layer": 6,
    "n_head": 6,
    "d_model": 384,
    "block_size": 256,
    "dropout": 0.2,
}
SMALL_SHAPE = {
    "n_layer": 2,
    "n_head": 4,
    "d_model": 64,
    "block_size": 64,
}  # the chapter's CPU-sized model


def comparison_mixers() -> list[str]:
    """The mixers chapter 8 compares: dense attention, every generative
    mixer, and one mechanism of each linear-time family with a decoding
    state (linear, element-wise) as reference points; from the registry."""
    return [
        "dense",
        *mixers(family="generative"),
        *methods(family="linear", variants=False),
        *methods(family="elementwise"),
    ]


def train_mixer(
    corpus: CharCorpus,
    mixer: str,
    *,
    batch_size: int,
    steps: int,
    seed: int = 0,
    device="cpu",
    eval_every: int | None = None,
    eval_batches: int = 10,
    lr: float = 1e-3,
    warmup_steps: int = 0,
    min_lr: float | None = None,
    progress: bool = False,
    **shape,
):
    """Train a character GPT whose mixing layer is ``mixer``; returns (model, TrainResult).

    ``shape`` holds GPTConfig fields (n_layer, n_head, d_model, block_size, d_ff, dropout, ...).
    The model is initialised from ``seed`` and the batches are drawn from the same seed.

    Chapter 8.
    """
    config = GPTConfig(vocab_size=corpus.vocab_size, mixer=mixer, **shape)

    def get_batch(split, generator):
        return corpus.get_batch(
            split, batch_size, config.block_size, generator=generator, device=device
        )

    result = train(
        lambda: GPT(config).to(device),
        get_batch,
        steps=steps,
        lr=lr,
        warmup_steps=warmup_steps,
        min_lr=min_lr,
        eval_every=eval_every or steps,
        eval_batches=eval_batches,
        seed=seed,
        progress=progress,
    )
    result.config["train"]["batch_size"] = batch_size
    return result.model, result


def _check_mixers(device) -> None:
    """Dense attention and the generative layers must
    match their NumPy references before any timing."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=g) for _ in range(3))
    checked(
        "dense attention",
        dense_attention(q.to(device), k.to(device), v.to(device), causal=True),
        reference_attention(
            q.double().numpy(), k.double().numpy(), v.double().numpy(), causal=True
        ),
    )
    x = torch.randn(2, 40, 12, generator=g)
    for avg in (False, True):
        layer = GenerativeMixer(12, 16, avg=avg).to(device)
        with torch.no_grad():
            fast = layer(x.to(device))
        w = [
            t.detach().double().cpu().numpy()
            for t in (layer.fc.weight.T, layer.fc.bias, layer.proj.weight.T, layer.proj.bias)
        ]
        checked(
            f"generative (avg={avg})",
            fast,
            generative_numpy(x.double().numpy(), *w, avg=avg),
            rtol=1e-4,
            atol=1e-5,
        )


def mixer_cost(
    mixer: str,
    n: int,
    d_model: int = 384,
    heads: int = 6,
    *,
    device="cpu",
    repeats: int = 5,
    memory: bool = True,
) -> dict:
    """Forward + backward time (minimum, 10 % quantile, median, quartiles) and peak memory of one
    mixing
    layer on (1, n, d). Chapter 8."""
    layer = make_mixer(
        GPTConfig(vocab_size=2, block_size=n, n_head=heads, d_model=d_model, mixer=mixer)
    ).to(device)
    x = torch.randn(1, n, d_model, device=device, requires_grad=True)

    def step():
        layer(x).sum().backward()

    t = time_fn(step, warmup=1, repeats=repeats, device=device)
    row = {
        "mixer": mixer,
        "n": n,
        "d": d_model,
        "heads": heads,
        "min_s": t.min_s,
        "q10_s": t.q10_s,
        "median_s": t.median_s,
        "q25_s": t.q25_s,
        "q75_s": t.q75_s,
        "params": sum(p.numel() for p in layer.parameters()),
    }
    row["peak_bytes"] = peak_memory_bytes(step, device=device) if memory else None
    row["flops_forward"] = (
        cost.mha_flops(n, d_model, heads)
        if mixer == "dense"
        else cost.generative_flops(n, d_model, avg=mixer == "generative+avg")
        if mixer.startswith("generative")
        else None
    )
    return row


#: nanoGPT's shakespeare_char training recipe (its config/train_shakespeare_char.py): batch 64,
#: 5,000 iterations, learning rate 1e-3 with 100 warm-up steps and a cosine decay to 1e-4,
#: evaluated every 250 iterations; where nanoGPT reports a validation loss of about 1.47. nanoGPT
#: also drops out the attention weights and the attention branch's output, which the book's blocks
#: do not: the stored H200 run overfits after about 1,000 iterations (chapter 8).
NANOGPT_RECIPE = {
    "batch_size": 64,
    "steps": 5000,
    "lr": 1e-3,
    "warmup_steps": 100,
    "min_lr": 1e-4,
    "eval_every": 250,
    "eval_batches": 20,
}


def run(device: torch.device, quick: bool) -> list[dict]:
    """Suite "generative". Full: nanoGPT's recipe (:data:`NANOGPT_RECIPE`) for dense attention and
    the generative mixers, on CUDA with TF32 matrix products (the GPU edition; hours on a CPU);
    quick: a 12-iteration slice for every comparison mixer."""
    _check_mixers(device)
    if quick:
        recipe, chosen = (
            dict(
                NANOGPT_RECIPE, batch_size=8, steps=12, warmup_steps=2, eval_every=6, eval_batches=3
            ),
            comparison_mixers(),
        )
    else:
        recipe, chosen = dict(NANOGPT_RECIPE), ["dense", *mixers(family="generative")]
    batch, steps = recipe["batch_size"], recipe["steps"]
    jobs = [(m, device.type, recipe) for m in chosen]
    if quick or device.type != "cuda":
        results = [_train_job(job) for job in sweep(jobs, "train")]
    else:  # one process per mixer: a model this small leaves most of a GPU idle
        with multiprocessing.get_context("spawn").Pool(processes=len(jobs)) as pool:
            results = pool.map(_train_job, jobs)
    rows = []
    for mixer, result in results:
        rows.append(
            {
                "part": "train",
                "mixer": mixer,
                "label": f"nanoGPT shakespeare_char recipe, batch {batch}, "
                f"{steps} iterations" + (" (quick: a short slice, not converged)" if quick else ""),
                "best_val_loss": min(h["val_loss"] for h in result["history"]),
                "params": result["params"],
                "batch_size": batch,
                "steps": steps,
                "history": result["history"],
                "final_val_loss": result["history"][-1]["val_loss"],
                "time_per_iter_s": result["time_per_iter_s"],
                "peak_memory_bytes": result["peak_memory_bytes"],
            }
        )
    ns = [64, 128, 256, 512, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
    for n in sweep(ns, "cost vs n"):
        for mixer in ("dense", "generative", "generative+avg"):
            rows.append(
                {"part": "cost", **mixer_cost(mixer, n, device=device, repeats=3 if quick else 10)}
            )
    return rows


def _train_job(job) -> tuple[str, dict]:
    """One mixer trained with ``recipe`` at nanoGPT's shape, TF32 matrix products on CUDA as nanoGPT
    trains: (mixer, the TrainResult's fields without the model)."""
    mixer, device_type, recipe = job
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = device_type == "cuda"
    try:
        corpus = CharCorpus(load_tinyshakespeare())
        _, result = train_mixer(
            corpus, mixer, device=device_type, **recipe, **NANOGPT_SHAKESPEARE_CHAR
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return mixer, result.as_dict()


def final_losses(rows: list[dict]) -> dict[str, float]:
    """{mixer: final validation loss} of the ``train`` rows of a stored result."""
    return {r["mixer"]: r["final_val_loss"] for r in rows if r["part"] == "train"}


def run_small(device: torch.device, quick: bool) -> list[dict]:
    corpus = CharCorpus(load_tinyshakespeare())
    steps, every, mixers = (
        (800, 100, ["dense", "generative", "generative+avg"])
        if quick
        else (5000, 250, comparison_mixers())
    )
    rows = []
    for mixer in sweep(mixers, "train"):
        _, result = train_mixer(
            corpus,
            mixer,
            batch_size=16,
            steps=steps,
            eval_every=every,
            eval_batches=10,
            lr=3e-3,
            device=device,
            **SMALL_SHAPE,
        )
        rows.append(
            {
                "part": "train",
                "mixer": mixer,
                "label": f"2 layers, width 64, context 64, batch 16, {steps} steps",
                "params": result.params,
                "batch_size": 16,
                "steps": steps,
                "history": result.history,
                "final_val_loss": result.final_val_loss,
                "time_per_iter_s": result.time_per_iter_s,
                "peak_memory_bytes": result.peak_memory_bytes,
            }
        )
    return rows
