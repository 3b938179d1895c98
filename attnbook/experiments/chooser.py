"""Recommend an attention mechanism from measurements (chapter 6, Designing efficient
architectures).

:func:`recommend` reads the long-sequence chapter's stored benchmark
(``attnbook.results.load_result("long", device_kind)``: rows of time, peak memory and
error against exact attention per method and length n), or, when no result is stored
for the device, runs a small live benchmark with the same measuring code. For each
method it predicts time and peak memory at the requested n by log-log interpolation
between the measured lengths (extrapolation from the two nearest ones outside them),
scales both linearly by batch × heads, drops the methods over the memory budget or
over the error tolerance, and picks the fastest. The result explains itself.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attnbook.checks import CorrectnessError, check_bool, check_positive_float, check_positive_int
from attnbook.measure import fit_loglog, measure_method
from attnbook.registry import methods
from attnbook.results import RESULTS_DIR, load_result

__all__ = [
    "RULE_OF_THUMB",
    "RULE_FAMILIES",
    "family_methods",
    "default_live_methods",
    "Estimate",
    "Recommendation",
    "rule_of_thumb",
    "estimate",
    "recommend",
]

# The classic table: upper bound of n (exclusive) -> family.
RULE_OF_THUMB = (
    (2048, "dense"),
    (8192, "flash"),
    (65536, "sparse/linformer"),
    (math.inf, "performer/hierarchical"),
)
#: Registry families behind each family of the rule (the method lists are read from the records).
RULE_FAMILIES = {
    "dense": ("dense",),  # dense, sdpa and flash: every exact form of softmax attention
    "flash": ("dense",),
    "sparse/linformer": ("sparse", "low-rank"),
    "performer/hierarchical": ("kernel", "linear"),
}


def family_methods(rule_family: str) -> tuple[str, ...]:
    """The registered methods of one family of the rule of thumb (from the registry's records)."""
    if rule_family not in RULE_FAMILIES:
        raise ValueError(f"rule_family must be one of {list(RULE_FAMILIES)}, got {rule_family!r}")
    return tuple(m for fam in RULE_FAMILIES[rule_family] for m in methods(family=fam))


def default_live_methods(device="cpu") -> tuple[str, ...]:
    """What the live mini-benchmark measures on ``device``: every exact form, then the first method
    of each
    other family."""
    families = dict.fromkeys(fam for fams in RULE_FAMILIES.values() for fam in fams)
    return tuple(methods(family="dense", device=device)) + tuple(
        methods(family=fam, device=device)[0] for fam in families if fam != "dense"
    )


ROW_KEYS = (
    "method",
    "n",
    "batch",
    "heads",
    "head_dim",
    "causal",
    "median_s",
    "peak_bytes",
    "rel_error",
)
DEVICE_KINDS = ("cpu", "cuda", "mps")
_LIVE_CACHE: dict = {}


def rule_of_thumb(n: int) -> str:
    """The family the classic table gives for length n: dense, flash, sparse/linformer,
    performer/hierarchical."""
    n = check_positive_int("n", n)
    return next(family for bound, family in RULE_OF_THUMB if n < bound)


@dataclass(frozen=True)
class Estimate:
    """Predicted cost of one method at length n (seconds, bytes), and whether it qualifies."""

    method: str
    time_s: float | None
    peak_bytes: float | None
    rel_error: float
    measured_n: tuple
    extrapolated: bool
    rejected: str = ""  # why it does not qualify, "" when it does


@dataclass(frozen=True)
class Recommendation:
    """The chooser's answer: ``method`` (None when nothing qualifies), every estimate, and why."""

    method: str | None
    n: int
    memory_budget_bytes: float
    device_kind: str
    causal: bool
    source: str
    estimates: list = field(default_factory=list)
    explanation: str = ""

    @property
    def chosen(self) -> Estimate | None:
        return next((e for e in self.estimates if e.method == self.method), None)

    def __str__(self) -> str:
        return self.explanation


def _interp(n: int, pts: list[tuple[int, float]]) -> tuple[float, bool]:
    """y at n from measured (n_i, y_i) sorted by n, and whether it is extrapolated.

    Inside the measured range: the straight line between the two neighbours on log-log axes.
    Outside: the least-squares log-log line through the three nearest points (two if only two).
    """
    for ni, yi in pts:
        if ni == n:
            return yi, False
    if pts[0][0] < n < pts[-1][0]:
        i = next(i for i, (ni, _) in enumerate(pts) if ni > n)
        (n0, y0), (n1, y1) = pts[i - 1], pts[i]
        return y0 * (n / n0) ** (math.log(y1 / y0) / math.log(n1 / n0)), False
    near = pts[:3] if n < pts[0][0] else pts[-3:]
    fit = fit_loglog([p[0] for p in near], [p[1] for p in near])
    return float(fit.predict(n)), True


def estimate(
    rows: list[dict], method: str, n: int, causal: bool, scale: float = 1.0
) -> Estimate | None:
    """Predicted time and memory of ``method`` at n
    from its measured rows (None when it has none)."""
    mine = sorted(
        (r for r in rows if r["method"] == method and r["causal"] == causal), key=lambda r: r["n"]
    )
    if not mine:
        return None
    measured = tuple(r["n"] for r in mine)
    nearest = min(mine, key=lambda r: abs(math.log(r["n"] / n)))
    if len(mine) < 2 and n != mine[0]["n"]:
        return Estimate(
            method, None, None, nearest["rel_error"], measured, True, "measured at one length only"
        )
    time_s, extra = _interp(n, [(r["n"], r["median_s"]) for r in mine])
    mem = [(r["n"], r["peak_bytes"]) for r in mine if r["peak_bytes"]]
    peak = None
    if len(mem) >= 2 or (mem and mem[0][0] == n):
        peak = _interp(n, mem)[0] * scale
    return Estimate(method, time_s * scale, peak, nearest["rel_error"], measured, extra)


def _check_device(device) -> torch.device:
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"device must be one of {DEVICE_KINDS} (optionally with an index), got {device!r}"
            ) from None
    if not isinstance(device, torch.device):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if device.type not in DEVICE_KINDS:
        raise ValueError(f"device must be one of {DEVICE_KINDS}, got {str(device)!r}")
    return device


