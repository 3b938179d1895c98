"""Chapter 4: Linformer — torch against the NumPy reference, the projections, bad input."""

import numpy as np
import pytest
import torch
from helpers import case_id, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import reference
from attnbook.checks import rel_error
from attnbook.mechanisms import linformer

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
def test_registered_method_matches_numpy_reference(shape, device):
    g = torch.Generator().manual_seed(sum(shape))
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    rank = max(1, shape[2] // 2)
    ref = linformer.linformer_numpy(*to_numpy(q, k, v), rank=rank, seed=5)
    out = attnbook.attention(
        q.to(device), k.to(device), v.to(device), method="linformer", rank=rank, seed=5
    )
    assert out.device.type == device.type and out.shape == shape
    assert rel_error(out, ref) < 1e-5


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 30),
    M=st.integers(1, 30),
    D=st.integers(1, 8),
    frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_torch_matches_reference_float64_cross_attention(B, H, N, M, D, frac, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, M, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, M, D + 1, generator=g, dtype=torch.float64)
    rank = max(1, int(frac * M))
    ref = linformer.linformer_numpy(*to_numpy(q, k, v), rank=rank, seed=seed)
    np.testing.assert_allclose(
        linformer.linformer_attention(q, k, v, rank=rank, seed=seed).numpy(),
        ref,
        rtol=1e-10,
        atol=1e-12,
    )


def test_projections_are_seeded_gaussian_with_variance_one_over_n():
    E, F = linformer.projections(2000, 50, seed=2)
    assert E.shape == F.shape == (50, 2000)
    assert (
        abs(E.mean()) < 1e-3 and abs(E.var() * 2000 - 1) < 0.03 and abs(F.var() * 2000 - 1) < 0.03
    )
    np.testing.assert_array_equal(E, linformer.projections(2000, 50, seed=2)[0])
    assert not np.allclose(E, F) and not np.allclose(E, linformer.projections(2000, 50, seed=3)[0])


def test_projection_matches_the_formula_written_out():
    rng = np.random.default_rng(0)
    q, k, v = (
        rng.normal(size=(1, 1, 9, 4)),
        rng.normal(size=(1, 1, 12, 4)),
        rng.normal(size=(1, 1, 12, 3)),
    )
    E, F = linformer.projections(12, 5, seed=1)
    expected = reference.scaled_dot_product_attention(q[0, 0], E @ k[0, 0], F @ v[0, 0])[0]
    np.testing.assert_allclose(
        linformer.linformer_numpy(q, k, v, rank=5, seed=1)[0, 0], expected, rtol=1e-12
    )


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: linformer.linformer_attention(a, b, c, rank=3), (q, k, v), fast_mode=True
    )


def test_registry_lists_linformer_with_its_options():
    info = attnbook.method_info("linformer")
    assert not info.exact and set(info.options) == {"rank", "seed"}


@pytest.mark.parametrize(
    "call, error, word",
    [
        (
            lambda q: attnbook.attention(q, q, q, method="linformer", causal=True, rank=2),
            ValueError,
            "causal",
        ),
        (lambda q: attnbook.attention(q, q, q, method="linformer", rank=7), ValueError, "rank"),
        (lambda q: attnbook.attention(q, q, q, method="linformer", rank=0), ValueError, "rank"),
        (lambda q: attnbook.attention(q, q, q, method="linformer", rank=-2), ValueError, "rank"),
        (lambda q: attnbook.attention(q, q, q, method="linformer", rank=2.0), TypeError, "rank"),
        (
            lambda q: attnbook.attention(q, q, q, method="linformer", rank=2, seed=-1),
            ValueError,
            "seed",
        ),
        (
            lambda q: linformer.linformer_numpy(*(q.numpy(),) * 3, causal=True, rank=2),
            ValueError,
            "causal",
        ),
        (lambda q: linformer.linformer_numpy(*(q.numpy(),) * 3, rank=9), ValueError, "rank"),
        (lambda q: linformer.projections(0, 1), ValueError, "n"),
    ],
    ids=[
        "causal",
        "k-above-n",
        "k0",
        "k-neg",
        "k-float",
        "seed-neg",
        "naive-causal",
        "naive-k",
        "n0",
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, word):
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(error, match=word):
        call(q)
