"""Chapter 4: FlashAttention (NumPy and torch) against exact attention, its IO and FLOP counts,
SDPA."""

import numpy as np
import pytest
import torch
from helpers import case_id
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import cost, reference
from attnbook.checks import rel_error
from attnbook.measure import count_flops
from attnbook.mechanisms import flash
from attnbook.mechanisms.dense import dense_attention


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 2),
    N=st.integers(1, 40),
    D=st.integers(1, 8),
    br=st.integers(1, 16),
    bc=st.integers(1, 16),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_numpy_flash_equals_reference_and_counts_its_io(B, H, N, D, br, bc, causal, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, H, N, D)) * 3 for _ in range(3))
    io = flash.IOCounter()
    out = flash.flash_attention_numpy(q, k, v, causal=causal, block_size=br, block_size_k=bc, io=io)
    np.testing.assert_allclose(
        out, reference.attention(q, k, v, causal=causal), rtol=1e-10, atol=1e-12
    )
    assert io.total == cost.tiled_attention_io(N, D, br, bc, causal=causal, heads=H, batch=B)
    io_naive = flash.IOCounter()
    np.testing.assert_allclose(
        flash.standard_attention_numpy(q, k, v, causal=causal, io=io_naive),
        out,
        rtol=1e-10,
        atol=1e-12,
    )
    assert io_naive.total == cost.standard_attention_io(N, D, heads=H, batch=B)


CASES = [(1, 1, 1, 4), (2, 3, 17, 8), (1, 2, 64, 16), (2, 2, 130, 32)]


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("block_size", [7, 16, 64, 200])
def test_torch_flash_float32_equals_exact(case, causal, block_size, device):
    g = torch.Generator().manual_seed(sum(case))
    q, k, v = (torch.randn(case, generator=g) for _ in range(3))
    ref = reference.attention(
        q.double().numpy(), k.double().numpy(), v.double().numpy(), causal=causal
    )
    out = attnbook.attention(
        q.to(device),
        k.to(device),
        v.to(device),
        method="flash",
        causal=causal,
        block_size=block_size,
    )
    assert out.device.type == device.type and out.shape == case
    assert rel_error(out, ref) < 1e-5


@settings(max_examples=15, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 2),
    N=st.integers(1, 30),
    M=st.integers(1, 30),
    D=st.integers(1, 6),
    bs=st.integers(1, 12),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_torch_flash_outputs_and_gradients_match_dense(B, H, N, M, D, bs, causal, seed):
    M = N if causal else M
    g = torch.Generator().manual_seed(seed)
    base = [torch.randn(B, H, n, D, generator=g, dtype=torch.float64) for n in (N, M, M)]
    xs = [b.clone().requires_grad_() for b in base]
    ys = [b.clone().requires_grad_() for b in base]
    out = flash.flash_attention(*xs, causal=causal, block_size=bs)
    ref = dense_attention(*ys, causal=causal)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    for a, b in zip(xs, ys):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gradcheck_flash(causal):
    g = torch.Generator().manual_seed(5)
    q, k, v = (
        torch.randn(1, 2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: flash.flash_attention(a, b, c, causal=causal, block_size=3), (q, k, v)
    )


@pytest.mark.parametrize("n, bs", [(100, 16), (128, 32), (257, 64)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_flops_match_formula(n, bs, causal):
    q, k, v = (torch.randn(1, 2, n, 8) for _ in range(3))
    counter_flops = count_flops(
        lambda: flash.flash_attention(q, k, v, causal=causal, block_size=bs)
    )
    assert counter_flops == cost.flash_flops(n, 8, bs, causal, heads=2)


def test_io_bound_shape():
    n, d = 8192, 64
    srams = [2**k for k in range(12, 19)]
    tiled = [cost.tiled_attention_io(n, d, *cost.flash_block_sizes(d, m)) for m in srams]
    assert all(b < a for a, b in zip(tiled, tiled[1:]))  # more SRAM, fewer HBM accesses
    ratios = [
        t / cost.flash_io_bound(n, d, m) for t, m in zip(tiled[2:], srams[2:])
    ]  # once B_r = d no longer caps
    assert max(ratios) / min(ratios) < 1.5  # Θ(n²d²/M): the ratio stays bounded
    # tiling beats the n² traffic of standard attention only once M is a few d² (here from M = 2d²)
    assert [t < cost.standard_attention_io(n, d) for t in tiled] == [m >= 2 * d * d for m in srams]


def test_sdpa_kernel_is_reported():
    q, k, v = (torch.randn(1, 2, 64, 16) for _ in range(3))
    name = flash.sdpa_kernel_used(q, k, v, causal=True)
    assert name.startswith("aten::")
    backends = flash.sdpa_backends(q, k, v)
    assert backends["MATH"] is True and set(backends) >= {
        "FLASH_ATTENTION",
        "EFFICIENT_ATTENTION",
        "MATH",
    }


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (
            lambda: flash.flash_attention(
                *(torch.ones(1, 1, 4, 2) for _ in range(3)), block_size=0
            ),
            ValueError,
            "block_size",
        ),
        (
            lambda: flash.flash_attention(
                torch.ones(1, 1, 4, 2), torch.ones(1, 1, 5, 2), torch.ones(1, 1, 5, 2), causal=True
            ),
            ValueError,
            "causal",
        ),
        (
            lambda: flash.flash_attention_numpy(
                *(np.ones((1, 1, 4, 2)) for _ in range(3)), block_size=-2
            ),
            ValueError,
            "block_size",
        ),
        (
            lambda: flash.flash_attention_numpy(
                *(np.ones((1, 1, 4, 2)) for _ in range(3)), block_size_k=0
            ),
            ValueError,
            "block_size_k",
        ),
        (
            lambda: flash.flash_attention_numpy(
                np.ones((1, 4, 2)), np.ones((1, 1, 4, 2)), np.ones((1, 1, 4, 2))
            ),
            ValueError,
            "q",
        ),
        (lambda: cost.flash_block_sizes(64, 0), ValueError, "sram"),
        (lambda: cost.tiled_attention_io(64, 8, 0), ValueError, "block_size"),
    ],
)
def test_bad_inputs(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_flash_rejects_bad_option_through_registry():
    q, k, v = (torch.randn(1, 1, 8, 4) for _ in range(3))
    with pytest.raises(ValueError, match="block_size"):
        attnbook.attention(q, k, v, method="flash", block_size=0)
    with pytest.raises(ValueError, match="window"):
        attnbook.attention(q, k, v, method="flash", window=3)
