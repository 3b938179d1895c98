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

from attnbook.checks import (
    check_bool,
    check_qkv,
    check_same_length,
    check_tensor,
    inputs_validated,
    is_finite,
)

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
    """A named implementation: ``target`` is
    ``"module:attribute"`` (imported on first use) or a callable."""

    name: str
    target: object
    chapter: str
    doc: str

    @property
    def fn(self):
        """The implementation, imported on first use."""
        return _load(self.target)


class _Options:
    """The option check shared by the records that declare ``options`` (methods, mixers)."""

    def check_options(self, options: dict) -> None:
        """Refuse an option this entry does not declare, naming the ones it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for {type(self).__name__.lower()} {self.name!r}; "
                f"its options are {sorted(self.options)}"
            )


@dataclass(frozen=True)
class Method(_Options, Entry):
    """An attention method ``fn(q, k, v, *, causal, **options) -> (B, H, N, Dv)``.

    ``options``: name -> description; ``defaults``: name -> default of every option, read by
    :func:`attention` (which passes them) and by the sparse pattern factories; a test holds each
    function's own keyword defaults to them (tests/test_registry_records.py); ``exact``: equal to
    softmax attention; ``family``: dense, sparse, low-rank, kernel, linear, recurrent, elementwise,
    kernel-triton...; ``variant_of``: the method it re-implements (sdpa and flash compute dense
    attention); ``causal``: one of :data:`CAUSAL_MODES`; ``devices``: the device types it runs on
    (the Triton kernels: CUDA, or CPU in Triton's interpreter); ``step``/``prefill``: the recurrent
    decoding form ``step(state, q_t, k_t, v_t, **options) -> (state, o_t)`` where there is one.
    """

    exact: bool = False
    family: str = ""
    options: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    causal: str = "both"
    variant_of: str | None = None
    devices: tuple = ("cpu", "cuda", "mps")
    step_target: object = None
    prefill_target: object = None
    #: options that only shape the parallel computation, not the result: decode() drops them
    parallel_options: tuple = ("chunk_size", "block_size")
    #: time linear in n at fixed options (chapter 4's linear-cost methods; suite "long-h4")
    linear_in_n: bool = False
    #: sparse methods: ``pattern(n, causal, **options) -> (Pattern, tile size)``, what it computes
    pattern_target: object = None
    #: device type -> inputs whose NaN/inf the output can hide there (SDPA's CPU kernel zeroes a
    #: NaN query's row; its CUDA kernels return a NaN row): attention() scans them before the call;
    #: the others are scanned only if the output is bad
    scan_inputs: dict = field(default_factory=dict)
    #: the function itself raises FloatingPointError when its output would hold NaN or inf, more
    #: cheaply than a read of the output (linear attention, the Performer: a bound per row), so
    #: attention() does not read the output again
    checks_output: bool = False

    @property
    def step(self):
        return None if self.step_target is None else _load(self.step_target)

    @property
    def prefill(self):
        return None if self.prefill_target is None else _load(self.prefill_target)

    def pattern(self, n: int, causal: bool = False, **options):
        """(pattern, tile size) this sparse method uses at length n with ``options`` (the record's
        ``defaults`` fill the ones not given)."""
        if self.pattern_target is None:
            raise ValueError(f"method {self.name!r} has no sparse pattern")
        return _load(self.pattern_target)(n, causal, **{**self.defaults, **options})

    def check_call(self, causal, options: dict) -> bool:
        """The one check of a call's ``causal`` and option names; returns ``causal`` as a bool."""
        causal = check_bool("causal", causal)
        self.check_options(options)
        if self.causal == "causal" and not causal:
            raise ValueError(f"method {self.name!r} is causal only: pass causal=True")
        if self.causal == "noncausal" and causal:
            raise ValueError(f"method {self.name!r} has no causal form: pass causal=False")
        return causal


@dataclass(frozen=True)
class Mixer(_Options, Entry):
    """A GPT token mixer that is not an attention method:
    ``fn(config) -> nn.Module`` (B, N, d) -> (B, N, d)."""

    family: str = ""
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Suite(Entry):
    """A benchmark suite ``fn(device: torch.device, quick: bool) -> list[dict]``
    (``doc`` describes it).

    ``gpu_quick``, ``gpu_allowance_s``, ``gpu_note``: its step in the GPU edition
    (:mod:`attnbook.bench.gpu`): the quick or the full sweep, the seconds it may take, and why;
    ``cpu_threads``: the torch threads it runs with on CPU (None: leave torch's setting), set by
    the runner before the suite starts and recorded in the result's label.
    """

    gpu_quick: bool = True
    gpu_allowance_s: float = 20.0
    gpu_note: str = "quick: a suite the plan does not size (the default)"
    cpu_threads: int | None = None


_M = "attnbook.mechanisms."
_CHUNK = "tokens per chunk of the chunked causal form (int >= 1)"
_TILE = "tile size of the block-wise kernel (int >= 1)"
_BETA = "step sizes β, (B, H, N) tensor in [0, 1] (None: 1/(1 + ‖k_t‖²))"  # the delta rules
#: defaults of the sparse methods' options, read by their pattern factories through the record
_WINDOW, _SPARSE_TILE = 128, 64

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
            scan_inputs={"cpu": ("q",), "mps": ("q",)},
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
                "block_size": "query and key tile size (int >= 1; default chosen by measurement)"
            },
            defaults={"block_size": 256},
        ),
        Method(
            "sliding_window",
            _M + "sparse:sliding_window_attention",
            "04",
            "Sliding-window attention (Mistral-style), block-wise; exact once window >= N.",
            family="sparse",
            options={
                "window": "keys each side incl. itself (int >= 1); causal: 0 <= i-j < window",
                "block_size": _TILE,
            },
            defaults={"window": _WINDOW, "block_size": _SPARSE_TILE},
            linear_in_n=True,
            pattern_target=_M + "sparse:sliding_window_pattern",
        ),
        Method(
            "strided",
            _M + "sparse:strided_attention",
            "04",
            "Strided attention (Child et al. 2019): the last s keys plus every s-th key, "
            "block-wise.",
            family="sparse",
            options={
                "stride": "stride s (int >= 1; None: ceil(sqrt(N)) as in Child et al.)",
                "block_size": _TILE,
            },
            defaults={"stride": None, "block_size": _SPARSE_TILE},
            pattern_target=_M + "sparse:strided_pattern",
        ),
        Method(
            "longformer",
            _M + "sparse:longformer_attention",
            "04",
            "Longformer attention: sliding window plus global tokens, block-wise.",
            family="sparse",
            options={
                "window": "local window, |i-j| < window (int >= 1)",
                "global_tokens": "positions that attend and are attended everywhere",
                "block_size": _TILE,
            },
            defaults={"window": _WINDOW, "global_tokens": (0,), "block_size": _SPARSE_TILE},
            linear_in_n=True,
            pattern_target=_M + "sparse:longformer_pattern",
        ),
        Method(
            "block_sparse",
            _M + "sparse:block_sparse_attention",
            "04",
            "Block-sparse attention over a block layout.",
            family="sparse",
            options={
                "block_size": "block of the layout and of the kernel (int >= 1)",
                "layout": "(nb, nb) bool block layout, nb = ceil(N / block_size); "
                "None: |I-J| <= 1 plus block 0 global",
            },
            defaults={"block_size": _SPARSE_TILE, "layout": None},
            linear_in_n=True,
            pattern_target=_M + "sparse:block_sparse_pattern",
        ),
        Method(
            "linformer",
            _M + "linformer:linformer_attention",
            "04",
            "Linformer (Wang et al. 2020): keys and values projected to k rows; O(N·k·D), not "
            "causal.",
            family="low-rank",
            causal="noncausal",
            options={
                "rank": "projected length, the book's k (int, 1..n)",
                "seed": "seed of the random projections E, F (int >= 0)",
            },
            defaults={"rank": 64, "seed": 0},
            linear_in_n=True,
        ),
        Method(
            "performer",
            _M + "performer:performer_attention",
            "04",
            "Performer FAVOR+ with positive orthogonal random features (Choromanski et al. 2021): "
            "O(N·r·D).",
            family="kernel",
            options={
                "features": "number of random features r (int >= 1)",
                "seed": "seed of the random feature matrix Ω (int >= 0)",
                "chunk_size": _CHUNK,
            },
            defaults={"features": 256, "seed": 0, "chunk_size": 64},
            linear_in_n=True,
            checks_output=True,
        ),
        Method(
            "linear",
            _M + "linear:linear_attention",
            "04",
            "Linear attention, φ = elu + 1 (Katharopoulos et al. 2020): O(N·D²) time, O(D²) "
            "decoding state.",
            family="linear",
            options={"chunk_size": _CHUNK},
            defaults={"chunk_size": 64},
            step_target=_M + "linear:linear_step",
            prefill_target=_M + "linear:linear_prefill",
            linear_in_n=True,
            checks_output=True,
        ),
        Method(
            "retention",
            _M + "recurrent:retention_attention",
            "04",
            "RetNet retention (Sun et al. 2023), chunkwise: causal only, O(N·D²), O(D²) decoding "
            "state.",
            family="recurrent",
            causal="causal",
            options={
                "gamma": "decay γ in (0, 1] for every head, or None for RetNet's 1 − 2^(−5−h)",
                "chunk_size": _CHUNK,
            },
            defaults={"gamma": None, "chunk_size": 64},
            step_target=_M + "recurrent:retention_step",
            linear_in_n=True,
        ),
        Method(
            "selective_scan",
            _M + "recurrent:selective_scan_attention",
            "04",
            "Mamba-style selective scan, scalar decay per head (Mamba-2 SSD): causal only, "
            "O(N·D²), O(D²) state.",
            family="recurrent",
            causal="causal",
            options={
                "seed": "seed of the fixed Δ projection w (int >= 0)",
                "chunk_size": _CHUNK,
            },
            defaults={"seed": 0, "chunk_size": 64},
            step_target=_M + "recurrent:selective_scan_step",
            linear_in_n=True,
        ),
        Method(
            "delta",
            _M + "delta:delta_attention",
            "04",
            "The delta rule (DeltaNet, Yang et al. 2024), chunked WY form: causal only, O(N·D²), "
            "O(D²) state that overwrites instead of adding.",
            family="linear-recurrent",
            causal="causal",
            options={
                "beta": _BETA,
                "chunk_size": _CHUNK,
            },
            defaults={"beta": None, "chunk_size": 64},
            step_target=_M + "delta:delta_step",
            prefill_target=_M + "delta:delta_prefill",
            linear_in_n=True,
        ),
        Method(
            "gated_delta",
            _M + "delta:gated_delta_attention",
            "04",
            "Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025): the delta rule on a state decayed by "
            "exp(g_t); causal only, O(N·D²), O(D²) state.",
            family="linear-recurrent",
            causal="causal",
            options={
                "beta": _BETA,
                "g": "log-decays, (B, H, N) tensor <= 0 (None: RetNet's log(1 − 2^(−5−h)))",
                "chunk_size": _CHUNK,
            },
            defaults={"beta": None, "g": None, "chunk_size": 64},
            step_target=_M + "delta:gated_delta_step",
            prefill_target=_M + "delta:gated_delta_prefill",
            linear_in_n=True,
        ),
        Method(
            "gla",
            _M + "gla:gla_attention",
            "04",
            "Gated linear attention (Yang et al. 2024): a forget gate per key channel, chunked in "
            "log space; causal only, O(N·D²), O(D²) state.",
            family="linear-recurrent",
            causal="causal",
            options={
                "gk": "log forget gates, (B, H, N, D) tensor <= 0 "
                "(None: RetNet's log(1 − 2^(−5−h)) in every channel)",
                "chunk_size": "tokens per chunk (int >= 1)",
            },
            defaults={"gk": None, "chunk_size": 16},
            step_target=_M + "gla:gla_step",
            prefill_target=_M + "gla:gla_prefill",
            linear_in_n=True,
        ),
        Method(
            "elementwise",
            _M + "elementwise:elementwise_attention",
            "07",
            "Element-wise attention (Feng 2025): per-channel exp(−(q−k)²) weights, Taylor order t, "
            "O(t·N·D).",
            family="elementwise",
            options={
                "order": "Taylor order t of exp(2qk) (int >= 0; even t keeps weights positive)",
                "chunk_size": _CHUNK,
            },
            defaults={"order": 2, "chunk_size": 64},
            step_target=_M + "elementwise:elementwise_step",
            prefill_target=_M + "elementwise:elementwise_prefill",
            linear_in_n=True,
        ),
        Method(
            "flash_triton",
            "attnbook.kernels.api:flash_attention_triton",
            "04",
            "FlashAttention-2 as Triton kernels, forward and backward (CUDA; CPU under "
            "TRITON_INTERPRET=1).",
            exact=True,
            family="dense",
            variant_of="dense",
            devices=("cuda",),
            options={"scale": "score scale (float > 0, or None for 1/sqrt(D))"},
            defaults={"scale": None},
        ),
        Method(
            "linear_triton",
            "attnbook.kernels.api:linear_attention_triton",
            "04",
            "Causal linear attention as a chunked Triton recurrence, the state kept on chip (CUDA; "
            "CPU "
            "under TRITON_INTERPRET=1).",
            family="linear",
            variant_of="linear",
            causal="causal",
            devices=("cuda",),
            options={
                "feature_map": "'elu1' (φ = elu + 1) or 'identity' (features computed outside)"
            },
            defaults={"feature_map": "elu1"},
            linear_in_n=True,
        ),
    ]
}

