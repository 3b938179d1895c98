"""FLOPs and parameters of the generative mixing layer against attention (chapter 8, A generative function).

Convention: a multiply-add is 2 FLOPs; matrix products only (what FlopCounterMode counts).
The generative layer reads k·d inputs per token (k = 2: x_t, x_{t-1}; k = 3 with the
running mean) into a hidden width h (default d) and projects back to d.
"""
from __future__ import annotations

from ..checks import check_positive_int
from .flops import matmul_flops

__all__ = ["generative_flops", "generative_params", "attention_mixer_params", "running_mean_flops"]


def _hidden(d_model: int, hidden: int | None) -> int:
    check_positive_int("d_model", d_model)
    return d_model if hidden is None else check_positive_int("hidden", hidden)


def generative_flops(n: int, d_model: int, hidden: int | None = None, *, avg: bool = False, batch: int = 1) -> int:
    """Forward FLOPs of the generative layer on n tokens: 2·n·k·d·h + 2·n·h·d.

    With h = d: 6nd² (k = 2) or 8nd² (k = 3), linear in n; attention costs 8nd² + 4n²d.
    The running mean (``running_mean_flops``) is not a matrix product and is not included. Chapter 8.
    """
    check_positive_int("n", n)
    h = _hidden(d_model, hidden)
    k = 3 if avg else 2
    return matmul_flops(n, k * d_model, h, batch) + matmul_flops(n, h, d_model, batch)


def generative_params(d_model: int, hidden: int | None = None, *, avg: bool = False, bias: bool = True) -> int:
    """Parameters of the generative layer: k·d·h + h·d (+ h + d biases). Chapter 8."""
    h = _hidden(d_model, hidden)
    k = 3 if avg else 2
    return k * d_model * h + h * d_model + ((h + d_model) if bias else 0)


def attention_mixer_params(d_model: int, *, bias: bool = True) -> int:
    """Parameters of multi-head self-attention (fused QKV + output projection): 4d² (+ 4d biases). Chapter 8."""
    check_positive_int("d_model", d_model)
    return 4 * d_model * d_model + (4 * d_model if bias else 0)


def running_mean_flops(n: int, d_model: int, *, batch: int = 1) -> int:
    """Causal running mean by cumulative sum: n·d additions + n·d divisions = 2nd (not a matmul). Chapter 8."""
    check_positive_int("n", n)
    check_positive_int("d_model", d_model)
    check_positive_int("batch", batch)
    return 2 * n * d_model * batch
