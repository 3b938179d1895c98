"""Suite "long" (chapter 4): time, peak memory and
error of every registered attention method against n.

Every method found by :func:`attnbook.methods` is run at its default options,
causal when it supports it. Before timing, its output on a sample of query rows
is compared with exact attention computed in float64 for those rows: exact
methods must match to float32 rounding (else they are refused, not timed); the
sparse patterns must match their own masked reference; every method's error
against exact attention is recorded as ``rel_error``. A method stops growing n
once its predicted time per call exceeds the budget.

On CPU the suite times single-threaded (its record's ``cpu_threads``, which the
runner sets, so the stored label says so): on the shared 2-core machine where the book's stored
results were made, two OpenMP threads spin-waiting against other jobs made the
same call 5 to 60 times slower and far noisier.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from attnbook.bench import sweep, time_of
from attnbook.checks import CorrectnessError
from attnbook.measure import METHOD_SHAPE as SHAPE
from attnbook.measure import fit_loglog, measure_method
from attnbook.registry import method_info, methods

__all__ = [
    "SHAPE",
    "sizes",
    "measure_method",
    "supports_causal",
    "sweep_method",
    "slopes",
    "crossovers",
    "comparison_table",
]


def sizes(quick: bool) -> list[int]:
    """Sequence lengths swept: 256 .. 2048 (quick) or 256 .. 16384 (full)."""
    return [256 * 2**i for i in range(4 if quick else 7)]


def supports_causal(method: str) -> bool:
    """Whether ``method`` has a causal form (its registry record says so)."""
    return method_info(method).causal != "noncausal"


def sweep_method(
    method: str,
    causal: bool,
    ns,
    device,
    repeats: int,
    budget_s: float,
    heads: int = SHAPE["heads"],
) -> list[dict]:
    """Rows of ``method`` for growing n, until its predicted time per call passes ``budget_s``;
    a method failing its correctness check is refused (a warning, no row)."""
    rows = []
    for n in ns:
        if len(rows) >= 2:  # predict the next time from the last two points, stop past the budget
            a, b = rows[-2], rows[-1]
            slope = np.log(time_of(b) / time_of(a)) / np.log(b["n"] / a["n"])
            if (
                time_of(b) * (n / b["n"]) ** float(np.clip(slope, 1.0, 2.0)) > budget_s
            ):  # steeper than n²: noise
                break
        try:
            rows.append(measure_method(method, n, causal, device, repeats, heads))
        except CorrectnessError as err:
            warnings.warn(f"not timed: {err}", stacklevel=2)
            break
        except (
            RuntimeError,
            MemoryError,
        ) as err:  # out of memory, or a form that cannot run at this n
            warnings.warn(f"{method} stopped at n={n}: {err}", stacklevel=2)
            break
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    ns = sizes(quick)
    repeats, budget = (3, 0.5) if quick else (3, 5.0)
    rows = []
    for method in sweep(methods(device=device), "methods"):
        causal = supports_causal(method)
        rows += sweep_method(method, causal, ns, device, repeats, budget)
        if method == "sdpa":  # the baseline for methods that only run non-causally
            rows += sweep_method(method, False, ns, device, repeats, budget)
    return rows


#: heads of the second shape, where a working set that grows with n outgrows the cache sooner
HEADS_WIDE = 4


def run_wide(device: torch.device, quick: bool) -> list[dict]:
    """Suite "long-h4": the methods whose time is linear in n (``Method.linear_in_n``) at
    H = :data:`HEADS_WIDE`, the rest of the shape as :data:`SHAPE`, causal where they can be."""
    ns = sizes(quick)
    repeats, budget = (3, 0.5) if quick else (3, 5.0)
    rows = []
    for method in sweep(methods(device=device), "methods"):
        if method_info(method).linear_in_n:
            causal = supports_causal(method)
            rows += sweep_method(method, causal, ns, device, repeats, budget, HEADS_WIDE)
    return rows


def slopes(rows, min_n: int = 1024, value=time_of) -> dict:
    """{(method, causal): LogLogFit of ``value(row)`` (default: the headline time, ``min_s``) vs n}
    over n >= min_n (needs two points)."""
    out = {}
    for key in sorted({(r["method"], r["causal"]) for r in rows}):
        pts = sorted(
            (r["n"], value(r))
            for r in rows
            if (r["method"], r["causal"]) == key and r["n"] >= min_n
        )
        if len(pts) >= 2:
            out[key] = fit_loglog(*map(np.array, zip(*pts)))
    return out


def crossovers(rows, baseline: str = "sdpa") -> dict:
    """{(method, causal): smallest measured n from which it beats ``baseline`` at every larger
    common n, or None}."""
    base = {(r["n"], r["causal"]): time_of(r) for r in rows if r["method"] == baseline}
    out = {}
    for key in sorted({(r["method"], r["causal"]) for r in rows if r["method"] != baseline}):
        common = sorted(
            (r["n"], time_of(r) < base[(r["n"], r["causal"])])
            for r in rows
            if (r["method"], r["causal"]) == key and (r["n"], r["causal"]) in base
        )
        first = None
        for n, faster in common:
            first = (first or n) if faster else None
        out[key] = first
    return out


def comparison_table(rows, baseline: str = "sdpa", min_n: int = 1024) -> list[dict]:
    """One line per (method, causal), from measurements only: exactness, fitted time and memory
    slopes, worst error against exact attention, crossover with ``baseline``, largest n measured."""
    fits, cross = slopes(rows, min_n), crossovers(rows, baseline)
    mem = slopes([r for r in rows if r["peak_bytes"]], min_n, value=lambda r: r["peak_bytes"])
    table = []
    for key in sorted({(r["method"], r["causal"]) for r in rows}):
        mine = [r for r in rows if (r["method"], r["causal"]) == key]
        top = max(mine, key=lambda r: r["n"])
        table.append(
            {
                "method": key[0],
                "causal": key[1],
                "exact": method_info(key[0]).exact,
                "time_slope": fits[key].slope if key in fits else None,
                "memory_slope": mem[key].slope if key in mem else None,
                "max_rel_error": max(r["rel_error"] for r in mine),
                "crossover_n": cross.get(key),
                "largest_n": top["n"],
                "time_at_largest_s": time_of(top),
                "peak_bytes_at_largest": top["peak_bytes"],
            }
        )
    return table
