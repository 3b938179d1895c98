"""Every stored timing curve in attnbook/results/*.json is physically plausible (chapters 2-8).

For each method or series: the time does not fall as n grows (beyond a small tolerance for noise),
and the slope fitted on log-log axes over the whole stored range stays within what the method's cost
model allows: quadratic methods at most a little above 2, sub-quadratic ones at most a little above
their exponent (1 for linear time, 1.5 for the strided pattern's n√n), a decoding step with a fixed
state flat. No single step between consecutive sizes may be much steeper than that bound either,
except one cache cliff (:data:`CLIFF`) with the bound holding on each side of it. A curve measured
on a busy machine (a call that got ten times slower because another job took the core) fails here,
so a stored result that a chapter asserts on cannot be silently broken.
"""

import numpy as np
import pytest

from attnbook.bench import load_result, time_of
from attnbook.measure import fit_loglog

#: a later, larger n may be this much faster than an earlier one (timing noise of a quiet machine)
DROP = 0.10
#: allowance above the cost model's exponent for memory-hierarchy effects (caches, bandwidth)
MARGIN = 0.3
#: a single doubling of n may look steeper than the fit (a working set leaving a cache), but not by
#: more than this: 1.6 ms at n = 256 and 44 ms at n = 512 (a local slope of 4.8) is another job, not
#: the method
JUMP = 0.7
#: one step may be steeper still when it is a cache cliff: the working set leaves the last-level
#: cache (dense causal attention's four (n, n) fp32 score matrices are 16 MiB at n = 1024 and 64 MiB
#: at 2048, against this CPU's 32 MiB L3), so the time per byte jumps once by the cache-to-DRAM
#: bandwidth ratio; accepted only if every later step is back within the cost model's exponent
CLIFF = 1.2
#: cost-model exponent in n of the forward (or forward + backward) time of each long-suite method
LONG_EXPONENT = {
    "dense": 2,
    "sdpa": 2,
    "flash": 2,
    "flash_triton": 2,
    "strided": 1.5,
}  # others: linear in n

#: curves of the current stored files known to be non-physical (none since the quiet re-measurement
#: of 2026-11-29); a name here marks its curve as an expected failure until the lead re-measures it
AWAITING: set[str] = set()


def _curves():
    """(id, ns, times, largest allowed slope, smallest allowed slope) of every stored timing
    curve."""
    out = []
    long = load_result("long", "cpu")
    if long is not None:
        for key in sorted({(r["method"], r["causal"]) for r in long["rows"]}):
            rows = sorted(
                (r for r in long["rows"] if (r["method"], r["causal"]) == key), key=lambda r: r["n"]
            )
            exponent = LONG_EXPONENT.get(key[0], 1)
            out.append(
                (
                    f"long:{key[0]}:{'causal' if key[1] else 'noncausal'}",
                    [r["n"] for r in rows],
                    [time_of(r) for r in rows],
                    exponent + MARGIN,
                    None,
                )
            )
    cost = load_result("cost", "cpu")
    if cost is not None:
        for sweep in ("n", "d"):  # a layer is 24nd² + 4n²d: at most quadratic in n and in d
            rows = sorted((r for r in cost["rows"] if r["sweep"] == sweep), key=lambda r: r[sweep])
            out.append(
                (
                    f"cost:{sweep}",
                    [r[sweep] for r in rows],
                    [time_of(r) for r in rows],
                    2 + MARGIN,
                    None,
                )
            )
    ew = load_result("elementwise", "cpu")
    if ew is not None:
        train = [r for r in ew["rows"] if r["part"] == "train"]
        for form in sorted({r["form"] for r in train}):
            rows = sorted((r for r in train if r["form"] == form), key=lambda r: r["n"])
            exponent = 2 if form == "softmax" else 1
            out.append(
                (
                    f"elementwise:train:{form}",
                    [r["n"] for r in rows],
                    [time_of(r) for r in rows],
                    exponent + MARGIN,
                    None,
                )
            )
        decode = [r for r in ew["rows"] if r["part"] == "decode"]
        for form in sorted({r["form"] for r in decode}):
            rows = sorted((r for r in decode if r["form"] == form), key=lambda r: r["context"])
            fixed_state = (
                len({r["state_bytes"] for r in rows}) == 1
            )  # EA: flat; a KV cache: linear in the context
            out.append(
                (
                    f"elementwise:decode:{form}",
                    [r["context"] for r in rows],
                    [time_of(r) for r in rows],
                    0.15 if fixed_state else 1 + MARGIN,
                    -0.15 if fixed_state else None,
                )
            )
    gen = load_result("generative", "cpu")
    if gen is not None:
        cost_rows = [r for r in gen["rows"] if r["part"] == "cost"]
        for mixer in sorted({r["mixer"] for r in cost_rows}):
            rows = sorted((r for r in cost_rows if r["mixer"] == mixer), key=lambda r: r["n"])
            exponent = 2 if mixer == "dense" else 1
            out.append(
                (
                    f"generative:{mixer}",
                    [r["n"] for r in rows],
                    [time_of(r) for r in rows],
                    exponent + MARGIN,
                    None,
                )
            )
    return out


