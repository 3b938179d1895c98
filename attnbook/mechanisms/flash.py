"""FlashAttention: tiled exact attention with an online softmax (chapter 4, Long sequences).

Dao et al. (2022, 2023): never store the N×N score matrix; stream key/value
tiles past each query tile, keeping a running max m and running sum l per
query so the softmax can be rescaled as new tiles arrive. The NumPy form is
the FlashAttention-2 loop (outer over query tiles, inner over key tiles) with
an instrumented count of the elements it moves between "HBM" (the arrays) and
"SRAM" (the tiles). The torch form runs every query tile in parallel and
streams key tiles; it is exact to rounding and differentiable (by autograd
through the loop, so its backward pass stores per-tile intermediates: it does
not recompute as the real kernel does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from attnbook.checks import check_array, check_positive_int, check_same_length

__all__ = [
    "BLOCK_SIZE",
    "IOCounter",
    "standard_attention_numpy",
    "flash_attention_numpy",
    "flash_attention",
    "sdpa_kernel_used",
    "sdpa_backends",
]


@dataclass
class IOCounter:
    """Elements read from and written to slow memory ("HBM") by an instrumented loop."""

    reads: int = 0
    writes: int = 0

    def read(self, x):
        self.reads += int(np.size(x))
        return x

    def write(self, x):
        self.writes += int(np.size(x))
        return x

    @property
    def total(self) -> int:
        return self.reads + self.writes


def _check(q, k, v, causal):
    q, k, v = (check_array(name, x, ndim=4) for name, x in (("q", q), ("k", k), ("v", v)))
    if k.shape[:2] != q.shape[:2] or v.shape[:3] != k.shape[:3] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"q, k, v must be (B, H, N, D), (B, H, M, D), (B, H, M, Dv), got {q.shape}, {k.shape}, "
            f"{v.shape}"
        )
    if causal:
        check_same_length(q, k)
    return q, k, v


def standard_attention_numpy(
    q, k, v, causal: bool = False, io: IOCounter | None = None
) -> np.ndarray:
    """Dao et al.'s "standard attention" (their Algorithm 0) with its slow-memory traffic counted.

    S = QKᵀ is written out, read back for the softmax, P written, read again for PV.
    q, k, v: (B, H, N, D) float64 -> (B, H, N, Dv). Chapter 4.
    """
    q, k, v = _check(q, k, v, causal)
    io = io if io is not None else IOCounter()
    s = io.write(io.read(q) @ np.swapaxes(io.read(k), -1, -2) / math.sqrt(q.shape[-1]))
    s = io.read(s)
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p = io.write(p / p.sum(axis=-1, keepdims=True))
    return io.write(io.read(p) @ io.read(v))


def flash_attention_numpy(
    q,
    k,
    v,
    causal: bool = False,
    block_size: int = 64,
    block_size_k: int | None = None,
    io: IOCounter | None = None,
) -> np.ndarray:
    """Tiled attention with the online softmax (FlashAttention-2 loop order), float64.

    q, k, v: (B, H, N, D) -> (B, H, N, Dv). Query tiles of ``block_size`` rows, key tiles of
    ``block_size_k`` (default: the same). ``io`` counts elements moved: Q and O once, K and V
    once per query tile, the log-sum-exp L once. Chapter 4.
    """
    q, k, v = _check(q, k, v, causal)
    br = check_positive_int("block_size", block_size)
    bc = br if block_size_k is None else check_positive_int("block_size_k", block_size_k)
    io = io if io is not None else IOCounter()
    n, m = q.shape[2], k.shape[2]
    out = np.empty(q.shape[:3] + (v.shape[3],))
    scale = 1.0 / math.sqrt(q.shape[-1])
    for r0 in range(0, n, br):
        r1 = min(r0 + br, n)
        qi = io.read(q[:, :, r0:r1]) * scale
        mi = np.full(qi.shape[:3], -np.inf)
        li = np.zeros(qi.shape[:3])
        acc = np.zeros(qi.shape[:3] + (v.shape[3],))
        for c0 in range(0, r1 if causal else m, bc):
            c1 = min(c0 + bc, m)
            s = qi @ np.swapaxes(io.read(k[:, :, c0:c1]), -1, -2)
            if causal:
                s = np.where(np.arange(r0, r1)[:, None] >= np.arange(c0, c1)[None, :], s, -np.inf)
            m_new = np.maximum(mi, s.max(axis=-1))
            p = np.exp(s - m_new[..., None])
            alpha = np.exp(mi - m_new)
            li = alpha * li + p.sum(axis=-1)
            acc = alpha[..., None] * acc + p @ io.read(v[:, :, c0:c1])
            mi = m_new
        out[:, :, r0:r1] = io.write(acc / li[..., None])
        io.write(mi + np.log(li))  # log-sum-exp, kept for the backward pass
    return out


#: Tile size of the torch form, chosen by measurement against SDPA on a 2-core CPU (notebook 04b,
#: stored in attnbook/results/flash-tiles-cpu.json): large enough that each tile is one efficient
#: matrix product, small enough that a (B, H, b, b) score tile stays in cache.
BLOCK_SIZE = 256


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    block_size: int = BLOCK_SIZE,
) -> torch.Tensor:
    """Exact attention, FlashAttention-2 order: for each query tile, stream key tiles with a running
    max and sum (the online softmax), then write the tile's output once.

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv) -> (B, H, N, Dv); holds one (B, H, b, b)
    score tile at a time. Causal: a query tile stops at its own diagonal (later key tiles are never
    computed) and only the diagonal tile is masked. Differentiable by autograd through the loop (the
    real kernel recomputes instead, see ``attnbook.kernels.flash_triton``). Chapter 4.
    """
    b = check_positive_int("block_size", block_size)
    n, m_keys = q.shape[2], k.shape[2]
    if causal:
        check_same_length(q, k)
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = q.new_empty(q.shape[:3] + (v.shape[-1],))
    for r0 in range(0, n, b):
        r1 = min(r0 + b, n)
        q_tile = q[:, :, r0:r1] * scale
        m = l = acc = None
        for c0 in range(
            0, r1 if causal else m_keys, b
        ):  # causal: keys after the tile's last query skipped
            c1 = min(c0 + b, r1 if causal else m_keys)
            s = q_tile @ k[:, :, c0:c1].transpose(-1, -2)
            if causal and c1 - 1 > r0:  # the tile crosses the diagonal: mask keys after each query
                keep = torch.arange(r0, r1, device=q.device)[:, None] >= torch.arange(
                    c0, c1, device=q.device
                )
                s = s.masked_fill(~keep, float("-inf"))
            tile_max = s.detach().amax(dim=-1)  # the stabiliser needs no gradient
            if m is None:  # first tile: every query sees key 0, so the maximum is finite
                m = tile_max
                e = torch.exp(s - m[..., None])
                l, acc = e.sum(dim=-1), e @ v[:, :, c0:c1]
            else:
                m_new = torch.maximum(m, tile_max)
                alpha = torch.exp(m - m_new)
                e = torch.exp(s - m_new[..., None])
                l = alpha * l + e.sum(dim=-1)
                acc = alpha[..., None] * acc + e @ v[:, :, c0:c1]
                m = m_new
        out[:, :, r0:r1] = acc / l[..., None]
    return out


def sdpa_kernel_used(q, k, v, causal: bool = False) -> str:
    """Name of the aten kernel ``F.scaled_dot_product_attention`` dispatched to for these inputs."""
    from torch.profiler import ProfilerActivity, profile

    from attnbook.measure import native_stderr_silenced

    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    names = [
        e.key
        for e in prof.key_averages()
        if e.key.startswith("aten::_scaled_dot_product")
        or e.key.startswith("aten::_efficient_attention")
        or e.key.startswith("aten::_flash_attention")
    ]
    return names[0] if names else "aten::scaled_dot_product_attention (no fused kernel seen)"


def sdpa_backends(q, k, v, causal: bool = False) -> dict:
    """For each SDPA backend: True when forcing it with ``sdpa_kernel`` runs on these inputs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    result = {}
    for backend in (
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.MATH,
    ):
        try:
            with sdpa_kernel([backend]):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
            result[backend.name] = True
        except RuntimeError:
            result[backend.name] = False
    return result
