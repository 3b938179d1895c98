"""Input validation shared by every mechanism.

Each helper raises ``TypeError`` (wrong kind of object or dtype) or
``ValueError`` (wrong shape, size or value) with a message that names the
argument and says what was expected. :func:`rel_error` and :func:`checked` compare
a result with its reference (shapes first); benchmarks refuse to time a form that
fails :func:`checked`.
"""

from __future__ import annotations

import contextvars
import functools
import math
import numbers

import numpy as np
import torch

__all__ = [
    "exact_ints",
    "check_sizes",
    "check_bool",
    "check_array",
    "check_tensor",
    "is_finite",
    "inputs_validated",
    "check_qkv",
    "check_step_inputs",
    "check_same_length",
    "check_positive_int",
    "check_nonnegative_int",
    "check_positive_float",
    "check_mask",
    "rel_error",
    "CorrectnessError",
    "checked",
]

_FLOAT_DTYPES = frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64))


def exact_ints(fn):
    """Decorator for formulas: integer arguments (NumPy's
    included) become Python ints, which never overflow.

    ``np.int64(10**9) ** 2 * 10**6`` wraps around silently; the same product of Python ints is
    exact.
    """

    def convert(x):
        return (
            int(x) if isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)) else x
        )

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*map(convert, args), **{k: convert(v) for k, v in kwargs.items()})

    return wrapper


def check_sizes(**values) -> list[int]:
    """Check that each keyword value is an integer >= 1
    (a size); return them as Python ints, in order."""
    return [check_positive_int(name, value) for name, value in values.items()]


def check_bool(name: str, value) -> bool:
    """Return ``value`` as a Python bool if it is
    ``True``/``False`` (NumPy's ``bool_`` included), else raise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")


def check_positive_int(name: str, value) -> int:
    """Return ``value`` as int if it is an integer >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def check_nonnegative_int(name: str, value) -> int:
    """Return ``value`` as int if it is an integer >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value}")
    return int(value)


def check_positive_float(name: str, value) -> float:
    """Return ``value`` as float if it is a finite real number > 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_array(name: str, x, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Check a NumPy float array: right ndim, non-empty, finite. Returns it as float64."""
    if isinstance(x, torch.Tensor) or not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if ndims is not None and arr.ndim not in ndims:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr.astype(np.float64, copy=False)


#: False while the registry runs a method on inputs it has already checked (see inputs_validated).
_SCAN_INPUTS = contextvars.ContextVar("attnbook_scan_inputs", default=True)


class inputs_validated:  # noqa: N801 (used as a function: ``with inputs_validated():``)
    """Inside this block :func:`check_tensor` skips its scan for NaN/inf values.

    ``attnbook.attention`` and ``attnbook.decode`` check shapes, dtypes and devices once, run the
    method inside this block, then check the output: the inputs are scanned only when the output is
    not finite, so a call through the API reads no input twice and waits on no decoding step.
    (A class rather than a generator: entering and leaving cost well under a microsecond.)
    """

    __slots__ = ("_token",)

    def __enter__(self):
        self._token = _SCAN_INPUTS.set(False)

    def __exit__(self, *exc):
        _SCAN_INPUTS.reset(self._token)


def is_finite(x: torch.Tensor) -> bool:
    """True when ``x`` holds no NaN or inf: one sum (a NaN or inf makes it non-finite), no copy of
    ``x``, one sync; only a sum that overflowed from finite values needs a min/max pass to tell."""
    x = x.detach()
    if math.isfinite(x.sum().item()):
        return True
    lo, hi = torch.aminmax(x)
    return bool((torch.isfinite(lo) & torch.isfinite(hi)).item())


def check_tensor(name: str, x, ndim: int | None = None, *, finite: bool = True) -> torch.Tensor:
    """Check a floating-point torch tensor with data: right ndim, non-empty, finite.

    ``finite=False`` (or inside :func:`inputs_validated`) skips the scan for NaN/inf values.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
            f"got {x.dtype}"
        )
    if x.is_meta:
        raise ValueError(
            f"{name} is on the meta device, which holds no values: pass a tensor with data "
            "(cpu, cuda or mps)"
        )
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and _SCAN_INPUTS.get() and not is_finite(x):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_qkv(q, k, v, *, finite: bool = True) -> tuple[int, int, int, int, int]:
    """Validate attention inputs q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv).

    Returns (B, H, N, M, D). ``finite=False`` skips the scan for NaN/inf values.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, ndim=4, finite=finite)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}"
        )
    B, H, N, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        raise ValueError(
            "q, k, v must share batch and head sizes (B, H), got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if k.shape[3] != D:
        raise ValueError(
            f"k must have head dimension D={D} like q, got k of shape {tuple(k.shape)}"
        )
    if v.shape[2] != k.shape[2]:
        raise ValueError(
            f"v must have as many positions as k ({k.shape[2]}), got v of shape {tuple(v.shape)}"
        )
    return B, H, N, k.shape[2], D


def check_same_length(q, k, needs: str = "causal=True") -> None:
    """Refuse a q: (..., N, D) and k: (..., M, D) with N != M (arrays or tensors).

    ``needs`` names what pairs query i with key i (the causal mask, a recurrence, decoding); the
    one check of query and key counts every mechanism and the registry use.
    """
    n, m = q.shape[-2], k.shape[-2]
    if n != m:
        raise ValueError(f"{needs} needs as many queries as keys, got N={n} queries and M={m} keys")


def check_step_inputs(q_t, k_t, v_t) -> tuple[int, int, int]:
    """Check one decoding step's q_t, k_t: (B, H, D) and v_t: (B, H, Dv); return (B, H, D)."""
    for name, x in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        check_tensor(name, x, ndim=3)
    if not (q_t.device == k_t.device == v_t.device):
        raise ValueError(
            f"q_t, k_t and v_t must be on one device, got {q_t.device}, {k_t.device}, {v_t.device}"
        )
    if q_t.shape != k_t.shape or v_t.shape[:2] != k_t.shape[:2]:
        raise ValueError(
            f"q_t, k_t must be (B, H, D) and v_t (B, H, Dv), got {tuple(q_t.shape)}, "
            f"{tuple(k_t.shape)}, {tuple(v_t.shape)}"
        )
    return tuple(k_t.shape)


