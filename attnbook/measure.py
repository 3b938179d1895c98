"""Measuring time, memory and scaling (chapter 2, The cost of a Transformer).

The book's measurement policy (also stated on the page "Running the book"):

- **Timing.** :func:`time_fn` warms up, synchronises the device (CUDA events on a GPU),
  repeats, and reports the minimum, a low quantile (10 %), the median and the quartiles.
  Other work on a shared machine only ever adds time, so the minimum (or the 10 % quantile)
  is the headline of a live timing; the median is kept for the spread. Live timings are
  taken at sizes where one call takes at least a few milliseconds, never on all-zero inputs.
- **Claims.** A claim drawn from timings (a slope, "flat per token", "X is faster than Y
  from n = ...") is asserted on the stored run (``attnbook/results/*.json``, measured on a
  quiet machine and labelled with device, threads, torch, date, commit and load average)
  and, where possible, on counts: FLOPs (:func:`count_flops`), bytes
  (:func:`saved_tensor_bytes`, :func:`peak_memory_bytes`) or operator calls
  (:func:`count_ops`). A live timing is the reader's own illustration: at most it is asserted
  with a margin that a loaded machine cannot break (times positive, or a factor of several
  where the work differs by orders of magnitude).
- **Exponents.** Scaling exponents are fitted on log-log axes (:func:`fit_loglog`), and every
  slope shown says over which range of sizes it was fitted.

:func:`measure_method` applies the policy to one registered attention method at one length: the
row that suite "long" and the chooser's live run share (chapters 4 and 6).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from attnbook.checks import check_nonnegative_int, check_positive_int, checked, rel_error

__all__ = [
    "Timing",
    "LogLogFit",
    "sync",
    "time_fn",
    "peak_memory_bytes",
    "saved_tensor_bytes",
    "describe_device",
    "environment",
    "fit_loglog",
    "count_flops",
    "native_stderr_silenced",
    "count_ops",
    "METHOD_SHAPE",
    "measure_method",
]


@dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of repeated calls, in seconds.

    ``min_s`` (or the low quantile ``q10_s``) is the headline of a live timing: contention on a
    shared machine only ever adds time. ``median_s`` and the quartiles show the spread.
    """

    median_s: float
    q25_s: float
    q75_s: float
    min_s: float
    repeats: int
    device: str
    q10_s: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LogLogFit:
    """y ≈ exp(intercept) · x**slope, fitted by least squares on log-log axes."""

    slope: float
    intercept: float
    r2: float

    def predict(self, x):
        return np.exp(self.intercept) * np.asarray(x, dtype=float) ** self.slope


