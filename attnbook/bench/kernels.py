"""Suite "kernels" (chapter 4): the book's Triton FlashAttention against SDPA's flash backend, in
TFLOP/s, on CUDA.

For n = 1024 … 16384, D = 64 and 128, causal and not, float16 and bfloat16, it times the forward
pass and the forward plus backward pass of :func:`attnbook.kernels.api.flash_attention_triton`
and of ``scaled_dot_product_attention`` restricted to ``SDPBackend.FLASH_ATTENTION``. The batch
holds 16384 tokens and the heads a width of 2048 (batch = 16384 / n, heads = 2048 / D), the shapes
of the FlashAttention-2 paper's benchmark, and FLOPs follow its convention (:func:`kernel_flops`),
so the TFLOP/s compare with published figures. Before any timing, each form's output on a sample of
query rows is checked against the NumPy float64 reference (:func:`attnbook.checks.checked`), and at
the first n of each (D, causal, dtype) both forms' gradients against float64 autograd. The suite
also records the device's roofs in that dtype (:mod:`attnbook.experiments.roofline`), so the
roofline section can draw the stored points under them.

**On a CPU the suite refuses** with a ``ValueError``: Triton's interpreter runs the kernels exactly
but thousands of times slower than compiled code, so a timing there says nothing about the kernel;
they are tested there, on small odd shapes, by ``tests/test_kernels.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from attnbook import reference
from attnbook.bench import sweep
from attnbook.checks import CorrectnessError, check_bool, check_sizes, checked
from attnbook.measure import time_fn

__all__ = ["TOKENS", "WIDTH", "sizes", "shape", "kernel_flops", "run", "ratios"]

TOKENS = 16384  # batch · n
WIDTH = 2048  # heads · D
SAMPLE_ROWS = 48
#: margin of the checks against float64, times max(1, |reference|) (as tests/test_kernels.py)
_ATOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def sizes(quick: bool) -> dict:
    """The grid: {'n': ..., 'head_dim': ..., 'causal': ...,
    'dtype': ...}; quick: n = 1024, 4096, float16 only."""
    return {
        "n": [1024, 4096] if quick else [1024, 2048, 4096, 8192, 16384],
        "head_dim": [64, 128],
        "causal": [False, True],
        "dtype": ["float16"] if quick else ["float16", "bfloat16"],
    }


def shape(n: int, head_dim: int) -> tuple[int, int, int, int]:
    """(batch, heads, n, D) with batch·n = TOKENS (at least one sequence) and heads·D = WIDTH."""
    n, head_dim = check_sizes(n=n, head_dim=head_dim)
    return max(1, TOKENS // n), max(1, WIDTH // head_dim), n, head_dim


def kernel_flops(
    n: int, head_dim: int, causal: bool, backward: bool, *, heads: int = 1, batch: int = 1
) -> int:
    """FLOPs of attention in the FlashAttention-2 paper's convention (Dao 2023), chapter 4.

    Forward: QKᵀ and PV, 4·n²·D per head, halved when causal (the pairs j <= i). Forward plus
    backward: 3.5 times the forward, since the backward pass does five n×n×D products (QKᵀ
    recomputed from the saved log-sum-exp, dV, dP, dQ, dK) against the forward's two.
    """
    n, head_dim, heads, batch = check_sizes(n=n, head_dim=head_dim, heads=heads, batch=batch)
    forward = 4 * n * n * head_dim * heads * batch // (2 if check_bool("causal", causal) else 1)
    return forward * 7 // 2 if check_bool("backward", backward) else forward


def _forms():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from attnbook.kernels.api import flash_attention_triton

    def sdpa_flash(q, k, v, causal):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return {
        "triton": lambda q, k, v, causal: flash_attention_triton(q, k, v, causal=causal),
        "sdpa_flash": sdpa_flash,
    }


def _check_row(form: str, what: str, q, causal: bool, check) -> dict:
    """Run ``check()`` (a :func:`checked` call returning the relative error) and record it:
    a form that fails is not timed for this configuration."""
    row = {"kind": "check", "form": form, "what": what, "n": q.shape[2], "head_dim": q.shape[3]}
    row.update(causal=causal, dtype=str(q.dtype).removeprefix("torch."))
    try:
        row.update(passed=True, rel_error=check(), message="")
    except CorrectnessError as err:
        row.update(passed=False, rel_error=None, message=str(err))
    return row


def _check_forward(forms, q, k, v, causal) -> list[dict]:
    """Each form's output on sampled rows of batch 0, heads 0-1, against the float64 reference."""
    n = q.shape[2]
    rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).astype(int))
    allowed = (
        np.arange(n)[None, :] <= rows[:, None] if causal else np.ones((rows.size, n), dtype=bool)
    )
    qn, kn, vn = (x[:1, :2].double().cpu().numpy() for x in (q, k, v))
    ref = reference.scaled_dot_product_attention(qn[:, :, rows], kn, vn, mask=allowed)[0]
    margin = _ATOL[q.dtype] * max(1.0, float(np.abs(ref).max()))
    checks = []
    for name, f in forms.items():
        with torch.no_grad():
            out = f(q, k, v, causal)[:1, :2, torch.as_tensor(rows, device=q.device)]
        label = f"{name} forward, n={n}, causal={causal}, {q.dtype}"
        checks.append(
            _check_row(
                name,
                "forward",
                q,
                causal,
                lambda: checked(label, out, ref, rtol=0, atol=2 * margin),
            )
        )
    return checks