def check_mask(name: str, mask, n_query: int, n_key: int):
    """Check a boolean mask broadcastable to (..., n_query, n_key); True = may attend."""
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        ok_dtype = mask.dtype == torch.bool
    elif isinstance(mask, np.ndarray):
        ok_dtype = mask.dtype == np.bool_
    else:
        raise TypeError(f"{name} must be a boolean array or tensor, got {type(mask).__name__}")
    if not ok_dtype:
        raise TypeError(f"{name} must have a boolean dtype (True = may attend), got {mask.dtype}")
    if mask.ndim < 2 or tuple(mask.shape[-2:]) != (n_query, n_key):
        raise ValueError(
            f"{name} must end in shape ({n_query}, {n_key}) (queries, keys), got "
            f"{tuple(mask.shape)}"
        )
    return mask


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def rel_error(actual, expected) -> float:
    """max|actual − expected| / max|expected| for arrays
    or tensors of the SAME shape (no broadcasting).

    Raises ``ValueError`` naming both shapes when they differ: a shape bug must not hide behind
    broadcasting. Returns inf when ``actual`` holds NaN or inf and ``expected`` does not.
    """
    a, e = _as_float64(actual), _as_float64(expected)
    if a.shape != e.shape:
        raise ValueError(f"actual has shape {a.shape} but expected has shape {e.shape}")
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)) and np.all(np.isfinite(e)):
        return float("inf")
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-300))


class CorrectnessError(RuntimeError):
    """An implementation disagreed with its reference, so it is not timed."""


def checked(name: str, fast, reference, rtol: float = 1e-4, atol: float = 1e-6) -> float:
    """Compare ``fast`` with ``reference`` (arrays or
    tensors); raise :class:`CorrectnessError` if they differ.

    Shapes first, then finiteness, then ``allclose(rtol, atol)``. Returns :func:`rel_error`.
    Benchmarks call this before timing an implementation, so a wrong form never gets a speed
    reported.
    """
    f, r = _as_float64(fast), _as_float64(reference)
    if f.shape != r.shape:
        raise CorrectnessError(f"{name}: shape {f.shape} differs from the reference's {r.shape}")
    if not np.all(np.isfinite(f)):
        raise CorrectnessError(f"{name}: output contains NaN or infinite values")
    err = rel_error(f, r)
    if not np.allclose(f, r, rtol=rtol, atol=atol):
        raise CorrectnessError(
            f"{name}: relative error {err:.2e} against the reference exceeds rtol={rtol}, "
            f"atol={atol}"
        )
    return err
