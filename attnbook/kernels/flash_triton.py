"""FlashAttention-2 in Triton, forward and backward
(chapter 4, Long sequences, FlashAttention section).

Call the kernels through :func:`attnbook.kernels.api.flash_attention_triton`, which checks the
inputs and the backend first; importing this module imports Triton. Triton reads
``TRITON_INTERPRET`` when ``@triton.jit`` decorates a function: its own library when Triton is first
imported, these kernels when this module is. Both must see the same setting; :data:`INTERPRETED`
records what these got.

**Tiles.** Dense attention writes the (N, N) score matrix to memory and reads it back. Here one
program owns a tile of ``BLOCK_M`` query rows for one (batch, head). It loads its queries once, then
walks over the keys and values in tiles of ``BLOCK_N`` rows; a (BLOCK_M, BLOCK_N) block of scores
lives only in registers and is gone before the next tile is loaded. Memory traffic is the inputs
and the output, O(N·D) per head, instead of O(N²).

**The online softmax.** A row's softmax needs its maximum and its sum, which are known only after
the last tile. So each row keeps a running maximum m, a running sum l = Σ exp(s − m) and an
unnormalised output acc = Σ exp(s − m) v. When a tile raises the maximum to m', what was summed so
far is rescaled by exp(m − m'), which is exact, not an approximation; at the end o = acc / l. The
kernels use exp2 (the hardware instruction) on scores pre-multiplied by log2(e).

**The saved log-sum-exp.** The forward pass stores one number per row, lse = m + log l (natural
log), instead of the (N, N) probabilities: from it, any probability is p_ij = exp(s_ij − lse_i).

**The recompute in the backward pass.** With S = scale·QKᵀ, P = softmax(S), O = PV and the
incoming gradient dO:  dV = Pᵀ dO,  dP = dO Vᵀ,  dS = P ∘ (dP − δ) with δ_i = Σ_d dO_id O_id
(= rowsum(P ∘ dP)),  dQ = scale·dS K,  dK = scale·dSᵀ Q. Each kernel recomputes its tiles of S and
P from Q, K and the saved lse, tile by tile, as FlashAttention-2 does: one kernel owns a key tile
and loops over query tiles to accumulate dK and dV; a second owns a query tile and loops over key
tiles to accumulate dQ (no atomic adds, so the result is deterministic). The extra matmuls cost
less than storing and reading back P.

**Causal masking.** A query tile never loads key tiles that lie entirely above the diagonal: the
loop bounds stop there (about half the tiles), and only the tiles crossing the diagonal are masked.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "INTERPRETED",
    "FlashAttention",
    "flash_fwd_kernel",
    "flash_bwd_dkdv_kernel",
    "flash_bwd_dq_kernel",
    "block_sizes",
    "dot_precision",
    "forward",
    "backward",
]

#: True if the kernels below were decorated for Triton's CPU interpreter (TRITON_INTERPRET=1 at
#: import).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

LOG2E = tl.constexpr(1.4426950408889634)  # log2(e): exp(x) = exp2(x·LOG2E)


@triton.jit
def flash_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    N,
    scale,
    D: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: BLOCK_M rows of O = softmax(scale·QKᵀ)V for one (batch, head), and their lse.

    Q, K, V, O: contiguous (B·H, N, D); LSE: (B·H, N) float32. Grid: (cdiv(N, BLOCK_M), B·H).
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    base = bh * N * D  # this (batch, head)'s (N, D) block
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    q = tl.load(Q + base + rows[:, None] * D + cols[None, :], mask=rows[:, None] < N, other=0.0)
    qk_scale = scale * LOG2E  # scores in base 2, for exp2
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row maximum
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp2(s − m_i)
    acc = tl.zeros([BLOCK_M, D], tl.float32)  # running Σ exp2(s − m_i) v, not yet divided by l_i
    if CAUSAL:
        hi = tl.minimum((pid_m + 1) * BLOCK_M, N)  # key tiles past the diagonal are never loaded
    else:
        hi = N
    for start in range(0, hi, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
        v = tl.load(V + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
        s = (
            tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        )  # (BLOCK_M, BLOCK_N), on chip
        allowed = keys[None, :] < N
        if CAUSAL:
            allowed = allowed & (keys[None, :] <= rows[:, None])
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old maximum
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(
        O + base + rows[:, None] * D + cols[None, :],
        o.to(O.dtype.element_ty),
        mask=rows[:, None] < N,
    )
    lse = (m_i + tl.log2(l_i)) / LOG2E  # natural log-sum-exp of the row's scaled scores
    tl.store(LSE + bh * N + rows, lse, mask=rows < N)


@triton.jit
def flash_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DK,
    DV,
    N,
    scale,
    D: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: dK and dV for BLOCK_N keys of one (batch, head), looping over query tiles.

    Q, K, V, DO, DK, DV: contiguous (B·H, N, D); LSE, DELTA: (B·H, N) float32, DELTA = rowsum(dO ∘
    O). Grid: (cdiv(N, BLOCK_N), B·H).
    """
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    base = bh * N * D
    keys = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, D)
    k = tl.load(K + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
    v = tl.load(V + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    qk_scale = scale * LOG2E
    if CAUSAL:
        lo = (
            (pid_n * BLOCK_N) // BLOCK_M * BLOCK_M
        )  # query tiles wholly before these keys see none of them
    else:
        lo = 0
    for start in range(lo, N, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        q = tl.load(Q + base + rows[:, None] * D + cols[None, :], mask=rows[:, None] < N, other=0.0)
        do = tl.load(
            DO + base + rows[:, None] * D + cols[None, :], mask=rows[:, None] < N, other=0.0
        )
        lse = tl.load(LSE + bh * N + rows, mask=rows < N, other=0.0)
        delta = tl.load(DELTA + bh * N + rows, mask=rows < N, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        allowed = (rows[:, None] < N) & (keys[None, :] < N)
        if CAUSAL:
            allowed = allowed & (keys[None, :] <= rows[:, None])
        s = tl.where(allowed, s, float("-inf"))
        p = tl.exp2(
            s - lse[:, None] * LOG2E
        )  # P recomputed from the saved lse; exp2(−inf) = 0 where masked
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    dk = dk * scale
    tl.store(
        DK + base + keys[:, None] * D + cols[None, :],
        dk.to(DK.dtype.element_ty),
        mask=keys[:, None] < N,
    )
    tl.store(
        DV + base + keys[:, None] * D + cols[None, :],
        dv.to(DV.dtype.element_ty),
        mask=keys[:, None] < N,
    )


@triton.jit
def flash_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    N,
    scale,
    D: tl.constexpr,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: dQ for BLOCK_M queries of one (batch, head), looping over key tiles.

    Same layouts as :func:`flash_bwd_dkdv_kernel`. Grid: (cdiv(N, BLOCK_M), B·H).
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    base = bh * N * D
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D)
    q = tl.load(Q + base + rows[:, None] * D + cols[None, :], mask=rows[:, None] < N, other=0.0)
    do = tl.load(DO + base + rows[:, None] * D + cols[None, :], mask=rows[:, None] < N, other=0.0)
    lse = tl.load(LSE + bh * N + rows, mask=rows < N, other=0.0)
    delta = tl.load(DELTA + bh * N + rows, mask=rows < N, other=0.0)
    dq = tl.zeros([BLOCK_M, D], tl.float32)
    qk_scale = scale * LOG2E
    if CAUSAL:
        hi = tl.minimum((pid_m + 1) * BLOCK_M, N)
    else:
        hi = N
    for start in range(0, hi, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        k = tl.load(K + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
        v = tl.load(V + base + keys[:, None] * D + cols[None, :], mask=keys[:, None] < N, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        allowed = (rows[:, None] < N) & (keys[None, :] < N)
        if CAUSAL:
            allowed = allowed & (keys[None, :] <= rows[:, None])
        s = tl.where(allowed, s, float("-inf"))
        p = tl.exp2(s - lse[:, None] * LOG2E)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * scale
    tl.store(
        DQ + base + rows[:, None] * D + cols[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=rows[:, None] < N,
    )


def block_sizes(n: int, d: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Tile sizes and launch options: {'fwd': {...}, 'bwd': {...}}, each with BLOCK_M, BLOCK_N,
    num_warps, num_stages.

    In the interpreter, where each tile step costs Python overhead, square tiles of
    min(64, next power of two >= n), at least 16 (the smallest tl.dot). On CUDA, sizes for which
    the sm_90 compiler reports no register spills in half precision (read from the compiled kernels
    with ``cuobjdump -res-usage``, not timed); float32 multiplies exactly ('ieee', not TF32) with
    smaller tiles and still spills some registers.

    The backward for d > 64 runs without software pipelining (``num_stages=1``): on an H200 with
    Triton 3.6, these tiles pipelined in two stages gave causal dK wrong in its last 16 columns,
    and correct with one stage, with the loop started at query tile 0 instead of the diagonal,
    or with other tile shapes (a compiler fault we did not isolate further; the kernels suite
    checks every configuration before it times it).
    """
    if device.type != "cuda":
        b = max(16, min(64, triton.next_power_of_2(n)))
        cfg = {"BLOCK_M": b, "BLOCK_N": b, "num_warps": 4, "num_stages": 1}
        return {"fwd": cfg, "bwd": cfg}
    if dtype == torch.float32:
        return {
            "fwd": {
                "BLOCK_M": 64,
                "BLOCK_N": 32,
                "num_warps": 4 if d <= 64 else 8,
                "num_stages": 2,
            },
            "bwd": {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2},
        }
    bwd = (
        {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}
        if d <= 64
        else {"BLOCK_M": 32, "BLOCK_N": 64, "num_warps": 4, "num_stages": 1}
    )
    return {"fwd": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}, "bwd": bwd}


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs multiply in full float32 ('ieee'), not TF32; half inputs ignore the option."""
    return "ieee" if dtype == torch.float32 else "tf32"


def forward(q, k, v, causal: bool, scale: float):
    """Launch :func:`flash_fwd_kernel`. q, k, v: contiguous (B, H, N, D).

    Returns o: (B, H, N, D) and lse: (B, H, N) float32.
    """
    B, H, N, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    cfg = block_sizes(N, D, q.dtype, q.device)["fwd"]
    grid = (triton.cdiv(N, cfg["BLOCK_M"]), B * H)
    flash_fwd_kernel[grid](
        q, k, v, o, lse, N, scale, D=D, CAUSAL=causal, PRECISION=dot_precision(q.dtype), **cfg
    )
    return o, lse


def backward(q, k, v, o, lse, do, causal: bool, scale: float):
    """Launch the two backward kernels. All (B, H, N, D)
    contiguous but lse (B, H, N). Returns (dq, dk, dv)."""
    B, H, N, D = q.shape
    delta = (do.float() * o.float()).sum(-1)  # δ_i = rowsum(dO ∘ O), (B, H, N) float32
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    cfg = block_sizes(N, D, q.dtype, q.device)["bwd"]
    args = dict(D=D, CAUSAL=causal, PRECISION=dot_precision(q.dtype), **cfg)
    flash_bwd_dkdv_kernel[(triton.cdiv(N, cfg["BLOCK_N"]), B * H)](
        q, k, v, do, lse, delta, dk, dv, N, scale, **args
    )
    flash_bwd_dq_kernel[(triton.cdiv(N, cfg["BLOCK_M"]), B * H)](
        q, k, v, do, lse, delta, dq, N, scale, **args
    )
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """softmax(scale·QKᵀ)V by the Triton kernels;
    saves q, k, v, o and the per-row lse for backward."""

    @staticmethod
    def forward(ctx, q, k, v, causal: bool, scale: float):
        o, lse = forward(q, k, v, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = backward(q, k, v, o, lse, do.contiguous(), ctx.causal, ctx.scale)
        return dq, dk, dv, None, None
