"""Suite "long" (chapter 4): time, peak memory and error of every registered attention method against n.

Every method found by :func:`attnbook.methods` is run at its default options,
causal when it supports it. Before timing, its output on a sample of query rows
is compared with exact attention computed in float64 for those rows: exact
methods must match to float32 rounding (else they are refused, not timed); the
sparse patterns must match their own masked reference; every method's error
against exact attention is recorded as ``rel_error``. A method stops growing n
once its predicted time per call exceeds the budget.

On CPU the suite times single-threaded and leaves torch at one thread (so the
stored label says so): on the shared 2-core machine where the book's stored
results were made, two OpenMP threads spin-waiting against other jobs made the
same call 5 to 60 times slower and far noisier.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from attnbook import reference
from attnbook.bench import sweep, time_of
from attnbook.checks import CorrectnessError, checked, rel_error
from attnbook.measure import fit_loglog, peak_memory_bytes, time_fn
from attnbook.mechanisms.sparse import method_pattern
from attnbook.registry import attention, method_info, methods

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

SHAPE = {"batch": 1, "heads": 2, "head_dim": 64}
SAMPLE_ROWS = 48


def sizes(quick: bool) -> list[int]:
    """Sequence lengths swept: 256 .. 2048 (quick) or 256 .. 16384 (full)."""
    return [256 * 2**i for i in range(4 if quick else 7)]


def _inputs(n: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed + n)
    B, H, D = SHAPE["batch"], SHAPE["heads"], SHAPE["head_dim"]
    return [torch.randn(B, H, n, D, generator=g).to(device) for _ in range(3)]


def _row_reference(q, k, v, rows: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Float64 attention for the query ``rows`` only; ``allowed``: (len(rows), N) bool."""
    qn, kn, vn = (x.detach().double().cpu().numpy() for x in (q, k, v))
    return reference.scaled_dot_product_attention(qn[:, :, rows], kn, vn, mask=allowed)[0]


def measure_method(method: str, n: int, causal: bool, device, repeats: int = 3) -> dict:
    """One row of the suite: check ``method`` at length n, then time it and measure its peak memory.

    Raises :class:`~attnbook.bench.CorrectnessError` (and times nothing) when an exact method, or a
    sparse pattern against its own masked reference, disagrees beyond float32 rounding.
    """
    info = method_info(method)
    q, k, v = _inputs(n, device)
    with torch.no_grad():
        out = attention(q, k, v, method=method, causal=causal)
    rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).astype(int))
    keys = np.arange(n)
    exact_allowed = (
        keys[None, :] <= rows[:, None] if causal else np.ones((rows.size, n), dtype=bool)
    )
    ref = _row_reference(q, k, v, rows, exact_allowed)
    fast = out[:, :, torch.as_tensor(rows, device=out.device)]
    scale = float(np.abs(ref).max())
    error = rel_error(fast, ref)
    if info.exact:
        checked(method, fast, ref, rtol=1e-3, atol=1e-4 * scale)
    if info.family == "sparse":
        pattern, _ = method_pattern(method, n, causal)
        own = _row_reference(q, k, v, rows, pattern.allowed(rows[:, None], keys[None, :], n))
        checked(
            f"{method} against its masked reference",
            fast,
            own,
            rtol=1e-3,
            atol=1e-4 * float(np.abs(own).max()),
        )

    def call():
        with torch.no_grad():
            return attention(q, k, v, method=method, causal=causal)

    t = time_fn(call, warmup=1, repeats=repeats, device=device)
    peak = peak_memory_bytes(call, device=device) if device.type in ("cpu", "cuda") else None
    return {
        "method": method,
        "n": n,
        "batch": SHAPE["batch"],
        "heads": SHAPE["heads"],
        "head_dim": SHAPE["head_dim"],
        "causal": causal,
        "min_s": t.min_s,
        "q10_s": t.q10_s,
        "median_s": t.median_s,
        "q25_s": t.q25_s,
        "q75_s": t.q75_s,
        "peak_bytes": None if peak is None else int(peak),
        "rel_error": error,
    }


def supports_causal(method: str) -> bool:
    """Whether ``method`` has a causal form (its registry record says so)."""
    return method_info(method).causal != "noncausal"


def sweep_method(
    method: str, causal: bool, ns, device, repeats: int, budget_s: float
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
            rows.append(measure_method(method, n, causal, device, repeats))
        except CorrectnessError as err:
            warnings.warn(f"not timed: {err}")
            break
        except (
            RuntimeError,
            MemoryError,
        ) as err:  # out of memory, or a form that cannot run at this n
            warnings.warn(f"{method} stopped at n={n}: {err}")
            break
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    if device.type == "cpu":
        torch.set_num_threads(1)
    ns = sizes(quick)
    repeats, budget = (3, 0.5) if quick else (3, 5.0)
    rows = []
    for method in sweep(methods(device=device), "methods"):
        causal = supports_causal(method)
        rows += sweep_method(method, causal, ns, device, repeats, budget)
        if method == "sdpa":  # the baseline for methods that only run non-causally
            rows += sweep_method(method, False, ns, device, repeats, budget)
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
    """{(method, causal): smallest measured n from which it beats ``baseline`` at every larger common n, or None}."""
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
