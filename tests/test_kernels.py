"""Triton kernels (chapter 4): FlashAttention-2 and chunked causal linear attention, forward and
backward.

Without CUDA the kernels run in Triton's CPU interpreter. Triton reads TRITON_INTERPRET when it
decorates functions, its own library included, and again on launch, so without CUDA this file sets
the variable for the whole process before Triton is first imported. With CUDA the kernels are
compiled and the same reference tests run on the GPU, plus half-precision tests against SDPA.
"""

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.reference import attention as reference_attention

if not torch.cuda.is_available() and "triton" not in sys.modules:
    # Process-wide, as Triton needs: read when Triton decorates its library on import, and on
    # launch.
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")
flash_triton = importlib.import_module("attnbook.kernels.flash_triton")
linear_triton = importlib.import_module("attnbook.kernels.linear_triton")
InterpretedFunction = importlib.import_module("triton.runtime.interpreter").InterpretedFunction
# Something imported Triton before this file without the interpreter (torch.utils.flop_counter
# does): then the tests run in a fresh process, see test_in_a_fresh_process.
IN_PROCESS = torch.cuda.is_available() or isinstance(triton.language.zeros, InterpretedFunction)


@pytest.fixture(autouse=True)
def _run_here_or_in_a_fresh_process(request):
    if not IN_PROCESS and request.node.originalname != "test_in_a_fresh_process":
        pytest.skip(
            "Triton was imported before without TRITON_INTERPRET=1: run by test_in_a_fresh_process"
        )


from attnbook.kernels import api  # noqa: E402

DEVICE = "cpu" if flash_triton.INTERPRETED else "cuda"
gpu_only = pytest.mark.skipif(
    not torch.cuda.is_available() or flash_triton.INTERPRETED,
    reason="needs CUDA and compiled kernels",
)


def _qkv(shape, seed, positive=False):
    g = torch.Generator().manual_seed(seed)
    make = (
        (lambda: torch.rand(shape, generator=g) + 0.1)
        if positive
        else (lambda: torch.randn(shape, generator=g))
    )
    return [make().to(DEVICE).requires_grad_() for _ in range(3)]


def _softmax_attention64(q, k, v, causal, scale=None):
    """The reference formula in torch float64, for autograd gradients. (B, H, N, D) each."""
    q, k, v = (x.detach().double().cpu().requires_grad_() for x in (q, k, v))
    s = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    if causal:
        n = q.shape[2]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return (q, k, v), s.softmax(-1) @ v