def _check_backward(forms, q, k, v, causal) -> list[dict]:
    """Gradients of batch 0, heads 0-1: SDPA-flash's error against float64 autograd within four
    margins, Triton's at most twice SDPA-flash's plus a margin (rows: one per form and gradient)."""
    q, k, v = (x[:1, :2].detach().clone().requires_grad_() for x in (q, k, v))
    do = torch.randn_like(q)
    x64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    o64 = torch.nn.functional.scaled_dot_product_attention(*x64, is_causal=causal)
    exact = torch.autograd.grad(o64, x64, do.double())
    grads = {
        name: torch.autograd.grad(f(q, k, v, causal), (q, k, v), do) for name, f in forms.items()
    }
    checks = []
    for i, wrt in enumerate(("dq", "dk", "dv")):
        margin = _ATOL[q.dtype] * max(1.0, exact[i].abs().max().item())
        error = {name: (grads[name][i].double() - exact[i]).abs().max().item() for name in forms}
        atol = {"sdpa_flash": 4 * margin, "triton": 2 * error["sdpa_flash"] + margin}
        for name in forms:
            label = f"{name} {wrt}, n={q.shape[2]}, causal={causal}, {q.dtype}"
            row = _check_row(
                name,
                f"backward {wrt}",
                q,
                causal,
                lambda: checked(label, grads[name][i], exact[i], rtol=0, atol=atol[name]),
            )
            checks.append({**row, "max_abs_error": error[name], "allowed_abs_error": atol[name]})
    return checks


def _roof_rows(device, dtype_name: str) -> list[dict]:
    from attnbook.experiments.roofline import peak_bandwidth, peak_matmul

    peak = peak_matmul(device, 8192, dtype=getattr(torch, dtype_name), repeats=10)
    bw = peak_bandwidth(device, 2**30, repeats=10)
    return [
        {
            "kind": "roof",
            "dtype": dtype_name,
            "peak_flops": peak.value,
            "matmul_size": peak.size,
            "bandwidth": bw.value,
            "copy_bytes": bw.size,
        }
    ]