MIXERS: dict[str, Mixer] = {
    m.name: m
    for m in [
        Mixer(
            "delta_layer",
            _M + "gated_layers:delta_layer",
            "05",
            "DeltaNet layer: q, k, v and β projected from x, q and k L2-normalised, the chunked "
            "delta rule.",
            family="linear-recurrent",
            options={"chunk_size": _CHUNK},
        ),
        Mixer(
            "gated_delta_layer",
            _M + "gated_layers:gated_delta_layer",
            "05",
            "Gated DeltaNet layer: the DeltaNet layer with a forget gate log σ(W x + 4)/16 per "
            "head.",
            family="linear-recurrent",
            options={"chunk_size": _CHUNK},
        ),
        Mixer(
            "gla_layer",
            _M + "gated_layers:gla_layer",
            "05",
            "GLA layer: q, k, v projected from x, q and k L2-normalised, a forget gate per key "
            "channel.",
            family="linear-recurrent",
            options={"chunk_size": "tokens per chunk (int >= 1, default 64)"},
        ),
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
            gpu_quick=False,
            gpu_allowance_s=15,
            gpu_note="full: n up to 16384, d up to 4096",
        ),
        Suite(
            "memory",
            _B + "memory:run",
            "03",
            "parameters, activations, checkpointing and KV cache: formulas against measured bytes",
            gpu_quick=False,
            gpu_allowance_s=30,
            gpu_note="full",
        ),
        Suite(
            "long",
            _B + "long:run",
            "04",
            "time, peak memory and error of every attention method vs n",
            gpu_quick=False,
            gpu_allowance_s=25,
            gpu_note="full: every method, n = 256 .. 16384",
            cpu_threads=1,
        ),
        Suite(
            "long-h4",
            _B + "long:run_wide",
            "04",
            "time, peak memory and error of every linear-cost method vs n at H = 4 (chapters 4, 7)",
            gpu_quick=False,
            gpu_allowance_s=25,
            gpu_note="full: the linear-cost methods at H = 4, n = 256 .. 16384",
            cpu_threads=1,
        ),
        Suite(
            "flash",
            _B + "flash:run",
            "04",
            "the torch FlashAttention loop against fused SDPA, interleaved: time, tile sizes, peak "
            "memory",
            gpu_quick=False,
            gpu_allowance_s=35,
            gpu_note="full: torch flash against SDPA at n = 1024 .. 4096, memory at 16384",
            cpu_threads=2,
        ),
        Suite(
            "api",
            _B + "api:run",
            "04",
            "the public attention() and decode() against the functions they wrap, interleaved: "
            "time and peak memory",
            gpu_quick=False,
            gpu_allowance_s=95,
            gpu_note="full: attention() and decode() against the bare functions, n to 16,384",
            cpu_threads=2,
        ),
        Suite(
            "expressivity",
            _B + "expressivity:run",
            "05",
            "associative recall and related tasks, every mechanism",
            gpu_quick=True,
            gpu_allowance_s=75,
            gpu_note=(
                "quick: the full sweep trains recall models, every mechanism, 3 seeds, 1500 steps"
            ),
        ),
        Suite(
            "design",
            _B + "design:run",
            "06",
            "depth vs width at a fixed parameter budget: time and loss",
            gpu_quick=False,
            gpu_allowance_s=20,
            gpu_note="full",
            cpu_threads=1,
        ),
        Suite(
            "elementwise",
            _B + "elementwise:run",
            "07",
            "element-wise attention: cost, decoding and quality",
            gpu_quick=True,
            gpu_allowance_s=90,
            gpu_note="quick: the full sweep trains every form on three tasks at 4x scale",
            cpu_threads=1,
        ),
        Suite(
            "generative",
            _B + "generative:run",
            "08",
            "generative function vs attention: nanoGPT's shakespeare_char recipe; cost vs n",
            gpu_quick=False,
            gpu_allowance_s=310,
            gpu_note="full: nanoGPT's recipe (5,000 iterations), dense and both generative mixers "
            "in parallel processes on the one GPU",
        ),
        Suite(
            "generative-small",
            _B + "generative:run_small",
            "08",
            "the CPU-sized model of chapter 8 trained for many steps, per mixer",
            gpu_quick=True,
            gpu_allowance_s=30,
            gpu_note="quick: the full sweep trains 5000 steps per mixer",
        ),
        Suite(
            "generative-converged",
            _B + "generative_converged:run",
            "08",
            "generative function vs attention trained to convergence (nanoGPT's CPU recipe), "
            "n-gram baselines",
            gpu_quick=True,
            gpu_allowance_s=20,
            gpu_note="quick: the full sweep trains to convergence",
        ),
        Suite(
            "generative-cost",
            _B + "generative_converged:run_cost",
            "08",
            "time and peak memory of one training iteration per mixer vs context length; the ×4 "
            "inner dimension",
            gpu_quick=False,
            gpu_allowance_s=15,
            gpu_note="full: one training iteration per mixer and context length",
        ),
        Suite(
            "kernels",
            _B + "kernels:run",
            "04",
            "Triton FlashAttention forward and forward+backward against SDPA's flash backend, "
            "TFLOP/s (CUDA only)",
            gpu_quick=False,
            gpu_allowance_s=55,
            gpu_note="full: n = 1024 .. 16384, D = 64, 128, causal and not, fp16 and bf16",
        ),
        Suite(
            "distributed",
            _B + "distributed:run",
            "09",
            "ring, all-gather and Ulysses attention over P ranks: time, bytes and peak memory per "
            "rank vs n",
            gpu_quick=False,
            gpu_allowance_s=20,
            gpu_note="full at the world sizes that fit the GPUs present (P = 1 on one GPU)",
        ),
        Suite(
            "inference",
            _B + "inference:run",
            "10",
            "serving: decode on the roofline, KV-cache formats (MLA), paged-cache waste, attention "
            "sinks, speculative decoding",
            gpu_quick=True,
            gpu_allowance_s=20,
            gpu_note=(
                "quick: trains four small decoders; the decode and speculative loops "
                "are Python-bound"
            ),
        ),
    ]
}