def _linear_numpy(q, k, v, elu1=True):
    """NumPy float64 causal linear attention, the quadratic form: W = tril(φ(Q)φ(K)ᵀ), rows
    normalised, O = W V."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    phi = (
        (lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))) if elu1 else (lambda x: x)
    )
    w = np.tril(phi(q) @ np.swapaxes(phi(k), -1, -2))
    return (w / w.sum(-1, keepdims=True)) @ v


def _linear_attention64(q, k, v, elu1=True):
    """The same formula in torch float64, for autograd gradients."""
    q, k, v = (x.detach().double().cpu().requires_grad_() for x in (q, k, v))
    phi = (lambda x: torch.nn.functional.elu(x) + 1.0) if elu1 else (lambda x: x)
    w = (phi(q) @ phi(k).transpose(-1, -2)).tril()
    return (q, k, v), (w / w.sum(-1, keepdim=True)) @ v


def _max_err(a, b):
    return (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item()


def _check_grads(out, inputs, ref_out, ref_inputs, atol):
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = torch.autograd.grad(out, inputs, do.to(out.device, out.dtype))
    ref_grads = torch.autograd.grad(ref_out, ref_inputs, do)
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.shape == r.shape, name
        assert _max_err(g, r) <= atol * max(1.0, r.abs().max().item()), name


# ------------------------------------------------------------------ FlashAttention-2


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("n", [1, 17, 77, 130])
def test_flash_matches_reference(n, d, causal):
    q, k, v = _qkv((2, 2, n, d), seed=n + d)
    o = api.flash_attention_triton(q, k, v, causal=causal)
    ref = reference_attention(*(x.detach().cpu().numpy() for x in (q, k, v)), causal=causal)
    assert o.shape == ref.shape == (2, 2, n, d)
    assert o.dtype == torch.float32 and o.device.type == DEVICE
    assert np.abs(o.detach().cpu().numpy() - ref).max() < 2e-5
    ref_inputs, ref_out = _softmax_attention64(q, k, v, causal)
    _check_grads(o, (q, k, v), ref_out, ref_inputs, atol=2e-5)


def test_flash_saves_the_log_sum_exp():
    q, k, v = (x.detach() for x in _qkv((1, 2, 77, 32), seed=3))
    scale = 0.3
    o, lse = flash_triton.forward(q, k, v, True, scale)
    s = (q.double() @ k.double().transpose(-1, -2) * scale).cpu()
    s = s.masked_fill(~torch.ones(77, 77, dtype=torch.bool).tril(), float("-inf"))
    assert lse.shape == (1, 2, 77) and lse.dtype == torch.float32
    assert _max_err(lse, torch.logsumexp(s, -1)) < 1e-5


def test_flash_custom_scale_and_noncontiguous_inputs():
    q, k, v = _qkv((1, 3, 40, 64), seed=5)
    qt, kt, vt = (
        x.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in (q, k, v)
    )
    assert not qt.is_contiguous()
    o = api.flash_attention_triton(qt, kt, vt, causal=True, scale=0.05)
    ref_inputs, ref_out = _softmax_attention64(qt, kt, vt, True, scale=0.05)
    assert o.shape == ref_out.shape
    assert _max_err(o, ref_out) < 2e-5
    _check_grads(o, (qt, kt, vt), ref_out, ref_inputs, atol=2e-5)


def test_flash_very_negative_scores():
    """Every score below −80: a padded key (score 0) would overflow exp(0 − lse) unless masked."""
    q, k, v = (x.detach() for x in _qkv((1, 1, 17, 32), seed=4))
    q, k, v = (
        (q.abs() + 4.0).requires_grad_(),
        (-k.abs() - 4.0).requires_grad_(),
        v.requires_grad_(),
    )
    o = api.flash_attention_triton(q, k, v)
    ref_inputs, ref_out = _softmax_attention64(q, k, v, False)
    assert (q.detach() @ k.detach().transpose(-1, -2)).max() * 32**-0.5 < -80
    assert o.shape == ref_out.shape
    assert _max_err(o, ref_out) < 2e-5
    _check_grads(o, (q, k, v), ref_out, ref_inputs, atol=2e-5)


@pytest.mark.parametrize("blocks", [(32, 16), (16, 32), (128, 64), (32, 64)])
def test_flash_unequal_tiles(monkeypatch, blocks):
    """Unequal tiles, among them the CUDA shapes (128×64 forward, 32×64 backward at D = 128), in
    either mode."""
    bm, bn = blocks
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4, "num_stages": 2}
    monkeypatch.setattr(flash_triton, "block_sizes", lambda *a: {"fwd": cfg, "bwd": cfg})
    q, k, v = _qkv((1, 2, 150, 32), seed=bm + bn)
    o = api.flash_attention_triton(q, k, v, causal=True)
    ref_inputs, ref_out = _softmax_attention64(q, k, v, True)
    assert o.shape == ref_out.shape
    assert _max_err(o, ref_out) < 2e-5
    _check_grads(o, (q, k, v), ref_out, ref_inputs, atol=2e-5)


@pytest.mark.skipif(not flash_triton.INTERPRETED, reason="counts the interpreter's matmuls")
@pytest.mark.parametrize("n, bm, bn", [(128, 32, 32), (130, 32, 16), (100, 16, 32)])
def test_flash_causal_skips_masked_tiles(monkeypatch, n, bm, bn):
    """Causal mode multiplies only the tiles that hold at least one allowed (query, key) pair."""
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4, "num_stages": 1}
    monkeypatch.setattr(flash_triton, "block_sizes", lambda *a: {"fwd": cfg, "bwd": cfg})
    builder = importlib.import_module("triton.runtime.interpreter").InterpreterBuilder
    calls = []
    real_dot = builder.create_dot
    monkeypatch.setattr(
        builder, "create_dot", lambda self, *a: calls.append(1) or real_dot(self, *a)
    )
    m_tiles, n_tiles = -(-n // bm), -(-n // bn)
    allowed = np.zeros((m_tiles * bm, n_tiles * bn), dtype=bool)
    allowed[:n, :n] = np.tril(np.ones((n, n), dtype=bool))
    live = int(
        allowed.reshape(m_tiles, bm, n_tiles, bn).any(axis=(1, 3)).sum()
    )  # tiles with an allowed pair
    all_tiles = m_tiles * n_tiles
    assert live < 0.7 * all_tiles
    q, k, v = (x.detach() for x in _qkv((1, 1, n, 32), seed=1))
    for causal, tiles in ((False, all_tiles), (True, live)):
        calls.clear()
        o, lse = flash_triton.forward(q, k, v, causal, 0.125)
        assert len(calls) == 2 * tiles  # QKᵀ and PV per tile
        calls.clear()
        flash_triton.backward(q, k, v, o, lse, torch.ones_like(o), causal, 0.125)
        assert len(calls) == 7 * tiles  # dK/dV kernel: S, dV, dP, dK; dQ kernel: S, dP, dQ


@settings(max_examples=8, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    n=st.integers(1, 140),
    d=st.sampled_from([32, 64]),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_flash_random_shapes(b, h, n, d, causal, seed):
    q, k, v = (x.detach() for x in _qkv((b, h, n, d), seed=seed))
    o = api.flash_attention_triton(q, k, v, causal=causal)
    ref = reference_attention(*(x.cpu().numpy() for x in (q, k, v)), causal=causal)
    assert o.shape == ref.shape
    assert np.abs(o.cpu().numpy() - ref).max() < 2e-5


# ------------------------------------------------------------------ chunked causal linear attention


@pytest.mark.parametrize("feature_map", ["elu1", "identity"])
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("n", [1, 17, 77, 130])
def test_linear_matches_reference(n, d, feature_map):
    elu1 = feature_map == "elu1"
    q, k, v = _qkv(
        (2, 2, n, d), seed=n * d, positive=not elu1
    )  # identity features must be positive
    o = api.linear_attention_triton(q, k, v, feature_map=feature_map)
    ref = _linear_numpy(*(x.detach().cpu().numpy() for x in (q, k, v)), elu1=elu1)
    assert o.shape == ref.shape == (2, 2, n, d)
    assert o.dtype == torch.float32 and o.device.type == DEVICE
    assert np.abs(o.detach().cpu().numpy() - ref).max() < 2e-5
    ref_inputs, ref_out = _linear_attention64(q, k, v, elu1)
    assert _max_err(ref_out, torch.from_numpy(ref)) < 1e-12
    _check_grads(o, (q, k, v), ref_out, ref_inputs, atol=2e-5)


def test_linear_reference_is_the_recurrence():
    """The quadratic-form reference equals the token-by-token recurrence S_t = S_{t-1} +
    φ(k_t)v_tᵀ."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 9, 4)) for _ in range(3))
    phi = lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))  # noqa: E731
    S, z, out = np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4)), np.empty((1, 2, 9, 4))
    for t in range(9):
        S = S + phi(k[:, :, t, :, None]) * v[:, :, t, None, :]
        z = z + phi(k[:, :, t])
        fq = phi(q[:, :, t])
        out[:, :, t] = (
            np.einsum("bhd,bhde->bhe", fq, S) / np.einsum("bhd,bhd->bh", fq, z)[..., None]
        )
    assert np.abs(_linear_numpy(q, k, v) - out).max() < 1e-12


