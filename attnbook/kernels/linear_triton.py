"""Causal linear attention as a chunked recurrence in
Triton, forward and backward (chapter 4, Long sequences).

Call the kernels through :func:`attnbook.kernels.api.linear_attention_triton`. As in
:mod:`attnbook.kernels.flash_triton`, ``TRITON_INTERPRET`` is read when this module is imported,
and must be what it was when Triton was.

With features f_i = φ(q_i), g_j = φ(k_j) (φ = elu + 1, or the identity for features computed
outside), causal linear attention is

    o_i = f_iᵀ S_i / f_iᵀ z_i,   S_i = Σ_{j ≤ i} g_j v_jᵀ  (D, D),   z_i = Σ_{j ≤ i} g_j  (D,).

**The state on chip.** One program owns one (batch, head) and walks along the sequence in chunks of
C tokens, carrying S and z on chip (in registers) from chunk to chunk: they never go to memory.
Inside a chunk, the part of the sum that the state does not hold yet is the masked quadratic form A
= tril(F Gᵀ) (C, C), so a chunk's numerators are A V + F S and its denominators rowsum(A) + F z;
then S += Gᵀ V and z += Σ g. Memory traffic is the inputs and outputs, O(N·D); work is O(N·C·D +
N·D²). The price is that the sequence is walked in order: parallelism comes only from batch × heads,
where FlashAttention also splits the queries.

**Backward**, a Triton kernel too. Write num_i = f_iᵀ S_i and den_i = f_iᵀ z_i, so o_i = num_i /
den_i and, for the incoming gradient dO, a_i := ∂L/∂num_i = dO_i / den_i and b_i := ∂L/∂den_i =
−(dO_i·o_i) / den_i (the forward pass saves den). Then

    ∂L/∂f_i = Σ_{j ≤ i} (a_i·v_j + b_i) g_j = S_i a_i + b_i z_i            (forward in time, state
    S, z) ∂L/∂g_j = Σ_{i ≥ j} (a_i·v_j + b_i) f_i = R_j v_j + r_j                 (backward in time)
    ∂L/∂v_j = Σ_{i ≥ j} (f_i·g_j) a_i      = R_jᵀ g_j, R_j = Σ_{i ≥ j} f_i a_iᵀ,  r_j = Σ_{i ≥ j}
    b_i f_i,

and dq = ∂L/∂f ∘ φ'(q), dk = ∂L/∂g ∘ φ'(k). One kernel walks forward carrying (S, z) for dq; a
second walks the chunks from the last to the first carrying (R, r) for dk and dv. Nothing is
recomputed but the chunk-local quadratic forms.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = [
    "INTERPRETED",
    "LinearAttention",
    "linear_fwd_kernel",
    "linear_bwd_dq_kernel",
    "linear_bwd_dkdv_kernel",
    "chunk_size",
    "forward",
    "backward",
]

#: True if the kernels below were decorated for Triton's CPU interpreter (TRITON_INTERPRET=1 at
#: import).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)


@triton.jit
def feature(x, ELU1: tl.constexpr):
    """φ(x) = elu(x) + 1 (ELU1) or x, element-wise, in float32."""
    if ELU1:
        y = tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))
    else:
        y = x
    return y


@triton.jit
def feature_grad(x, ELU1: tl.constexpr):
    """φ'(x): 1 where x > 0 and exp(x) elsewhere (ELU1), or 1."""
    if ELU1:
        y = tl.where(x > 0, 1.0, tl.exp(tl.minimum(x, 0.0)))
    else:
        y = tl.full(x.shape, 1.0, tl.float32)
    return y