def _as_device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def sync(device=None) -> None:
    """Wait until queued work on ``device`` has finished (no-op on CPU)."""
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_fn(fn, *args, warmup: int = 2, repeats: int = 7, device=None, **kwargs) -> Timing:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    On CUDA each call is bracketed by CUDA events; elsewhere by ``time.perf_counter``
    after synchronising. Returns a :class:`Timing`: the minimum and the 10 % quantile (the
    headline figures of the book's measurement policy), the median and the quartiles.
    """
    check_nonnegative_int("warmup", warmup)
    check_positive_int("repeats", repeats)
    device = _as_device(device)
    for _ in range(warmup):
        fn(*args, **kwargs)
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args, **kwargs)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(*args, **kwargs)
            sync(device)
            times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    return Timing(
        float(np.median(t)),
        float(np.quantile(t, 0.25)),
        float(np.quantile(t, 0.75)),
        float(t.min()),
        repeats,
        describe_device(device),
        float(np.quantile(t, 0.1)),
    )


def peak_memory_bytes(fn, *args, device=None, **kwargs) -> int:
    """Peak bytes allocated while ``fn(*args, **kwargs)`` runs, above what was allocated before.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of the
    allocations and frees that ``torch.profiler`` records (torch tensors only).
    """
    device = _as_device(device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn(*args, **kwargs)
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if device.type != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda' for memory measurement, got {device}")
    return _cpu_peak_bytes(fn, *args, **kwargs)


@contextlib.contextmanager
def native_stderr_silenced():
    """Send what C++ code writes to file descriptor 2 to /dev/null for the duration of the block.

    PyTorch's profiler prints start/stop lines and allocator warnings there, below Python, where no
    logging setting reaches them. Python exceptions still propagate normally.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn, *args, **kwargs) -> int:
    """Peak of the running sum of CPU tensor allocations/frees recorded by the profiler."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with (
        native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        fn(*args, **kwargs)
    stack, allocations = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.typed[0] == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.typed[1].alloc_size))
    current = peak = 0
    for _, size in sorted(allocations):
        current += size
        peak = max(peak, current)
    return int(peak)


def saved_tensor_bytes(fn, *args, **kwargs) -> int:
    """Bytes of every tensor autograd saves for backward while ``fn(*args, **kwargs)`` runs.

    Uses ``torch.autograd.graph.saved_tensors_hooks``. Each storage is counted once and
    whole (a saved view keeps its whole storage alive), and only if the graph still holds
    it when ``fn`` returns: some ops save a tensor in an intermediate node that is dropped
    before the forward pass ends. When ``fn`` is an ``nn.Module``, its own parameters are
    not counted: they are weights, not activations.

    Chapter 3.
    """
    params = fn.parameters() if isinstance(fn, torch.nn.Module) else ()
    skip = {p.untyped_storage().data_ptr() for p in params}
    packed = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            packed.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    alive = (ref() for ref in packed)
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in alive if t is not None
    }
    del out
    return sum(storages.values())


def describe_device(device=None) -> str:
    """A one-line description of ``device`` (default: the book's default device)."""
    if device is None:
        from attnbook.config import DEVICE

        device = DEVICE
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"CPU {cpu}, {threads} thread{'' if threads == 1 else 's'}"


def _git_commit() -> str:
    """Short hash of HEAD, with ``+dirty`` when tracked files differ from it (the code measured is
    then not exactly that commit); "unknown" outside a git checkout. ``$ATTNBOOK_COMMIT``, when
    set, is taken instead: the commit that a copy of the checkout sent to another machine was made
    from (a copy's own .git may be missing or older than its files)."""
    copied = os.environ.get("ATTNBOOK_COMMIT", "").strip()
    if copied:
        return copied
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() if out.returncode == 0 else ""
    if not commit:
        return "unknown"
    return commit + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")


def environment(device=None) -> dict:
    """Labels for a stored result: device, torch version, date (UTC) and git commit."""
    dev = torch.device(device) if device is not None else None
    return {
        "device": describe_device(dev),
        "device_kind": (dev.type if dev is not None else "cpu"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
    }


def fit_loglog(x, y) -> LogLogFit:
    """Least-squares line through (log x, log y): the scaling exponent is its slope."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError(f"need at least 2 points to fit a slope, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite to fit on log-log axes (found NaN or inf)")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("x and y must be positive to fit on log-log axes")
    if np.all(x == x[0]):
        raise ValueError(f"x must take at least two different values to fit a slope, got {x}")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return LogLogFit(float(slope), float(intercept), r2)


def count_flops(fn, *args, by_operator: bool = False, **kwargs):
    """FLOPs that torch's ``FlopCounterMode`` records while ``fn(*args, **kwargs)`` runs.

    It counts matrix products (and convolutions) only, 2 FLOPs per multiply-add. With
    ``by_operator=True`` returns ``(total, {operator name: FLOPs})``.

    Chapter 2.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    total = int(counter.get_total_flops())
    if not by_operator:
        return total
    per_op = {
        str(op).split(".")[-1] if "." in str(op) else str(op): int(n)
        for op, n in counter.get_flop_counts().get("Global", {}).items()
    }
    return total, per_op


def count_ops(fn, *args, **kwargs) -> int:
    """Number of ATen operator calls that ``fn(*args, **kwargs)`` dispatches (chapters 1 and 8).

    A count of the steps a computation runs one after another on the host: a recurrence over
    ``n`` tokens makes ``O(n)`` calls, one batched matrix product makes ``O(1)``. Uses the same
    dispatch hook as ``FlopCounterMode``; it does not depend on how busy the machine is.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    with _Counter() as counter:
        fn(*args, **kwargs)
    return counter.calls


#: The shape every attention method is measured at: suites "long"/"long-h4" and the chooser
#: (chapter 4, 6); ``SAMPLE_ROWS`` query rows are checked against float64 attention first.
METHOD_SHAPE = {"batch": 1, "heads": 2, "head_dim": 64}
SAMPLE_ROWS = 48


def _inputs(n: int, device, seed: int = 0, heads: int = METHOD_SHAPE["heads"]):
    """q, k, v: (B, H, n, D) standard normal, of :data:`METHOD_SHAPE` with ``heads`` heads."""
    g = torch.Generator().manual_seed(seed + n)
    B, H, D = METHOD_SHAPE["batch"], heads, METHOD_SHAPE["head_dim"]
    return [torch.randn(B, H, n, D, generator=g).to(device) for _ in range(3)]


def _row_reference(q, k, v, rows: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Float64 attention for the query ``rows`` only; ``allowed``: (len(rows), N) bool."""
    from attnbook import reference

    qn, kn, vn = (x.detach().double().cpu().numpy() for x in (q, k, v))
    return reference.scaled_dot_product_attention(qn[:, :, rows], kn, vn, mask=allowed)[0]


def measure_method(
    method: str, n: int, causal: bool, device, repeats: int = 3, heads: int = METHOD_SHAPE["heads"]
) -> dict:
    """One row of suite "long" (chapter 4) and of the chooser's live run (chapter 6): check
    ``method`` at length n on :data:`METHOD_SHAPE` inputs, then time it and measure its peak memory.

    Raises :class:`~attnbook.checks.CorrectnessError` (and times nothing) when an exact method, or a
    sparse pattern against its own masked reference, disagrees beyond float32 rounding.
    """
    from attnbook.registry import attention, method_info

    info = method_info(method)
    q, k, v = _inputs(n, device, heads=heads)
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
        pattern, _ = info.pattern(n, causal)
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
        "batch": METHOD_SHAPE["batch"],
        "heads": heads,
        "head_dim": METHOD_SHAPE["head_dim"],
        "causal": causal,
        "min_s": t.min_s,
        "q10_s": t.q10_s,
        "median_s": t.median_s,
        "q25_s": t.q25_s,
        "q75_s": t.q75_s,
        "peak_bytes": None if peak is None else int(peak),
        "rel_error": error,
    }