@pytest.mark.parametrize("chunk", [16, 32, 64])
def test_linear_chunk_sizes(monkeypatch, chunk):
    """The state carried across chunks: ten chunks of 16 (the CUDA size), five of 32, three of
    64."""
    monkeypatch.setattr(linear_triton, "chunk_size", lambda *a: {"CHUNK": chunk, "num_warps": 4})
    q, k, v = _qkv((1, 2, 150, 32), seed=chunk)
    o = api.linear_attention_triton(q, k, v)
    ref_inputs, ref_out = _linear_attention64(q, k, v)
    assert o.shape == ref_out.shape
    assert _max_err(o, ref_out) < 2e-5
    _check_grads(o, (q, k, v), ref_out, ref_inputs, atol=2e-5)


def test_linear_saves_the_denominators():
    q, k, v = (x.detach() for x in _qkv((1, 2, 40, 32), seed=2))
    o, den = linear_triton.forward(q, k, v, True)
    fq, fk = (torch.nn.functional.elu(x.double().cpu()) + 1 for x in (q, k))
    assert den.shape == (1, 2, 40)
    assert _max_err(den, (fq * fk.cumsum(2)).sum(-1)) < 1e-3 * den.abs().max().item()


# ------------------------------------------------------------------ bad input and missing backends