def _time_rows(forms, qkv, causal: bool, failed: set, errors: dict, repeats: int) -> list[dict]:
    """Each form's forward and forward+backward time on ``qkv`` (B, H, n, D), minus those whose
    check failed (``failed``: {(form, "forward" | "backward")})."""
    q, k, v = qkv
    B, H, n, d = q.shape
    do = torch.randn_like(q)
    qg, kg, vg = (x.detach().clone().requires_grad_() for x in qkv)
    rows = []
    for name, f in forms.items():

        def forward(f=f):
            with torch.no_grad():
                return f(q, k, v, causal)

        def both(f=f):
            return torch.autograd.grad(f(qg, kg, vg, causal), (qg, kg, vg), do)

        for direction, fn in (("forward", forward), ("forward+backward", both)):
            if (name, "forward") in failed or (
                direction != "forward" and (name, "backward") in failed
            ):
                continue  # a form that fails its check is not timed
            t = time_fn(fn, warmup=2, repeats=repeats, device=q.device)
            flops = kernel_flops(n, d, causal, direction != "forward", heads=H, batch=B)
            rows.append(
                {
                    "kind": "kernel",
                    "form": name,
                    "direction": direction,
                    "n": n,
                    "batch": B,
                    "heads": H,
                    "head_dim": d,
                    "causal": causal,
                    "dtype": str(q.dtype).removeprefix("torch."),
                    "flops": flops,
                    "min_s": t.min_s,
                    "q10_s": t.q10_s,
                    "median_s": t.median_s,
                    "tflops": flops / t.min_s / 1e12,
                    "rel_error": errors[name],
                }
            )
    return rows


def run(device: torch.device, quick: bool) -> list[dict]:
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(
            f"suite 'kernels' times compiled Triton kernels against SDPA's flash backend and needs "
            f"device 'cuda', got {device.type!r}; on a CPU the kernels run only in Triton's "
            f"interpreter, which tests them (tests/test_kernels.py) but cannot time them"
        )
    grid = sizes(quick)
    forms = _forms()
    rows = [r for name in grid["dtype"] for r in _roof_rows(device, name)]
    repeats = 5 if quick else 10
    configs = [(dt, d, c) for dt in grid["dtype"] for d in grid["head_dim"] for c in grid["causal"]]
    for dtype_name, d, causal in sweep(configs, "kernel configurations"):
        dtype = getattr(torch, dtype_name)
        for i, n in enumerate(grid["n"]):
            B, H, _, _ = shape(n, d)
            g = torch.Generator(device=device).manual_seed(n + d)
            q, k, v = (
                torch.randn(B, H, n, d, device=device, dtype=dtype, generator=g) for _ in range(3)
            )
            forward_checks = _check_forward(forms, q, k, v, causal)
            if i == 0:  # the backward is checked at the smallest n of each configuration
                backward_checks = _check_backward(forms, q, k, v, causal)
                rows += backward_checks
            rows += forward_checks
            failed = {
                (c["form"], c["what"].split()[0])
                for c in forward_checks + backward_checks
                if not c["passed"]
            }
            errors = {c["form"]: c["rel_error"] for c in forward_checks}
            rows += _time_rows(forms, (q, k, v), causal, failed, errors, repeats)
    return rows


def ratios(result: dict, min_n: int = 4096) -> list[dict]:
    """Triton's TFLOP/s over SDPA-flash's for each stored (direction, D,
    causal, dtype, n >= min_n), from a stored result of this suite: the
    figure the chapter reports (goal: at least 0.8 for the forward)."""
    if not isinstance(result, dict) or result.get("suite") != "kernels":
        raise ValueError("result must be a stored result of the suite 'kernels'")
    rows = [r for r in result["rows"] if r["kind"] == "kernel" and r["n"] >= min_n]
    by = {
        (r["direction"], r["head_dim"], r["causal"], r["dtype"], r["n"], r["form"]): r["tflops"]
        for r in rows
    }
    out = []
    for (direction, d, causal, dtype, n, form), tflops in sorted(by.items()):
        if form == "triton" and (direction, d, causal, dtype, n, "sdpa_flash") in by:
            sdpa = by[(direction, d, causal, dtype, n, "sdpa_flash")]
            out.append(
                {
                    "direction": direction,
                    "head_dim": d,
                    "causal": causal,
                    "dtype": dtype,
                    "n": n,
                    "triton_tflops": tflops,
                    "sdpa_flash_tflops": sdpa,
                    "ratio": tflops / sdpa,
                }
            )
    return out
