"""Suite "api" (chapter 4): what the public API costs on top of the functions it wraps.

For B = 1, H = 4, D = 64 and each of ``flash``, ``sdpa``, ``linear`` and ``performer``: the time of
``attnbook.attention(q, k, v, method=...)`` against the mechanism's own function on the same tensors
(n = 1,024 .. 16,384, causal and not), and the peak memory of each (n = 1,024 .. 16,384, causal).
Then per-token decoding: ``attnbook.decode`` against the bare loop of the method's ``step`` (every
method with a step). The targets (chapter 4, issue 23): time ≤ 1.05x and peak memory ≤ 1.1x
through the API, decoding ≤ 1.1x; ``tests/test_stored_targets.py`` asserts them on the stored run,
time on each method's geometric mean over n (one point scatters by more than the API's cost).

Timing (:func:`paired_times`): each round calls the two forms back to back, half of the rounds
with the API first; a comparison's ratio is the geometric mean of the two orders' median
api/direct ratios. A slow spell of the machine then slows both halves of a round alike, and the
first call of a round, which tends to be the slower, is the API in half the rounds. The whole
time sweep runs :data:`PASSES` times (3 s a point on a CPU, 0.75 s on a GPU, split between the
passes; 2 to 200 rounds a pass), and a point's ``ratio`` is the median of its passes: a state of
the machine that lasts a few seconds (which of two calls meets freshly mapped memory, say) then
sways one pass only. The ratio of the two separate minima (also stored, ``ratio_of_minima``) has
none of these protections, and on a shared 2-core machine it scatters by ±10 % around the API's
real cost of some microseconds. The stored GPU run (commit 62365e8) predates the passes: its
``ratio`` is the median of 21 rounds (5 above n = 4,096), half with the API first.
"""

from __future__ import annotations

import statistics
import time

import torch

from attnbook.bench import sweep
from attnbook.checks import checked, inputs_validated
from attnbook.measure import peak_memory_bytes, sync
from attnbook.registry import attention, decode, method_info, methods

__all__ = [
    "SHAPE",
    "METHODS",
    "TIME_RATIO",
    "MEMORY_RATIO",
    "DECODE_RATIO",
    "MAX_ROUNDS",
    "PASSES",
    "POINT_SCATTER",
    "paired_times",
    "run",
]

SHAPE = {"batch": 1, "heads": 4, "head_dim": 64}
#: the methods whose public call is compared with the bare function
METHODS = ("flash", "sdpa", "linear", "performer")
TIME_RATIO, MEMORY_RATIO, DECODE_RATIO = 1.05, 1.1, 1.1
MAX_ROUNDS = 200  #: of one comparison (a 1 ms call: 0.4 s)
PASSES = 3  #: sweeps over every time comparison; a point's ratio is the median of its passes
#: how far one point's ratio strays on a shared 2-core machine (stored run: 0.94 .. 1.09 for a call
#: that only adds a few microseconds); the 1.05x target is asserted on each method's geometric mean
POINT_SCATTER = 0.1


def _inputs(n: int, device, heads: int = SHAPE["heads"]):
    g = torch.Generator().manual_seed(n)
    B, D = SHAPE["batch"], SHAPE["head_dim"]
    return [torch.randn(B, heads, n, D, generator=g).to(device) for _ in range(3)]


def _pair(method: str, q, k, v, causal: bool) -> dict:
    """The public call and the bare function of ``method`` on the same tensors."""
    fn = method_info(method).fn
    return {
        "api": lambda: attention(q, k, v, method=method, causal=causal),
        "direct": lambda: fn(q, k, v, causal=causal),
    }


