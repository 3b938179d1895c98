"""The one registry of everything pluggable: attention methods, GPT mixers, benchmark suites.

Each entry is a record that names its implementation by import path (``"module:attribute"``),
so nothing is imported until an entry is used and no module registers itself as a side
effect of being imported. The tables below are the whole catalogue; lists of methods
(families, the sparse set, the methods an experiment compares) are read from the records.
Readers add their own entries with :func:`add`.

Public API: :func:`attention`, :func:`decode`, :func:`methods`, :func:`method_info`,
:func:`mixers`, :func:`mixer_info`, :func:`suites`, :func:`suite_info`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch

from attnbook.checks import check_bool, check_qkv

__all__ = [
    "Method",
    "Mixer",
    "Suite",
    "add",
    "methods",
    "method_info",
    "mixers",
    "mixer_info",
    "mixer_names",
    "suites",
    "suite_info",
    "attention",
    "decode",
    "CAUSAL_MODES",
]

#: What a method supports: both masks, only the causal one, only the non-causal one.
CAUSAL_MODES = ("both", "causal", "noncausal")


def _load(target):
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Entry:
    """A named implementation: ``target`` is ``"module:attribute"`` (imported on first use) or a callable."""

    name: str
    target: object
    chapter: str
    doc: str

    @property
    def fn(self):
        """The implementation, imported on first use."""
        return _load(self.target)


@dataclass(frozen=True)
class Method(Entry):
    """An attention method ``fn(q, k, v, *, causal, **options) -> (B, H, N, Dv)``.

    ``exact``: equal to softmax attention; ``family``: dense, sparse, low-rank, kernel, linear,
    recurrent, elementwise, kernel-triton...; ``variant_of``: the method it re-implements (sdpa and
    flash compute dense attention); ``causal``: one of :data:`CAUSAL_MODES`; ``devices``: the device
    types it runs on (the Triton kernels: CUDA, or CPU in Triton's interpreter); ``step``/``prefill``: the
    recurrent decoding form ``step(state, q_t, k_t, v_t, **options) -> (state, o_t)`` where there is one.
    """

    exact: bool = False
    family: str = ""
    options: dict = field(default_factory=dict)
    causal: str = "both"
    variant_of: str | None = None
    devices: tuple = ("cpu", "cuda", "mps")
    step_target: object = None
    prefill_target: object = None

    @property
    def step(self):
        return None if self.step_target is None else _load(self.step_target)

    @property
    def prefill(self):
        return None if self.prefill_target is None else _load(self.prefill_target)


@dataclass(frozen=True)
class Mixer(Entry):
    """A GPT token mixer that is not an attention method: ``fn(config) -> nn.Module`` (B, N, d) -> (B, N, d)."""

    family: str = ""
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Suite(Entry):
    """A benchmark suite ``fn(device: torch.device, quick: bool) -> list[dict]`` (``doc`` describes it)."""


_M = "attnbook.mechanisms."
_CHUNK = "tokens per chunk of the chunked causal form (int >= 1, default 64)"
_TILE = "tile size of the block-wise kernel (int >= 1, default 64)"

METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "dense",
            _M + "dense:dense_attention",
            "01",
            "Exact softmax attention with the full N×N score matrix.",
            exact=True,
            family="dense",
            step_target=_M + "dense:dense_step",
            prefill_target=_M + "dense:dense_prefill",
        ),
        Method(
            "sdpa",
            _M + "dense:sdpa_attention",
            "04",
            "torch.nn.functional.scaled_dot_product_attention: PyTorch's fused kernels.",
            exact=True,
            family="dense",
            variant_of="dense",
        ),
        Method(
            "flash",
            _M + "flash:flash_attention",
            "04",
            "FlashAttention's tiled online softmax in torch; exact.",
            exact=True,
            family="dense",
            variant_of="dense",
            options={
                "block_size": "query and key tile size (int >= 1, default flash.BLOCK_SIZE, chosen by measurement)"
            },
        ),
        Method(
            "sliding_window",
            _M + "sparse:sliding_window_attention",
            "04",
            "Sliding-window attention (Mistral-style), block-wise; exact once window >= N.",
            family="sparse",
            options={
                "window": "keys each side incl. itself (int >= 1, default 128); causal: 0 <= i-j < window",
                "block_size": _TILE,
            },
        ),
        Method(
            "strided",
            _M + "sparse:strided_attention",
            "04",
            "Strided attention (Child et al. 2019): the last s keys plus every s-th key, block-wise.",
            family="sparse",
            options={
                "stride": "stride s (int >= 1; default ceil(sqrt(N)) as in Child et al.)",
                "block_size": _TILE,
            },
        ),
        Method(
            "longformer",
            _M + "sparse:longformer_attention",
            "04",
            "Longformer attention: sliding window plus global tokens, block-wise.",
            family="sparse",
            options={
                "window": "local window, |i-j| < window (int >= 1, default 128)",
                "global_tokens": "positions that attend and are attended everywhere (default (0,))",
                "block_size": _TILE,
            },
        ),
        Method(
            "block_sparse",
            _M + "sparse:block_sparse_attention",
            "04",
            "Block-sparse attention over a block layout.",
            family="sparse",
            options={
                "block_size": "block of the layout and of the kernel (int >= 1, default 64)",
                "layout": "(nb, nb) bool block layout, nb = ceil(N / block_size); "
                "default |I-J| <= 1 plus block 0 global",
            },
        ),
        Method(
            "linformer",
            _M + "linformer:linformer_method",
            "04",
            "Linformer (Wang et al. 2020): keys and values projected to k rows; O(N·k·D), not causal.",
            family="low-rank",
            causal="noncausal",
            options={
                "k": "projected length (int, 1..n, default 64)",
                "seed": "seed of the random projections E, F (int >= 0, default 0)",
            },
        ),
        Method(
            "performer",
            _M + "performer:performer_attention",
            "04",
            "Performer FAVOR+ with positive orthogonal random features (Choromanski et al. 2021): O(N·r·D).",
            family="kernel",
            options={
                "features": "number of random features r (int >= 1, default 256)",
                "seed": "seed of the random feature matrix Ω (int >= 0, default 0)",
                "chunk_size": _CHUNK,
            },
        ),
        Method(
            "linear",
            _M + "linear:linear_attention",
            "04",
            "Linear attention, φ = elu + 1 (Katharopoulos et al. 2020): O(N·D²) time, O(D²) decoding state.",
            family="linear",
            options={"chunk_size": _CHUNK},
            step_target=_M + "linear:linear_step",
            prefill_target=_M + "linear:linear_prefill",
        ),
        Method(
            "retention",
            _M + "recurrent:retention",
            "04",
            "RetNet retention (Sun et al. 2023), chunkwise: causal only, O(N·D²), O(D²) decoding state.",
            family="recurrent",
            causal="causal",
            options={
                "gamma": "decay γ in (0, 1] for every head, or None for RetNet's 1 − 2^(−5−h) (default None)",
                "chunk_size": _CHUNK,
            },
            step_target=_M + "recurrent:retention_step",
        ),
        Method(
            "selective_scan",
            _M + "recurrent:selective_scan",
            "04",
            "Mamba-style selective scan, scalar decay per head (Mamba-2 SSD): causal only, O(N·D²), O(D²) state.",
            family="recurrent",
            causal="causal",
            options={
                "seed": "seed of the fixed Δ projection w (int >= 0, default 0)",
                "chunk_size": _CHUNK,
            },
            step_target=_M + "recurrent:selective_scan_step",
        ),
        Method(
            "elementwise",
            _M + "elementwise:elementwise_attention",
            "07",
            "Element-wise attention (Feng 2025): per-channel exp(−(q−k)²) weights, Taylor order t, O(t·N·D).",
            family="elementwise",
            options={
                "order": "Taylor order t of exp(2qk) (int >= 0, default 2; even t keeps weights positive)"
            },
            step_target=_M + "elementwise:elementwise_step",
            prefill_target=_M + "elementwise:elementwise_prefill",
        ),
        Method(
            "flash_triton",
            "attnbook.kernels.api:flash_attention_triton",
            "04",
            "FlashAttention-2 as Triton kernels, forward and backward (CUDA; CPU under TRITON_INTERPRET=1).",
            exact=True,
            family="dense",
            variant_of="dense",
            devices=("cuda",),
            options={"scale": "score scale (float > 0, default 1/sqrt(D))"},
        ),
        Method(
            "linear_triton",
            "attnbook.kernels.api:linear_attention_triton",
            "04",
            "Causal linear attention as a chunked Triton recurrence, the state kept on chip (CUDA; CPU "
            "under TRITON_INTERPRET=1).",
            family="linear",
            variant_of="linear",
            causal="causal",
            devices=("cuda",),
            options={
                "feature_map": "'elu1' (φ = elu + 1, default) or 'identity' (features computed outside)"
            },
        ),
    ]
}

MIXERS: dict[str, Mixer] = {
    m.name: m
    for m in [
        Mixer(
            "generative",
            _M + "generative:generative_mixer",
            "08",
            "Hilsenbek's generative function of x_t and x_{t-1} (no attention).",
            family="generative",
            options={"hidden": "hidden width h (int >= 1, default d_model)"},
        ),
        Mixer(
            "generative+avg",
            _M + "generative:generative_avg_mixer",
            "08",
            "The generative function with the causal running mean m_t as a third input.",
            family="generative",
            options={"hidden": "hidden width h (int >= 1, default d_model)"},
        ),
    ]
}

_B = "attnbook.bench."
SUITES: dict[str, Suite] = {
    s.name: s
    for s in [
        Suite(
            "cost",
            _B + "cost:run",
            "02",
            "forward time of one Transformer layer vs sequence length n and width d",
        ),
        Suite(
            "memory",
            _B + "memory:run",
            "03",
            "parameters, activations, checkpointing and KV cache: formulas against measured bytes",
        ),
        Suite(
            "long",
            _B + "long:run",
            "04",
            "time, peak memory and error of every attention method vs n",
        ),
        Suite(
            "flash",
            _B + "flash:run",
            "04",
            "the torch FlashAttention loop against fused SDPA, interleaved: time, tile sizes, peak memory",
        ),
        Suite(
            "expressivity",
            _B + "expressivity:run",
            "05",
            "associative recall and related tasks, every mechanism",
        ),
        Suite(
            "design",
            _B + "design:run",
            "06",
            "depth vs width at a fixed parameter budget: time and loss",
        ),
        Suite(
            "elementwise",
            _B + "elementwise:run",
            "07",
            "element-wise attention: cost, decoding and quality",
        ),
        Suite(
            "generative",
            _B + "generative:run",
            "08",
            "generative function vs attention: nanoGPT shakespeare_char training slice; cost vs n",
        ),
        Suite(
            "generative-small",
            _B + "generative:run_small",
            "08",
            "the CPU-sized model of chapter 8 trained for many steps, per mixer",
        ),
        Suite(
            "generative-converged",
            _B + "generative_converged:run",
            "08",
            "generative function vs attention trained to convergence (nanoGPT's CPU recipe), n-gram baselines",
        ),
        Suite(
            "generative-cost",
            _B + "generative_converged:run_cost",
            "08",
            "time and peak memory of one training iteration per mixer vs context length; the ×4 inner dimension",
        ),
        Suite(
            "kernels",
            _B + "kernels:run",
            "04",
            "Triton FlashAttention forward and forward+backward against SDPA's flash backend, TFLOP/s (CUDA only)",
        ),
        Suite(
            "distributed",
            _B + "distributed:run",
            "09",
            "ring, all-gather and Ulysses attention over P ranks: time, bytes and peak memory per rank vs n",
        ),
    ]
}

_TABLES = {Method: METHODS, Mixer: MIXERS, Suite: SUITES}


def add(entry: Method | Mixer | Suite, *, replace: bool = False) -> None:
    """Add a reader's own entry to its table; ``replace=True`` overrides one of the same name."""
    table = _TABLES.get(type(entry))
    if table is None:
        raise TypeError(f"entry must be a Method, Mixer or Suite, got {type(entry).__name__}")
    if isinstance(entry, Method) and entry.causal not in CAUSAL_MODES:
        raise ValueError(f"causal must be one of {CAUSAL_MODES}, got {entry.causal!r}")
    # methods and mixers share one namespace (both name a GPT's mixer); suites have their own
    namespace = (SUITES,) if isinstance(entry, Suite) else (METHODS, MIXERS)
    if any(entry.name in t for t in namespace) and not replace:
        raise ValueError(f"{entry.name!r} is already registered; pass replace=True to override it")
    table[entry.name] = entry


def _get(table: dict, kind: str, name):
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{kind} must be one of {list(table)}, got {name!r}")
    return table[name]


def methods(
    *,
    family: str | None = None,
    exact: bool | None = None,
    causal: bool | None = None,
    variants: bool = True,
    device=None,
) -> list[str]:
    """Names of the registered attention methods, in catalogue order, optionally filtered.

    ``family``: only that family; ``exact``: only exact (True) or approximate (False) ones; ``causal``:
    only those that accept ``causal=True`` (True) or ``causal=False`` (False); ``variants=False`` drops
    re-implementations of another method (sdpa, flash), leaving one entry per mechanism; ``device``
    (a device or its type, e.g. "cpu"): only those that run there.
    """
    kind = None if device is None else torch.device(device).type
    out = []
    for m in METHODS.values():
        if kind is not None and kind not in m.devices:
            continue
        if family is not None and m.family != family:
            continue
        if exact is not None and m.exact != exact:
            continue
        if causal is not None and m.causal not in ("both", "causal" if causal else "noncausal"):
            continue
        if not variants and m.variant_of is not None:
            continue
        out.append(m.name)
    return out


def method_info(name: str) -> Method:
    """The :class:`Method` record of ``name``; ``ValueError`` listing the known names otherwise."""
    return _get(METHODS, "method", name)


def mixers(*, family: str | None = None) -> list[str]:
    """Names of the GPT mixers that are not attention methods (chapter 8's generative function)."""
    return [m.name for m in MIXERS.values() if family is None or m.family == family]


def mixer_info(name: str) -> Mixer:
    """The :class:`Mixer` record of ``name``."""
    return _get(MIXERS, "mixer", name)


def mixer_names() -> list[str]:
    """Every token mixer a GPT accepts: the attention methods, then the other mixers."""
    return methods() + mixers()


def suites() -> list[str]:
    """Names of the benchmark suites (``python -m attnbook bench SUITE``)."""
    return list(SUITES)


def suite_info(name: str) -> Suite:
    """The :class:`Suite` record of ``name``."""
    return _get(SUITES, "suite", name)


def _check_call(info: Method, causal, options: dict) -> bool:
    causal = check_bool("causal", causal)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for method {info.name!r}; its options are {sorted(info.options)}"
        )
    if info.causal == "causal" and not causal:
        raise ValueError(f"method {info.name!r} is causal only: pass causal=True")
    if info.causal == "noncausal" and causal:
        raise ValueError(f"method {info.name!r} has no causal form: pass causal=False")
    return causal


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    /,
    method: str = "dense",
    causal: bool = False,
    **options,
) -> torch.Tensor:
    """Attention by any registered method (chapter 4 compares them all).

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv), on the inputs' device.
    ``causal=True`` needs N == M for every method (the mask is the square lower triangle).
    ``attnbook.methods()`` lists the methods; ``attnbook.method_info(name).options`` their options.
    """
    info = method_info(method)
    causal = _check_call(info, causal, options)
    _, _, n, m, _ = check_qkv(q, k, v)
    if causal and n != m:
        raise ValueError(
            f"causal=True needs as many queries as keys, got N={n} queries and M={m} keys"
        )
    out = info.fn(q, k, v, causal=causal, **options)
    expected = (*q.shape[:3], v.shape[-1])
    if tuple(out.shape) != expected:
        raise RuntimeError(
            f"method {method!r} returned shape {tuple(out.shape)}, expected {expected}"
        )
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError(
            f"method {method!r} produced NaN or infinite values from finite inputs (max |q| = "
            f"{q.abs().max().item():.3g}, max |k| = {k.abs().max().item():.3g}): its feature map over- or "
            f"underflows in {q.dtype} at this magnitude; scale q and k down, or use an exact method"
        )
    return out


def decode(
    method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, /, **options
) -> torch.Tensor:
    """Causal attention one token at a time through the method's recurrent ``step`` (chapters 3, 4, 7).

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv), equal to ``attention(..., causal=True)``.
    """
    info = method_info(method)
    if info.step_target is None:
        with_step = [m.name for m in METHODS.values() if m.step_target is not None]
        raise ValueError(f"method {method!r} has no recurrent step; methods with one: {with_step}")
    _check_call(info, True, options)
    _, _, n, m, _ = check_qkv(q, k, v)
    if n != m:
        raise ValueError(f"decode needs as many queries as keys, got N={n} and M={m}")
    step, state, outs = info.step, None, []
    for t in range(n):
        state, o = step(state, q[:, :, t], k[:, :, t], v[:, :, t], **options)
        outs.append(o)
    return torch.stack(outs, dim=2)