@triton.jit
def linear_fwd_kernel(
    Q,
    K,
    V,
    O,
    DEN,
    N,
    D: tl.constexpr,
    CHUNK: tl.constexpr,
    ELU1: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: causal linear attention for one
    (batch, head), chunk by chunk, state (S, z) on chip.

    Q, K, V, O: contiguous (B·H, N, D); DEN: (B·H, N) float32, receives den_i = φ(q_i)·z_i.
    Grid: (B·H,).
    """
    bh = tl.program_id(0).to(tl.int64)
    base = bh * N * D
    cols = tl.arange(0, D)
    idx = tl.arange(0, CHUNK)
    lower = idx[None, :] <= idx[:, None]  # inside a chunk, query i sees keys j ≤ i
    # Rows past the end (N not a multiple of CHUNK) load zeros; they lie after every real query, so
    # the mask already hides their keys (φ(0) = 1 for elu + 1), and their outputs are not stored.
    S = tl.zeros([D, D], tl.float32)  # Σ φ(k_j) v_jᵀ over the chunks already read
    z = tl.zeros([D], tl.float32)  # Σ φ(k_j)
    for start in range(0, N, CHUNK):
        rows = start + idx
        inside = rows < N
        offs = base + rows[:, None] * D + cols[None, :]
        fq = feature(tl.load(Q + offs, mask=inside[:, None], other=0.0).to(tl.float32), ELU1)
        fk = feature(tl.load(K + offs, mask=inside[:, None], other=0.0).to(tl.float32), ELU1)
        v = tl.load(V + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        a = tl.where(
            lower, tl.dot(fq, tl.trans(fk), input_precision=PRECISION), 0.0
        )  # (CHUNK, CHUNK)
        num = tl.dot(a, v, input_precision=PRECISION) + tl.dot(fq, S, input_precision=PRECISION)
        den = tl.sum(a, 1) + tl.sum(fq * z[None, :], 1)
        den = tl.where(inside, den, 1.0)  # rows past the end are not stored; keep 0/0 out of them
        tl.store(O + offs, (num / den[:, None]).to(O.dtype.element_ty), mask=inside[:, None])
        tl.store(DEN + bh * N + rows, den, mask=inside)
        S += tl.dot(tl.trans(fk), v, input_precision=PRECISION)  # the chunk joins the state
        z += tl.sum(fk, 0)


@triton.jit
def linear_bwd_dq_kernel(
    Q,
    K,
    V,
    O,
    DO,
    DEN,
    DQ,
    N,
    D: tl.constexpr,
    CHUNK: tl.constexpr,
    ELU1: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: dq for one (batch, head), walking forward with the state (S, z) on chip.

    Q, K, V, O, DO, DQ: contiguous (B·H, N, D); DEN: (B·H, N) from the forward pass. Grid: (B·H,).
    """
    bh = tl.program_id(0).to(tl.int64)
    base = bh * N * D
    cols = tl.arange(0, D)
    idx = tl.arange(0, CHUNK)
    lower = idx[None, :] <= idx[:, None]
    S = tl.zeros([D, D], tl.float32)
    z = tl.zeros([D], tl.float32)
    for start in range(0, N, CHUNK):
        rows = start + idx
        inside = rows < N
        offs = base + rows[:, None] * D + cols[None, :]
        q = tl.load(Q + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        fk = feature(tl.load(K + offs, mask=inside[:, None], other=0.0).to(tl.float32), ELU1)
        v = tl.load(V + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        o = tl.load(O + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        do = tl.load(DO + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        den = tl.load(DEN + bh * N + rows, mask=inside, other=1.0)
        ga = do / den[:, None]  # ∂L/∂num
        gb = -tl.sum(do * o, 1) / den  # ∂L/∂den
        w = tl.where(lower, tl.dot(ga, tl.trans(v), input_precision=PRECISION) + gb[:, None], 0.0)
        dfq = (
            tl.dot(w, fk, input_precision=PRECISION)
            + tl.dot(ga, tl.trans(S), input_precision=PRECISION)
            + gb[:, None] * z[None, :]
        )
        tl.store(
            DQ + offs, (dfq * feature_grad(q, ELU1)).to(DQ.dtype.element_ty), mask=inside[:, None]
        )
        S += tl.dot(tl.trans(fk), v, input_precision=PRECISION)
        z += tl.sum(fk, 0)


@triton.jit
def linear_bwd_dkdv_kernel(
    Q,
    K,
    V,
    O,
    DO,
    DEN,
    DK,
    DV,
    N,
    D: tl.constexpr,
    CHUNK: tl.constexpr,
    ELU1: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """One program: dk and dv for one (batch, head), walking
    the chunks from last to first with (R, r) on chip.

    Same layouts as :func:`linear_bwd_dq_kernel`. Grid: (B·H,).
    """
    bh = tl.program_id(0).to(tl.int64)
    base = bh * N * D
    cols = tl.arange(0, D)
    idx = tl.arange(0, CHUNK)
    lower = idx[None, :] <= idx[:, None]
    R = tl.zeros([D, D], tl.float32)  # Σ φ(q_i) (∂L/∂num_i)ᵀ over the later chunks
    r = tl.zeros([D], tl.float32)  # Σ φ(q_i) ∂L/∂den_i
    n_chunks = tl.cdiv(N, CHUNK)
    for c in range(0, n_chunks):
        rows = (n_chunks - 1 - c) * CHUNK + idx
        inside = rows < N
        offs = base + rows[:, None] * D + cols[None, :]
        fq = feature(tl.load(Q + offs, mask=inside[:, None], other=0.0).to(tl.float32), ELU1)
        k = tl.load(K + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        fk = feature(k, ELU1)
        v = tl.load(V + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        o = tl.load(O + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        do = tl.load(DO + offs, mask=inside[:, None], other=0.0).to(tl.float32)
        den = tl.load(DEN + bh * N + rows, mask=inside, other=1.0)
        ga = do / den[:, None]  # zero past the end, so those rows add nothing below
        gb = -tl.sum(do * o, 1) / den
        a = tl.where(
            lower, tl.dot(fq, tl.trans(fk), input_precision=PRECISION), 0.0
        )  # a[i, j] = φ(q_i)·φ(k_j)
        w = tl.where(lower, tl.dot(ga, tl.trans(v), input_precision=PRECISION) + gb[:, None], 0.0)
        dv = tl.dot(tl.trans(a), ga, input_precision=PRECISION) + tl.dot(
            fk, R, input_precision=PRECISION
        )
        dfk = (
            tl.dot(tl.trans(w), fq, input_precision=PRECISION)
            + tl.dot(v, tl.trans(R), input_precision=PRECISION)
            + r[None, :]
        )
        tl.store(
            DK + offs, (dfk * feature_grad(k, ELU1)).to(DK.dtype.element_ty), mask=inside[:, None]
        )
        tl.store(DV + offs, dv.to(DV.dtype.element_ty), mask=inside[:, None])
        R += tl.dot(tl.trans(fq), ga, input_precision=PRECISION)
        r += tl.sum(fq * gb[:, None], 0)


def chunk_size(n: int, d: int, device: torch.device) -> dict:
    """Chunk length C and launch options: {'CHUNK', 'num_warps'}.

    In the interpreter, C = min(64, next power of two >= n), at least 16 (the smallest tl.dot). On
    CUDA, C = 16 and 8 warps: the (D, D) state and the chunk's products then fit in registers with
    few spills in half precision (sm_90 compiler, ``cuobjdump -res-usage``; not timed). Float32
    multiplies exactly ('ieee') and spills heavily at D = 128.
    """
    if device.type != "cuda":
        return {"CHUNK": max(16, min(64, triton.next_power_of_2(n))), "num_warps": 4}
    return {"CHUNK": 16, "num_warps": 8}


def _options(q, elu1: bool) -> dict:
    B, H, N, D = q.shape
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    return dict(D=D, ELU1=elu1, PRECISION=precision, **chunk_size(N, D, q.device))


def forward(q, k, v, elu1: bool):
    """Launch :func:`linear_fwd_kernel`. q, k, v: contiguous
    (B, H, N, D). Returns (o, den (B, H, N) float32)."""
    B, H, N, D = q.shape
    o = torch.empty_like(q)
    den = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    linear_fwd_kernel[(B * H,)](q, k, v, o, den, N, **_options(q, elu1))
    return o, den


def backward(q, k, v, o, den, do, elu1: bool):
    """Launch the two backward kernels. Returns (dq, dk, dv), each (B, H, N, D)."""
    B, H, N, D = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    opts = _options(q, elu1)
    linear_bwd_dq_kernel[(B * H,)](q, k, v, o, do, den, dq, N, **opts)
    linear_bwd_dkdv_kernel[(B * H,)](q, k, v, o, do, den, dk, dv, N, **opts)
    return dq, dk, dv


class LinearAttention(torch.autograd.Function):
    """Causal linear attention by the Triton kernels; saves q, k, v, o and the denominators."""

    @staticmethod
    def forward(ctx, q, k, v, elu1: bool):
        o, den = forward(q, k, v, elu1)
        ctx.save_for_backward(q, k, v, o, den)
        ctx.elu1 = elu1
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, den = ctx.saved_tensors
        dq, dk, dv = backward(q, k, v, o, den, do.contiguous(), ctx.elu1)
        return dq, dk, dv, None