_TABLES = {Method: METHODS, Mixer: MIXERS, Suite: SUITES}


def add(entry: Method | Mixer | Suite, *, replace: bool = False) -> None:
    """Add a reader's own entry to its table; ``replace=True`` overrides one of the same name."""
    table = _TABLES.get(type(entry))
    if table is None:
        raise TypeError(f"entry must be a Method, Mixer or Suite, got {type(entry).__name__}")
    if not isinstance(entry.name, str) or not entry.name:
        raise TypeError(f"entry name must be a non-empty str, got {entry.name!r}")
    if not (callable(entry.target) or isinstance(entry.target, str) and ":" in entry.target):
        raise TypeError(
            f"entry target must be a callable or a 'module:attribute' string, got {entry.target!r}"
        )
    if isinstance(entry, Method) and entry.causal not in CAUSAL_MODES:
        raise ValueError(f"causal must be one of {CAUSAL_MODES}, got {entry.causal!r}")
    if isinstance(entry, Method) and not set(entry.defaults) <= set(entry.options):
        raise ValueError(
            f"defaults must name declared options {sorted(entry.options)}, got "
            f"{sorted(entry.defaults)}"
        )
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

    ``family``: only that family; ``exact``: only exact (True) or approximate (False) ones;
    ``causal``: only those that accept ``causal=True`` (True) or ``causal=False`` (False);
    ``variants=False`` drops re-implementations of another method (sdpa, flash), leaving one entry
    per mechanism; ``device`` (a device or its type, e.g. "cpu"): only those that run there.
    """
    for name, value in (("exact", exact), ("causal", causal)):
        if value is not None:
            check_bool(name, value)
    check_bool("variants", variants)
    if family is not None and not isinstance(family, str):
        raise TypeError(f"family must be a str or None, got {type(family).__name__} {family!r}")
    kind = None if device is None else _device_type(device)
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


def _device_type(device) -> str:
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch.device or a name such as 'cpu' or 'cuda', got {device!r}"
        ) from err


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


def _check_output(info: Method, out, inputs: dict, expected: tuple, values: bool = True):
    """The output's shape, then (``values``) its values; the inputs are scanned only when the
    output is bad."""
    if not isinstance(out, torch.Tensor) or out.shape != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RuntimeError(f"method {info.name!r} returned {got}, expected shape {expected}")
    if not values or is_finite(out):
        return out
    raise _values_error(info, inputs)


def _values_error(info: Method, inputs: dict, detail: str = "") -> FloatingPointError:
    """Name the input that holds NaN or inf (``ValueError``), else the error to raise: the method
    made NaN or inf from finite inputs (``detail``: the method's own account of it)."""
    for name, x in inputs.items():
        check_tensor(name, x)  # names the input that holds NaN or inf
    q, k = inputs["q"], inputs["k"]
    detail = detail.removeprefix(f"method {info.name!r}: ") or (
        "produced NaN or infinite values from finite inputs: its feature map over- or underflows "
        f"in {q.dtype} at this magnitude; scale q and k down, or use an exact method"
    )
    return FloatingPointError(
        f"method {info.name!r} (max |q| = {q.abs().max().item():.3g}, max |k| = "
        f"{k.abs().max().item():.3g}): {detail}"
    )


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
    Shapes, dtypes and devices are checked once here; NaN/inf inputs are found from the output, or
    from the method's own error where it checks its output (``Method.checks_output``); a NaN or inf
    in a position the method never reads (e.g. outside a sparse pattern) is not.
    """
    info = method_info(method)
    causal = info.check_call(causal, options)
    check_qkv(q, k, v, finite=False)
    if causal:
        check_same_length(q, k)
    inputs = {"q": q, "k": k, "v": v}
    for name in info.scan_inputs.get(q.device.type, ()):
        check_tensor(name, inputs[name])
    try:
        with inputs_validated():
            out = info.fn(q, k, v, causal=causal, **{**info.defaults, **options})
    except FloatingPointError as err:
        if not info.checks_output:
            raise
        raise _values_error(info, inputs, str(err)) from err
    expected = (*q.shape[:3], v.shape[-1])
    return _check_output(info, out, inputs, expected, values=not info.checks_output)


def decode(
    method: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, /, **options
) -> torch.Tensor:
    """Causal attention one token at a time through the method's recurrent ``step``.

    q, k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv), equal to ``attention(..., causal=True)``.
    Options that only shape the parallel form (``Method.parallel_options``, e.g. ``chunk_size``) are
    accepted and dropped. No step waits on the device: the output is checked once at the end.

    Chapters 3, 4, 7.
    """
    info = method_info(method)
    if info.step_target is None:
        with_step = [m.name for m in METHODS.values() if m.step_target is not None]
        raise ValueError(f"method {method!r} has no recurrent step; methods with one: {with_step}")
    info.check_call(True, options)
    n = check_qkv(q, k, v, finite=False)[2]
    check_same_length(q, k, "decode")
    options = {key: val for key, val in options.items() if key not in info.parallel_options}
    step, state, outs = info.step, None, []
    with inputs_validated():
        for t in range(n):
            state, o = step(state, q[:, :, t], k[:, :, t], v[:, :, t], **options)
            outs.append(o)
    out = torch.stack(outs, dim=2)
    return _check_output(info, out, {"q": q, "k": k, "v": v}, (*q.shape[:3], v.shape[-1]))
