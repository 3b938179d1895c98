"""Chapter 1: torch dense attention against the NumPy reference, gradients, devices, bad input."""

import numpy as np
import pytest
import torch
from helpers import case_id
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import reference
from attnbook.checks import rel_error
from attnbook.mechanisms.dense import MultiHeadSelfAttention, attention_weights, dense_attention

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("method", ["dense", "sdpa"])
def test_torch_matches_numpy_reference(shape, causal, method, device):
    g = torch.Generator().manual_seed(sum(shape))
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    ref = reference.attention(
        q.double().numpy(), k.double().numpy(), v.double().numpy(), causal=causal
    )
    out = attnbook.attention(q.to(device), k.to(device), v.to(device), method=method, causal=causal)
    assert out.device.type == device.type and out.shape == shape
    err = rel_error(out, ref)
    assert err < 1e-5


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 20),
    M=st.integers(1, 20),
    D=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_cross_attention_shapes_float64(B, H, N, M, D, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, M, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, M, D + 1, generator=g, dtype=torch.float64)
    ref = reference.attention(q.numpy(), k.numpy(), v.numpy())
    np.testing.assert_allclose(dense_attention(q, k, v).numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: dense_attention(a, b, c, causal=causal), (q, k, v)
    )


def test_gradients_of_dense_and_sdpa_agree():
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(2, 2, 33, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    grads = []
    for method in ("dense", "sdpa"):
        xs = [b.clone().requires_grad_() for b in base]
        (attnbook.attention(*xs, method=method, causal=True) ** 2).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_causal_weights_upper_triangle_is_exactly_zero():
    q = torch.randn(1, 1, 6, 4)
    w = attention_weights(q, q, causal=True)[0, 0]
    assert torch.all(w.triu(1) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(6))


def test_module_matches_functional_heads(device):
    torch.manual_seed(0)
    m = MultiHeadSelfAttention(16, 4, causal=True).to(device)
    x = torch.randn(2, 9, 16, device=device)
    q, k, v = m.qkv(x).chunk(3, -1)
    heads = dense_attention(m.split_heads(q), m.split_heads(k), m.split_heads(v), causal=True)
    expected = m.out(heads.transpose(1, 2).reshape(2, 9, 16))
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: (torch.ones(1, 1, 0, 2),) * 3, ValueError, "q must not be empty"),
        (
            lambda: (torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 3), torch.ones(1, 1, 2, 2)),
            ValueError,
            "k must have head dimension",
        ),
        (
            lambda: (torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 3, 2)),
            ValueError,
            "v must have as many positions",
        ),
        (lambda: (torch.ones(1, 2, 2),) * 3, ValueError, "q must have 4 dimensions"),
        (lambda: (torch.ones(1, 1, 2, 2, dtype=torch.long),) * 3, TypeError, "floating-point"),
        (lambda: (torch.full((1, 1, 2, 2), float("nan")),) * 3, ValueError, "NaN"),
        (
            lambda: (
                torch.ones(1, 1, 2, 2),
                torch.ones(1, 1, 2, 2, dtype=torch.float64),
                torch.ones(1, 1, 2, 2),
            ),
            TypeError,
            "share a dtype",
        ),
        (lambda: (np.ones((1, 1, 2, 2)),) * 3, TypeError, "q must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        attnbook.attention(*make())


def test_registry_rejects_unknown_method_and_option():
    q = torch.ones(1, 1, 2, 2)
    with pytest.raises(ValueError, match="method must be one of"):
        attnbook.attention(q, q, q, method="nope")
    with pytest.raises(ValueError, match="unknown option 'window'"):
        attnbook.attention(q, q, q, method="dense", window=3)
    with pytest.raises(TypeError, match="causal must be a bool"):
        attnbook.attention(q, q, q, causal=1)


def test_mask_checks_and_module_arguments():
    q = torch.ones(1, 1, 3, 2)
    with pytest.raises(ValueError, match=r"mask must end in shape \(3, 3\)"):
        dense_attention(q, q, q, mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="d_model \\(10\\) must be divisible by heads \\(3\\)"):
        MultiHeadSelfAttention(10, 3)
    with pytest.raises(ValueError, match="x must have last dimension d_model=8"):
        MultiHeadSelfAttention(8, 2)(torch.ones(1, 3, 4))