def paired_times(api, direct, device, budget_s: float, min_rounds: int = 6) -> dict:
    """Time ``api()`` against ``direct()`` in rounds, both calls in each round, back to back:
    as many rounds as fit in ``budget_s`` (an even number, at least ``min_rounds``, at most
    :data:`MAX_ROUNDS`), half of them with ``api`` first. ``ratio``: the geometric mean of the two
    orders' medians of api/direct (the first call of a round tends to be the slower; this cancels
    it); also the minima, their ratio and the number of rounds."""
    times = {"api": [], "direct": []}
    start = time.perf_counter()
    api(), direct()  # warm-up, and the length of a round
    per_round = time.perf_counter() - start
    rounds = 2 * max(min_rounds // 2, min(MAX_ROUNDS // 2, int(budget_s / per_round) // 2))
    for i in range(rounds):
        for name, fn in (("api", api), ("direct", direct))[:: 1 if i % 2 else -1]:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    ratios = [a / d for a, d in zip(times["api"], times["direct"])]
    api_first, direct_first = statistics.median(ratios[1::2]), statistics.median(ratios[0::2])
    api_min, direct_min = min(times["api"]), min(times["direct"])
    return {
        "api_min_s": api_min,
        "direct_min_s": direct_min,
        "ratio": (api_first * direct_first) ** 0.5,
        "ratio_api_first": api_first,
        "ratio_direct_first": direct_first,
        "ratio_of_minima": api_min / direct_min,
        "rounds": rounds,
    }


def _time_rows(device, ns, budget_s, passes: int = PASSES) -> list[dict]:
    """Every comparison ``passes`` times, the whole sweep over again each time, ``budget_s`` split
    between them; a point's ``ratio`` is the median of its passes' ratios."""
    timed = {}
    for pass_ in range(passes):
        for n in sweep(ns, "api time"):
            q, k, v = _inputs(n, device)  # the same tensors in every pass (seeded by n)
            for method in METHODS:
                for causal in (False, True):
                    fns = _pair(method, q, k, v, causal)
                    if pass_ == 0:  # later passes time the same two calls on the same q, k, v
                        api_out, direct_out = fns["api"](), fns["direct"]()
                        checked(f"{method} api n={n}", api_out, direct_out, rtol=0, atol=0)
                    t = paired_times(fns["api"], fns["direct"], device, budget_s / passes, 2)
                    timed.setdefault((method, n, causal), []).append(t)
    rows = []
    for (method, n, causal), ts in timed.items():
        api_min, direct_min = min(t["api_min_s"] for t in ts), min(t["direct_min_s"] for t in ts)
        rows.append(
            {
                "part": "time",
                "method": method,
                "n": n,
                "causal": causal,
                "ratio": statistics.median(t["ratio"] for t in ts),
                "pass_ratios": [t["ratio"] for t in ts],
                "api_min_s": api_min,
                "direct_min_s": direct_min,
                "ratio_of_minima": api_min / direct_min,
                "rounds": sum(t["rounds"] for t in ts),
                **SHAPE,
            }
        )
    return rows


def _memory_rows(device, ns) -> list[dict]:
    rows = []
    for n in sweep(ns, "api memory"):
        q, k, v = _inputs(n, device)
        for method in METHODS:
            peaks = {
                form: int(peak_memory_bytes(fn, device=device))
                for form, fn in _pair(method, q, k, v, True).items()
            }
            rows.append(
                {
                    "part": "memory",
                    "method": method,
                    "n": n,
                    "causal": True,
                    "api_peak_bytes": peaks["api"],
                    "direct_peak_bytes": peaks["direct"],
                    "ratio": peaks["api"] / peaks["direct"],
                    **SHAPE,
                }
            )
    return rows


def _bare_decode(step, q, k, v):
    """The step loop with nothing around it (no checks of shapes or values)."""
    state, outs = None, []
    with inputs_validated():
        for t in range(q.shape[2]):
            state, o = step(state, q[:, :, t], k[:, :, t], v[:, :, t])
            outs.append(o)
    return torch.stack(outs, dim=2)


def _decode_rows(device, n, budget_s) -> list[dict]:
    rows = []
    q, k, v = _inputs(n, device)
    for method in methods(device=device):
        step = method_info(method).step
        if step is None:
            continue
        fns = {
            "api": lambda m=method: decode(m, q, k, v),
            "direct": lambda s=step: _bare_decode(s, q, k, v),
        }
        checked(f"{method} decode", fns["api"](), fns["direct"](), rtol=0, atol=0)
        timed = paired_times(fns["api"], fns["direct"], device, budget_s)
        rows.append({"part": "decode", "method": method, "n": n, "causal": True, **timed, **SHAPE})
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    time_ns = (256, 512) if quick else (1024, 2048, 4096, 8192, 16384)
    memory_ns = (256, 1024) if quick else (1024, 4096, 16384)
    # seconds of timing per comparison (a GPU's times scatter less than a shared CPU's)
    budget_s = 0.05 if quick else (0.75 if device.type == "cuda" else 3.0)
    with torch.no_grad():
        return (
            _time_rows(device, time_ns, budget_s)
            + _memory_rows(device, memory_ns)
            + _decode_rows(device, 64 if quick else 256, budget_s)
        )