CURVES = _curves()


def _param(curve):
    marks = (
        [pytest.mark.xfail(strict=False, reason="awaiting quiet re-measurement")]
        if curve[0] in AWAITING
        else []
    )
    return pytest.param(*curve, id=curve[0], marks=marks)


def test_every_suite_with_timings_is_covered():
    suites = {c[0].split(":")[0] for c in CURVES}
    assert suites == {"long", "cost", "elementwise", "generative"}
    assert all(len(c[1]) >= 3 for c in CURVES), [c[0] for c in CURVES if len(c[1]) < 3]


@pytest.mark.parametrize("name, ns, times, max_slope, min_slope", [_param(c) for c in CURVES])
def test_stored_curve_is_plausible(name, ns, times, max_slope, min_slope):
    ns, times = np.asarray(ns, float), np.asarray(times, float)
    assert np.all(np.diff(ns) > 0) and np.all(times > 0)
    if min_slope is None:  # time must not fall as n grows, beyond noise
        worst = min(b / a for a, b in zip(times, times[1:]))
        assert worst >= 1 - DROP, f"{name}: time falls by {1 - worst:.0%} between consecutive n"
    local = np.diff(np.log(times)) / np.diff(np.log(ns))
    i = int(np.argmax(local))
    cliff = (
        local[i] <= max_slope + CLIFF and np.all(local[i + 1 :] <= max_slope) and i + 1 < len(local)
    )
    assert local[i] <= max_slope + JUMP or cliff, (
        f"{name}: jump from n = {ns[i]:.0f} to {ns[i + 1]:.0f} (local slope {local[i]:.2f}, "
        f"allowed {max_slope + JUMP}, "
        f"or {max_slope + CLIFF} for a cache cliff after which the curve returns to slope "
        f"{max_slope})"
    )
    # the cost model's exponent holds over the whole range, or on each side of an accepted cache
    # cliff
    parts = [slice(0, i + 1), slice(i + 1, None)] if local[i] > max_slope + JUMP else [slice(None)]
    for part in parts:
        if len(ns[part]) < 2:
            continue
        fit = fit_loglog(ns[part], times[part])
        span = f"n = {ns[part][0]:.0f}..{ns[part][-1]:.0f}"
        assert fit.slope <= max_slope, (
            f"{name}: fitted slope {fit.slope:.2f} over {span} above {max_slope}"
        )
    fit, span = fit_loglog(ns, times), f"n = {ns[0]:.0f}..{ns[-1]:.0f}"
    if min_slope is not None:  # a fixed state: flat per token
        assert fit.slope >= min_slope and times.max() <= 1.5 * times.min(), (
            f"{name}: not flat over {span}"
        )


def test_the_check_rejects_a_non_physical_jump():
    """The plausibility test itself: the jump reported in issue 14 (1.6 ms at n = 256, 44 ms at 512)
    fails it."""
    ns, times = [256, 512, 1024, 2048], [1.6e-3, 44e-3, 105e-3, 230e-3]
    with pytest.raises(AssertionError, match="jump from n = 256 to 512"):
        test_stored_curve_is_plausible("synthetic", ns, times, 2 + MARGIN, None)
    with pytest.raises(AssertionError, match="fitted slope"):
        test_stored_curve_is_plausible(
            "synthetic", ns, [1e-9 * n**2.8 for n in ns], 2 + MARGIN, None
        )
    with pytest.raises(AssertionError, match="time falls"):
        test_stored_curve_is_plausible("synthetic", ns, [1e-3, 2e-3, 1e-3, 4e-3], 2 + MARGIN, None)
    test_stored_curve_is_plausible("synthetic", ns, [1e-9 * n**2 for n in ns], 2 + MARGIN, None)
    # a cache cliff (x8.4 for one doubling, as dense attention's scores leaving the L3) then slope
    # 2: accepted
    cliff = [1e-3, 4e-3, 16e-3, 134e-3, 536e-3, 2144e-3]
    test_stored_curve_is_plausible(
        "synthetic", [2**i for i in range(8, 14)], cliff, 2 + MARGIN, None
    )
    # the same step as the last one, or followed by another steep step: rejected
    with pytest.raises(AssertionError, match="cache cliff"):
        test_stored_curve_is_plausible(
            "synthetic", ns, [1e-3, 4e-3, 16e-3, 134e-3], 2 + MARGIN, None
        )
    with pytest.raises(AssertionError, match="cache cliff"):
        test_stored_curve_is_plausible(
            "synthetic", ns, [1e-3, 8.4e-3, 70e-3, 400e-3], 2 + MARGIN, None
        )