@pytest.mark.parametrize("fn", [api.flash_attention_triton, api.linear_attention_triton])
def test_bad_input_names_the_argument(fn):
    q = torch.randn(1, 2, 8, 32)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        fn(q, q.numpy(), q)
    with pytest.raises(ValueError, match="q must have 4 dimensions"):
        fn(q[0], q, q)
    with pytest.raises(ValueError, match=r"v must have the shape of q .*\(1, 2, 9, 32\)"):
        fn(q, q, torch.randn(1, 2, 9, 32))
    with pytest.raises(TypeError, match="k must have the dtype of q"):
        fn(q, q.double(), q)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="v must be on the device of q"):
            fn(q, q, q.cuda())
    with pytest.raises(ValueError, match=r"head dimension D in \(32, 64, 128\).*D = 48"):
        fn(*(torch.randn(1, 2, 8, 48) for _ in range(3)))
    with pytest.raises(ValueError, match="k contains NaN"):
        fn(q, torch.full_like(q, float("nan")), q)


def test_bad_options_name_the_argument():
    q = torch.randn(1, 1, 8, 32)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        api.flash_attention_triton(q, q, q, scale=-1.0)
    with pytest.raises(TypeError, match="causal must be a bool"):
        api.flash_attention_triton(q, q, q, causal="yes")
    with pytest.raises(ValueError, match="feature_map must be one of"):
        api.linear_attention_triton(q, q, q, feature_map="relu")


@pytest.mark.skipif(not flash_triton.INTERPRETED, reason="interpreter dtypes")
@pytest.mark.parametrize("fn", [api.flash_attention_triton, api.linear_attention_triton])
def test_interpreter_takes_float32_only(fn):
    q = torch.randn(1, 1, 8, 32, dtype=torch.float64)
    with pytest.raises(TypeError, match="torch.float32 in Triton's interpreter, got torch.float64"):
        fn(q, q, q)


def test_missing_triton_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    q = torch.randn(1, 1, 8, 32)
    with pytest.raises(RuntimeError, match="need Triton, which is not installed"):
        api.flash_attention_triton(q, q, q)
    with pytest.raises(RuntimeError, match="need Triton, which is not installed"):
        api.linear_attention_triton(q, q, q)


def test_cpu_tensors_without_the_interpreter_are_refused():
    """In a fresh process: no TRITON_INTERPRET -> clear error; set after Triton's import -> clear
    error."""
    script = textwrap.dedent("""
        import os, torch
        from attnbook.kernels.api import flash_attention_triton, linear_attention_triton
        q = torch.randn(1, 1, 8, 32)
        for label in ("ERR1", "ERR2"):
            for fn in (flash_attention_triton, linear_attention_triton):
                try:
                    fn(q, q, q)
                except RuntimeError as e:
                    print(label, e)
            os.environ["TRITON_INTERPRET"] = "1"
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, even on a GPU machine
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 4 and [line[:4] for line in lines] == ["ERR1", "ERR1", "ERR2", "ERR2"], (
        lines
    )
    for line in lines[:2]:
        assert (
            "CUDA is not available here" in line
            and "set TRITON_INTERPRET=1 in the environment before" in line
        )
    for line in lines[2:]:
        assert "TRITON_INTERPRET=1 was set after Triton was imported" in line


_COMPILE_SCRIPT = textwrap.dedent("""
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from attnbook.kernels import flash_triton as ft, linear_triton as lt
    CUDA = torch.device("cuda")
    cases = ((90, torch.float16, 128), (90, torch.float32, 128), (80, torch.bfloat16, 64))
    for cc, dtype, d in cases:
        t = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
        flash_cfg = ft.block_sizes(4096, d, dtype, CUDA)
        lin_cfg = lt.chunk_size(4096, d, CUDA)
        jobs = [(fn, dict(D=d, CAUSAL=True, PRECISION=ft.dot_precision(dtype), **flash_cfg[key]))
                for fn, key in ((ft.flash_fwd_kernel, "fwd"), (ft.flash_bwd_dkdv_kernel, "bwd"),
                                (ft.flash_bwd_dq_kernel, "bwd"))]
        jobs += [(fn, dict(D=d, ELU1=True, PRECISION=ft.dot_precision(dtype), **lin_cfg))
                 for fn in (lt.linear_fwd_kernel, lt.linear_bwd_dq_kernel,
                            lt.linear_bwd_dkdv_kernel)]
        for fn, consts in jobs:
            opts = {k: consts.pop(k) for k in ("num_warps", "num_stages") if k in consts}
            sig = {a: ("constexpr" if a in consts else "i32" if a == "N" else "fp32" if a == "scale"
                       else "*fp32" if a in ("LSE", "DELTA", "DEN") else "*" + t)
                   for a in fn.arg_names}
            constexprs = {(fn.arg_names.index(k),): v for k, v in consts.items()}
            src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
            kernel = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts)
            print(f"sm_{cc} {t} D={d} {fn.__name__} shared={kernel.metadata.shared}")