def _check_rows(result: dict) -> list[dict]:
    rows = result.get("rows") if isinstance(result, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(
            "results must be a dict with a non-empty list 'rows' (the 'long' suite's output)"
        )
    for row in rows:
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"results rows must have keys {ROW_KEYS}; a row lacks {missing}")
    return rows


def _live_rows(device: torch.device, causal: bool, sizes: tuple, live_methods: tuple) -> list[dict]:
    """A small live run of the long suite's measurement
    for ``live_methods`` at ``sizes`` (cached)."""
    key = (str(device), causal, sizes, live_methods)
    if key not in _LIVE_CACHE:
        rows = []
        for method in live_methods:
            for n in sizes:
                try:
                    rows.append(measure_method(method, n, causal, device))
                except (
                    ValueError,
                    NotImplementedError,
                    CorrectnessError,
                ):  # no causal form, or refused
                    break
        _LIVE_CACHE[key] = rows
    return _LIVE_CACHE[key]


def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def recommend(
    n: int,
    memory_budget_bytes: float,
    device="cpu",
    *,
    causal: bool = True,
    max_rel_error: float = 1e-3,
    batch: int = 1,
    heads: int | None = None,
    results: dict | None = None,
    results_dir: Path | str = RESULTS_DIR,
    live: bool = True,
    live_sizes: tuple = (256, 512, 1024),
    live_methods: tuple | None = None,
) -> Recommendation:
    """Recommend the fastest mechanism for attention over n tokens within a memory budget.

    n: sequence length; memory_budget_bytes: peak bytes the attention call may use; device: 'cpu',
    'cuda', 'mps' or a torch.device; causal: causal attention; max_rel_error: largest error against
    exact attention (measured on random inputs) that is accepted (1e-3 keeps exact methods only);
    batch, heads: the caller's sizes (time and memory scale linearly from the stored ones). Uses
    ``results`` if given, else the stored 'long' result for the device kind, else (``live=True``) a
    live mini-benchmark at ``live_sizes``.

    Chapter 6.
    """
    n = check_positive_int("n", n)
    budget = check_positive_float("memory_budget_bytes", memory_budget_bytes)
    device = _check_device(device)
    causal = check_bool("causal", causal)
    if (
        isinstance(max_rel_error, bool)
        or not isinstance(max_rel_error, numbers.Real)
        or not max_rel_error >= 0
    ):
        raise ValueError(f"max_rel_error must be a number >= 0, got {max_rel_error!r}")
    batch = check_positive_int("batch", batch)
    if heads is not None:
        heads = check_positive_int("heads", heads)

    rows, source = _rows_and_source(
        device, causal, results, results_dir, live, live_sizes, live_methods
    )
    ref = rows[0]
    scale = batch * (heads or ref["heads"]) / (ref["batch"] * ref["heads"])
    estimates = _judged_estimates(rows, n, causal, scale, budget, max_rel_error)
    ok = sorted((e for e in estimates if not e.rejected), key=lambda e: e.time_s)
    method = ok[0].method if ok else None
    head = (
        f"n={n:,}, {'causal' if causal else 'bidirectional'}, b={batch}, "
        f"H={heads or ref['heads']}, "
        f"d_k={ref['head_dim']}, budget {_mib(budget)}, device {device.type}; from the {source}."
    )
    lines = _explanation(n, ok, estimates)
    return Recommendation(
        method, n, budget, device.type, causal, source, estimates, head + "\n" + "\n".join(lines)
    )


