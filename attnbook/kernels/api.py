"""Public entry points of the Triton kernels (chapter 4, Long sequences).

Importing this module does not import Triton: the checks run first, then the kernel module is
imported on the first call. Kernels run on CUDA tensors, or on CPU tensors in Triton's interpreter
when ``TRITON_INTERPRET=1`` is in the environment before Triton is first imported in the process and
stays there: Triton reads the variable when ``@triton.jit`` decorates a function, and it decorates
its own library (``tl.zeros``, ...) on import, so setting it later is too late; it reads it again
on the first launch.
Anything else raises a ``RuntimeError`` that names the cause.
"""

from __future__ import annotations

import contextlib
import importlib

import torch

from attnbook.checks import check_bool, check_positive_float, check_tensor

__all__ = ["HEAD_DIMS", "FEATURE_MAPS", "flash_attention_triton", "linear_attention_triton"]

HEAD_DIMS = (32, 64, 128)
FEATURE_MAPS = ("elu1", "identity")
_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_qkv(q, k, v) -> None:
    """q, k, v: floating tensors of one shape (B, H,
    N, D), D in HEAD_DIMS, one dtype, one device."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, ndim=4)
    for name, x in (("k", k), ("v", v)):
        if x.shape != q.shape:
            raise ValueError(
                f"{name} must have the shape of q (B, H, N, D) = {tuple(q.shape)}, got "
                f"{tuple(x.shape)}"
            )
        if x.dtype != q.dtype:
            raise TypeError(f"{name} must have the dtype of q ({q.dtype}), got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} must be on the device of q ({q.device}), got {x.device}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(
            f"q must have head dimension D in {HEAD_DIMS} (a power of two the kernels are "
            f"compiled for), got D = {q.shape[-1]}"
        )


def _load(module: str, device: torch.device, dtype: torch.dtype):
    """Import attnbook.kernels.<module>, or raise a
    RuntimeError that says why these tensors cannot run."""
    name = f"{__package__}.{module}"
    try:
        import triton
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError as exc:
        raise RuntimeError(
            "the Triton kernels need Triton, which is not installed: "
            "pip install triton==3.9.0 (Linux)"
        ) from exc
    # Triton decorates its own library (tl.zeros, ...) when it is first imported: that fixes the
    # mode.
    interpreted = isinstance(triton.language.zeros, InterpretedFunction)
    if device.type == "cpu" and not interpreted:
        if triton.knobs.runtime.interpret:
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set after Triton was imported in this process, so Triton "
                "is set up to compile for CUDA; set it before Triton is first imported (e.g. in "
                "the shell)"
            )
        why = "CUDA is not available here, and " if not torch.cuda.is_available() else ""
        raise RuntimeError(
            f"{why}CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 in the "
            "environment before Triton is first imported (e.g. in the shell), or pass CUDA tensors"
        )
    if interpreted and not triton.knobs.runtime.interpret:
        raise RuntimeError(
            "Triton was imported with TRITON_INTERPRET=1, which has since been unset; it must stay "
            "set while the kernels run (Triton reads it again when it launches a kernel)"
        )
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(
            f"the Triton kernels run on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1; "
            f"got tensors on {device}"
        )
    kernels = importlib.import_module(name)
    if kernels.INTERPRETED != interpreted:
        raise RuntimeError(
            f"{name} was imported {'with' if kernels.INTERPRETED else 'without'} "
            "TRITON_INTERPRET=1 "
            f"but Triton {'with' if interpreted else 'without'} it; set it (or not) once, before "
            "Triton is first imported"
        )
    allowed = (torch.float32,) if interpreted else _GPU_DTYPES
    if dtype not in allowed:
        where = "in Triton's interpreter" if interpreted else "on CUDA"
        raise TypeError(
            f"q, k, v must be {' or '.join(str(d) for d in allowed)} {where}, got {dtype}"
        )
    return kernels


def _on(device: torch.device):
    """Kernels launch on the current CUDA device: make
    it the inputs' one (autograd does so for backward)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def flash_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(scale·QKᵀ)V by the FlashAttention-2 Triton kernels, differentiable in q, k and v.

    q, k, v: (B, H, N, D) with D in {32, 64, 128}, any N >= 1; float16/bfloat16/float32 on CUDA,
    float32 on CPU under TRITON_INTERPRET=1. ``causal``: query i sees keys j <= i. ``scale``:
    default 1/√D. Returns (B, H, N, D) in the input dtype. Chapter 4, Long sequences,
    FlashAttention section; the kernels are in :mod:`attnbook.kernels.flash_triton`.
    """
    _check_qkv(q, k, v)
    causal = check_bool("causal", causal)
    scale = q.shape[-1] ** -0.5 if scale is None else check_positive_float("scale", scale)
    kernels = _load("flash_triton", q.device, q.dtype)
    with _on(q.device):
        return kernels.FlashAttention.apply(
            q.contiguous(), k.contiguous(), v.contiguous(), causal, scale
        )


def linear_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    feature_map: str = "elu1",
) -> torch.Tensor:
    """Causal linear attention o_i = φ(q_i)·S_i / φ(q_i)·z_i
    by a chunked Triton recurrence, differentiable.

    S_i = Σ_{j<=i} φ(k_j) v_jᵀ, z_i = Σ_{j<=i} φ(k_j). ``feature_map``: "elu1" (φ = elu + 1, linear
    attention of Katharopoulos et al. 2020) or "identity" (φ(x) = x, for features computed outside,
    which must keep φ(q_i)·z_i away from zero, e.g. positive ones). q, k, v: (B, H, N, D), D in {32,
    64, 128}; dtypes as :func:`flash_attention_triton`. Returns (B, H, N, D) in the input dtype.
    Chapter 4, Long sequences; the kernels are in :mod:`attnbook.kernels.linear_triton`.
    """
    _check_qkv(q, k, v)
    if not check_bool("causal", causal):
        raise ValueError("linear_attention_triton is the causal form only: pass causal=True")
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    kernels = _load("linear_triton", q.device, q.dtype)
    with _on(q.device):
        return kernels.LinearAttention.apply(
            q.contiguous(), k.contiguous(), v.contiguous(), feature_map == "elu1"
        )