""")


def test_kernels_compile_for_gpus():
    """No GPU needed: Triton and ptxas compile every kernel for sm_90 and sm_80 with its CUDA tile
    sizes."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset
    run = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 18, lines
    for line in lines:
        assert int(line.rsplit("=", 1)[1]) <= 163 * 1024, (
            line
        )  # fits an A100's shared memory per block


@pytest.mark.skipif(IN_PROCESS, reason="the tests ran in this process")
@pytest.mark.skipif(IN_PROCESS, reason="the tests already ran in this process")
def test_in_a_fresh_process():
    """This file again, in a process that sets TRITON_INTERPRET=1 before anything imports Triton."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1] and "failed" not in run.stdout.splitlines()[-1]
    print(run.stdout.splitlines()[-1])


def test_importing_the_package_does_not_import_triton():
    script = "import sys, attnbook.kernels, attnbook.kernels.api; print('triton' in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


# ------------------------------------------------------------------ GPU: half precision against
# SDPA

_ATOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-5}


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d", [32, 64, 128])
@pytest.mark.parametrize(
    "n, causal", [(77, False), (77, True), (1000, True), (4096, False), (4096, True)]
)
def test_flash_gpu_against_sdpa(n, d, causal, dtype):
    """Error against the float64 formula at most twice SDPA's own (plus a dtype-sized margin),
    outputs and grads."""
    g = torch.Generator(device="cuda").manual_seed(n + d)
    q, k, v = (
        torch.randn(2, 4, n, d, device="cuda", generator=g, dtype=dtype).requires_grad_()
        for _ in range(3)
    )
    do = torch.randn(2, 4, n, d, device="cuda", generator=g, dtype=dtype)
    o = api.flash_attention_triton(q, k, v, causal=causal)
    ours = (o, *torch.autograd.grad(o, (q, k, v), do))
    o_sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    sdpa = (o_sdpa, *torch.autograd.grad(o_sdpa, (q, k, v), do))
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    o64 = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64, is_causal=causal)
    exact = (o64, *torch.autograd.grad(o64, (q64, k64, v64), do.double()))
    for name, a, s, e in zip(("o", "dq", "dk", "dv"), ours, sdpa, exact):
        assert a.shape == e.shape and a.dtype == dtype, name
        margin = _ATOL[dtype] * max(1.0, e.abs().max().item())
        assert _max_err(a, e) <= 2 * _max_err(s, e) + margin, name


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d", [32, 64, 128])
def test_linear_gpu(d, dtype):
    g = torch.Generator(device="cuda").manual_seed(d)
    q, k, v = (
        torch.randn(2, 4, 1000, d, device="cuda", generator=g).to(dtype).requires_grad_()
        for _ in range(3)
    )
    o = api.linear_attention_triton(q, k, v)
    ref_inputs, ref_out = _linear_attention64(q, k, v)
    assert o.shape == ref_out.shape and o.dtype == dtype
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4}[dtype]
    assert _max_err(o, ref_out) <= tol * ref_out.abs().max().item()
    _check_grads(o, (q, k, v), ref_out, ref_inputs, atol=tol)


@pytest.mark.parametrize("causal", [False, True])
def test_registered_as_attention_methods(causal):
    import attnbook

    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 37, 32, generator=g) for _ in range(3))
    ref = reference_attention(*(x.double().numpy() for x in (q, k, v)), causal=causal)
    out = attnbook.attention(
        q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), method="flash_triton", causal=causal
    )
    assert out.shape == ref.shape and float(abs(out.double().cpu().numpy() - ref).max()) < 2e-5
    if causal:
        lin = attnbook.attention(
            q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), method="linear_triton", causal=True
        )
        torch_lin = attnbook.attention(q, k, v, method="linear", causal=True)
        assert lin.shape == torch_lin.shape and float((lin.cpu() - torch_lin).abs().max()) < 1e-4
    else:
        with pytest.raises(ValueError, match="causal only"):
            attnbook.attention(
                q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), method="linear_triton", causal=False
            )