def _rows_and_source(device, causal, results, results_dir, live, live_sizes, live_methods):
    """The rows the chooser reads (given, stored or measured live) and where they came from."""
    if results is None:
        results = load_result("long", device.type, results_dir)
        if results is not None:
            meta = results.get("meta", {})
            source = (
                f"stored result long-{device.type}.json "
                f"({meta.get('device', '?')}, {meta.get('date', '?')})"
            )
    else:
        source = "results given by the caller"
    if results is not None:
        return _check_rows(results), source
    if not live:
        raise ValueError(
            f"no stored 'long' result for device {device.type!r} in {results_dir}, and live=False"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' has no stored 'long' result and CUDA is not available to measure live"
        )
    sizes = tuple(check_positive_int("live_sizes", s) for s in live_sizes)
    rows = _live_rows(device, causal, sizes, tuple(live_methods or default_live_methods(device)))
    if not rows:
        raise ValueError(f"the live mini-benchmark measured nothing for causal={causal}")
    return rows, f"live mini-benchmark on {device} at n = {', '.join(map(str, sizes))}"


def _judged_estimates(rows, n, causal, scale, budget, max_rel_error) -> list[Estimate]:
    """Every method's estimate at n, each with why it is rejected ('' when it is within limits)."""
    estimates = []
    for method in dict.fromkeys(r["method"] for r in rows):
        est = estimate(rows, method, n, causal, scale)
        if est is None:
            continue
        why = est.rejected
        if not why and est.peak_bytes is None:
            why = "peak memory not measured"
        elif not why and est.peak_bytes > budget:
            why = f"needs {_mib(est.peak_bytes)} > budget {_mib(budget)}"
        elif not why and est.rel_error > max_rel_error:
            why = f"error {est.rel_error:.1e} > tolerance {max_rel_error:.0e}"
        estimates.append(Estimate(**{**est.__dict__, "rejected": why}))
    if not estimates:
        raise ValueError(f"the results hold no measurement with causal={causal}")
    return estimates


def _explanation(n: int, ok: list, estimates: list) -> list[str]:
    """The recommendation's lines: the best method, the runners-up, the rejected and why."""
    if ok:
        best = ok[0]
        how = (
            "extrapolated from "
            f"n={best.measured_n[0] if n < best.measured_n[0] else best.measured_n[-1]:,}"
            if best.extrapolated
            else f"interpolated within n={best.measured_n[0]:,}..{best.measured_n[-1]:,}"
        )
        lines = [
            f"Recommended: {best.method} — predicted {best.time_s * 1e3:,.2f} ms and "
            f"{_mib(best.peak_bytes)} "
            f"({how}), error {best.rel_error:.1e} against exact attention."
        ]
        lines += [
            f"  also within limits: {e.method} ({e.time_s / best.time_s:.2f}× its time)"
            for e in ok[1:4]
        ]
    else:
        lines = [
            "Nothing fits: every measured method is over the memory budget or the error tolerance."
        ]
    return lines + [f"  rejected: {e.method} ({e.rejected})" for e in estimates if e.rejected]
