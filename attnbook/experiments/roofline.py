"""The roofline, measured (chapter 4, Long sequences, section "The roofline, measured").

A kernel that performs C FLOPs while moving Q bytes to and from main memory (DRAM on a CPU, HBM
on a GPU) has arithmetic intensity I = C / Q and cannot run faster than min(peak, bandwidth · I)
FLOP/s: the roofline of Williams et al. (2009). This module measures the two roofs of the
reader's device (:func:`peak_matmul`, :func:`peak_bandwidth`), counts the FLOPs of each
attention method with ``FlopCounterMode`` (:func:`prefill_flops`, matrix products only, as
everywhere in the book) and models its bytes (:func:`prefill_bytes`, :func:`decode_bytes`).

The byte model is the *compulsory* traffic, what any implementation must move:

- **prefill** (a whole sequence of n tokens): read Q, K, V and write O once, 4·n·d_k numbers per
  head; the forms that materialise the n×n matrix (:data:`MATERIALISED`) also write the scores S,
  read them, write the probabilities P and read them, 4·n² more (``cost.standard_attention_io``).
  Tiles re-read from main memory, caches and spills are not counted: the bytes are a lower bound
  and the intensity an upper bound.
- **one decode step** (one new token after t of context): read the token's q, k, v and write o
  (4·d_k per head), plus the state. A KV cache is read whole (its t cached keys and values) and
  only the new key and value are written; a fixed-size state (linear, recurrent, element-wise) is
  read and written whole. The state's size is taken from the state tensors themselves.

Everything is per head times heads times batch, times the bytes of one number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnbook.checks import check_bool, check_positive_int, check_sizes, check_tensor
from attnbook.cost.io import standard_attention_io
from attnbook.measure import count_flops, time_fn

__all__ = [
    "MATERIALISED",
    "Roof",
    "Point",
    "peak_matmul",
    "peak_bandwidth",
    "roofline",
    "ridge_intensity",
    "prefill_flops",
    "prefill_bytes",
    "state_numbers",
    "decode_bytes",
    "kv_cache_read",
    "prefill_point",
    "decode_point",
    "stored_kernel_points",
]

#: methods whose torch form writes the whole n×n score and probability matrices to main memory
MATERIALISED = ("dense",)


@dataclass(frozen=True)
class Roof:
    """A measured roof: ``value`` (FLOP/s or bytes/s),
    the problem ``size`` and the fastest ``min_s``."""

    value: float
    size: int
    min_s: float


@dataclass(frozen=True)
class Point:
    """One measured kernel on the roofline: counted
    ``flops``, modelled ``bytes``, fastest time ``seconds``."""

    label: str
    phase: str
    flops: int
    bytes: int
    seconds: float

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes

    @property
    def achieved(self) -> float:
        """FLOP/s achieved: counted FLOPs over the fastest measured time."""
        return self.flops / self.seconds


def _dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def peak_matmul(device="cpu", size: int = 1024, dtype=torch.float32, repeats: int = 10) -> Roof:
    """Peak matrix-product FLOP/s: 2·size³ over the fastest
    of ``repeats`` synchronised (size×size)² products.

    Random inputs (never zeros), one warm-up call. Chapter 4, The roofline, measured.
    """
    size = check_positive_int("size", size)
    device, dtype = torch.device(device), _dtype(dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(size, size, device=device, dtype=dtype)
    t = time_fn(
        torch.matmul,
        a,
        b,
        out=out,
        warmup=1,
        repeats=check_positive_int("repeats", repeats),
        device=device,
    )
    return Roof(2 * size**3 / t.min_s, size, t.min_s)


def peak_bandwidth(device="cpu", nbytes: int = 2**28, repeats: int = 10) -> Roof:
    """Memory bandwidth in bytes/s: a copy of ``nbytes`` (read ``nbytes``, written ``nbytes``) over
    its fastest time.

    Counts 2·nbytes per copy, as the STREAM benchmark does (a CPU that reads a cache line before
    writing it moves a third ``nbytes`` that this does not credit). ``nbytes`` should exceed the
    last-level cache. Chapter 4, The roofline, measured.
    """
    nbytes = check_positive_int("nbytes", nbytes)
    if nbytes % 4:
        raise ValueError(f"nbytes must be a multiple of 4 (float32 numbers), got {nbytes}")
    device = torch.device(device)
    src = torch.randn(nbytes // 4, generator=torch.Generator().manual_seed(0)).to(device)
    dst = torch.empty_like(src)
    t = time_fn(
        dst.copy_, src, warmup=1, repeats=check_positive_int("repeats", repeats), device=device
    )
    return Roof(2 * nbytes / t.min_s, nbytes, t.min_s)


def _positive(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not np.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def roofline(intensity, peak: float, bandwidth: float) -> np.ndarray:
    """The attainable FLOP/s min(peak, bandwidth ·
    intensity) at each ``intensity`` (FLOPs per byte, > 0)."""
    peak, bandwidth = _positive("peak", peak), _positive("bandwidth", bandwidth)
    x = np.asarray(intensity, dtype=float)
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError("intensity must be positive and finite (FLOPs per byte)")
    return np.minimum(peak, bandwidth * x)


def ridge_intensity(peak: float, bandwidth: float) -> float:
    """The intensity peak / bandwidth where the two roofs meet: below it a kernel is
    memory-bound."""
    return _positive("peak", peak) / _positive("bandwidth", bandwidth)


def prefill_flops(method: str, q, k, v, causal: bool = False, **options) -> int:
    """Matrix-product FLOPs of ``attention(q, k, v, method, causal)`` counted by
    ``FlopCounterMode``.

    A fused kernel that the counter cannot see into (SDPA on a CPU, the Triton kernels) counts 0;
    for such a re-implementation of dense attention (``variant_of == "dense"``) this returns the
    count of dense attention on the same inputs, the same products. Element-wise attention does no
    matrix products and counts 0. Chapter 4, The roofline, measured.
    """
    from attnbook.registry import attention, method_info

    info = method_info(method)
    causal = check_bool("causal", causal)
    with torch.no_grad():
        flops = count_flops(attention, q, k, v, method=method, causal=causal, **options)
        if flops == 0 and info.variant_of == "dense":
            flops = count_flops(attention, q, k, v, method="dense", causal=causal)
    return int(flops)


def prefill_bytes(
    method: str, n: int, d_k: int, *, heads: int = 1, batch: int = 1, bytes_per_number: int = 4
) -> int:
    """Compulsory bytes of attention over a whole sequence: 4·n·d_k numbers per head (Q, K, V read,
    O written), plus 4·n² for the forms in :data:`MATERIALISED` (``cost.standard_attention_io``).
    Chapter 4, The roofline, measured."""
    from attnbook.registry import method_info

    method_info(method)
    n, d_k, heads, batch, b = check_sizes(
        n=n, d_k=d_k, heads=heads, batch=batch, bytes_per_number=bytes_per_number
    )
    if method in MATERIALISED:
        numbers = standard_attention_io(n, d_k, heads=heads, batch=batch)
    else:
        numbers = 4 * n * d_k * heads * batch
    return numbers * b


def state_numbers(state) -> tuple[int, int]:
    """(numbers read, numbers written) of the decoding
    ``state`` in one step, taken from its tensors.

    A KV cache (``mechanisms.dense.KVCache``, K and V: (B, H, t, d_k)) is read whole and grows by
    one key and one value: (2·B·H·t·d_k, 2·B·H·d_k). Any other state (a tuple of tensors of fixed
    size: linear, recurrent, element-wise; an integer position beside them is not counted) is read
    and written whole. Chapter 4, The roofline, measured.
    """
    from attnbook.mechanisms.dense import KVCache

    fields = list(state) if isinstance(state, tuple) else []
    tensors = [x for x in fields if isinstance(x, torch.Tensor)]
    # a state may carry an integer position beside its tensors (the delta rule's, GLA's)
    if not tensors or not all(isinstance(x, (torch.Tensor, int)) for x in fields):
        raise TypeError(
            f"state must be a decoding state (a tuple of tensors, e.g. KVCache), "
            f"got {type(state).__name__}"
        )
    if isinstance(state, KVCache):
        B, H, _, d = state.K.shape
        return state.K.numel() + state.V.numel(), B * H * (d + state.V.shape[-1])
    total = sum(x.numel() for x in tensors)
    return total, total


def decode_bytes(state, q_t: torch.Tensor) -> int:
    """Compulsory bytes of one decoding step: the state read and written (:func:`state_numbers`),
    plus the token's q, k, v read and o written, 4·d_k numbers per head. q_t: (B, H, d_k).
    Chapter 4, The roofline, measured."""
    check_tensor("q_t", q_t, ndim=3)
    read, written = state_numbers(state)
    return (read + written + 4 * q_t.numel()) * q_t.element_size()


def kv_cache_read(state, q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor):
    """Attention of q_t over a KV cache without appending to it, in three torch operations: what a
    decoding step must do at the least (a preallocated cache, written in place). -> (state, o_t).
    q_t: (B, H, d_k).
    k_t and v_t are ignored. Chapter 4, The roofline, measured."""
    check_tensor("q_t", q_t, ndim=3)
    weights = torch.softmax(
        (q_t[:, :, None] @ state.K.transpose(-1, -2)) * q_t.shape[-1] ** -0.5, dim=-1
    )
    return state, (weights @ state.V)[:, :, 0]


def prefill_point(
    method: str,
    q,
    k,
    v,
    causal: bool = False,
    *,
    repeats: int = 3,
    label: str | None = None,
    **options,
) -> Point:
    """Count, model and time ``attention(q, k, v, method, causal)``:
    a :class:`Point` of phase "prefill".

    q, k, v: (B, H, n, d_k). ``ValueError`` for a method with no counted matrix-product FLOPs.
    """
    from attnbook.registry import attention

    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, ndim=4)
    flops = prefill_flops(method, q, k, v, causal, **options)
    if flops == 0:
        raise ValueError(
            f"method {method!r} performs no matrix products that FlopCounterMode counts; "
            "it has no point on a matrix-product roofline"
        )
    B, H, n, d = q.shape
    nbytes = prefill_bytes(method, n, d, heads=H, batch=B, bytes_per_number=q.element_size())

    def call():
        with torch.no_grad():
            return attention(q, k, v, method=method, causal=causal, **options)

    t = time_fn(call, warmup=1, repeats=repeats, device=q.device)
    return Point(label or method, "prefill", flops, nbytes, t.min_s)


def decode_point(step, state, q_t, k_t, v_t, *, label: str, repeats: int = 20) -> Point:
    """Count, model and time one decoding step ``step(state, q_t, k_t, v_t)``: a :class:`Point` of
    phase "decode". q_t, k_t, v_t: (B, H, d_k). ``ValueError`` when the step counts no
    matrix-product FLOPs."""
    for name, x in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        check_tensor(name, x, ndim=3)
    with torch.no_grad():
        flops = count_flops(step, state, q_t, k_t, v_t)
        if flops == 0:
            raise ValueError(
                f"{label}: the step performs no matrix products that FlopCounterMode counts"
            )
        t = time_fn(step, state, q_t, k_t, v_t, warmup=2, repeats=repeats, device=q_t.device)
    return Point(label, "decode", int(flops), decode_bytes(state, q_t), t.min_s)


def stored_kernel_points(
    result: dict, *, causal: bool = False, direction: str = "forward"
) -> tuple[dict, list[Point]]:
    """The roofs and points of a stored ``kernels`` suite result
    (``attnbook/results/kernels-cuda.json``).

    Returns ({dtype: (peak FLOP/s, bandwidth bytes/s)}, points): one :class:`Point` per stored
    kernel row of that mask and direction, its FLOPs the suite's (FlashAttention-2 convention), its
    bytes the compulsory prefill traffic of a fused form (Q, K, V read, O written once). Chapter 4,
    The roofline, measured.
    """
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        raise ValueError("result must be a stored suite result: a dict with a 'rows' list")
    if result.get("suite") != "kernels":
        raise ValueError(f"result must be of the suite 'kernels', got {result.get('suite')!r}")
    roofs = {
        r["dtype"]: (r["peak_flops"], r["bandwidth"]) for r in result["rows"] if r["kind"] == "roof"
    }
    points = []
    for r in result["rows"]:
        if (
            r["kind"] != "kernel"
            or r["causal"] != check_bool("causal", causal)
            or r["direction"] != direction
        ):
            continue
        number = torch.finfo(getattr(torch, r["dtype"])).bits // 8
        nbytes = 4 * r["n"] * r["head_dim"] * r["heads"] * r["batch"] * number
        points.append(
            Point(
                f"{r['form']} D={r['head_dim']} {r['dtype']} n={r['n']}",
                "prefill",
                r["flops"],
                nbytes,
                r["min_s"],
            )
        )
    return roofs, points
