"""Chapter 4: linear attention (φ = elu + 1) — quadratic, prefix-sum, chunked and recurrent forms
agree."""

import numpy as np
import pytest
import torch
from helpers import case_id, random_qkv, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook.checks import rel_error
from attnbook.mechanisms import linear

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]


def test_elu_feature_numpy_matches_torch_and_is_positive():
    x = np.linspace(-30, 5, 101)
    f = linear.elu_feature(x)
    np.testing.assert_allclose(
        f, linear.elu_feature(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-15
    )
    assert np.all(f > 0)


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("causal", [False, True])
def test_registered_method_matches_numpy_reference(shape, causal, device):
    q, k, v = random_qkv(shape, sum(shape), dtype=torch.float32)
    ref = linear.linear_attention_numpy(*to_numpy(q, k, v), causal=causal)
    out = attnbook.attention(
        q.to(device), k.to(device), v.to(device), method="linear", causal=causal
    )
    assert out.device.type == device.type and out.shape == shape
    assert rel_error(out, ref) < 1e-5


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 40),
    D=st.integers(1, 8),
    Dv=st.integers(1, 6),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_all_causal_forms_agree_float64(B, H, N, D, Dv, chunk, seed):
    q, k, v = random_qkv((B, H, N, D), seed, dv=Dv)
    quadratic = linear.linear_attention_numpy(*to_numpy(q, k, v), causal=True)
    forms = {
        "numpy recurrent": linear.linear_recurrent_numpy(*to_numpy(q, k, v)),
        "prefix sums": linear.linear_attention_cumsum(q, k, v).numpy(),
        "chunked": linear.linear_attention(q, k, v, causal=True, chunk_size=chunk).numpy(),
        "step by step": attnbook.decode("linear", q, k, v).numpy(),
    }
    for name, out in forms.items():
        np.testing.assert_allclose(out, quadratic, rtol=1e-10, atol=1e-12, err_msg=name)


@settings(max_examples=15, deadline=None)
@given(N=st.integers(1, 30), M=st.integers(1, 30), D=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_non_causal_cross_attention_float64(N, M, D, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 2, N, D, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, M, D, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, M, D + 2, generator=g, dtype=torch.float64)
    out, w = linear.linear_attention_numpy(*to_numpy(q, k, v), return_weights=True)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    assert np.all(w > 0)
    np.testing.assert_allclose(
        linear.linear_attention(q, k, v).numpy(), out, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal):
    q, k, v = (x.requires_grad_() for x in random_qkv((1, 2, 7, 3), 0))
    assert torch.autograd.gradcheck(
        lambda a, b, c: linear.linear_attention(a, b, c, causal=causal, chunk_size=3),
        (q, k, v),
        fast_mode=True,
    )


def test_gradients_of_chunked_and_prefix_sum_forms_agree():
    base = random_qkv((2, 2, 45, 6), 3)
    grads = []
    for fn in (
        lambda a, b, c: linear.linear_attention(a, b, c, causal=True, chunk_size=8),
        linear.linear_attention_cumsum,
    ):
        xs = [x.clone().requires_grad_() for x in base]
        (fn(*xs) ** 2).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_prefill_then_step_continues_the_sequence():
    q, k, v = random_qkv((2, 3, 33, 5), 4)
    full = linear.linear_attention(q, k, v, causal=True)
    state = linear.linear_prefill(k[:, :, :32], v[:, :, :32])
    state, o = linear.linear_step(state, q[:, :, 32], k[:, :, 32], v[:, :, 32])
    torch.testing.assert_close(o, full[:, :, 32], rtol=1e-10, atol=1e-12)


def test_decoding_state_does_not_grow_with_context():
    sizes = []
    for n in (16, 256, 4096):
        q, k, v = random_qkv((1, 2, n, 8), n, dtype=torch.float32)
        state, _ = linear.linear_step(
            linear.linear_prefill(k, v), q[:, :, 0], k[:, :, 0], v[:, :, 0]
        )
        sizes.append(state.S.numel() + state.z.numel())
    assert sizes == [2 * 8 * 8 + 2 * 8] * 3


def test_registry_lists_linear_with_its_option():
    info = attnbook.method_info("linear")
    assert "linear" in attnbook.methods() and not info.exact and set(info.options) == {"chunk_size"}


@pytest.mark.parametrize(
    "call, error, word",
    [
        (
            lambda q: attnbook.attention(q, q, q, method="linear", causal=True, chunk_size=0),
            ValueError,
            "chunk_size",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="linear", chunk_size=2.5),
            TypeError,
            "chunk_size",
        ),
        (lambda q: attnbook.attention(q, q, q, method="linear", window=3), ValueError, "window"),
        (
            lambda q: linear.linear_attention(q, q[:, :, :3], q[:, :, :3], causal=True),
            ValueError,
            "causal",
        ),
        (
            lambda q: linear.linear_step(None, q[:, :, 0], q[:, :, 0, :2], q[:, :, 0]),
            ValueError,
            "k_t",
        ),
        (
            lambda q: linear.linear_step(None, q[:, :, 0], q[:, :, 0], q[:, :, 0, 0]),
            ValueError,
            "v_t",
        ),
        (
            lambda q: linear.linear_step((1, 2), q[:, :, 0], q[:, :, 0], q[:, :, 0]),
            ValueError,
            "state",
        ),
        (
            lambda q: linear.linear_step(None, q[:, :, 0].numpy(), q[:, :, 0], q[:, :, 0]),
            TypeError,
            "q_t",
        ),
        (
            lambda q: linear.linear_attention_numpy(q.numpy()[0], q.numpy(), q.numpy()),
            ValueError,
            "q",
        ),
    ],
    ids=[
        "chunk0",
        "chunk-float",
        "unknown-option",
        "causal-cross",
        "step-k",
        "step-v",
        "step-state",
        "step-numpy",
        "naive-ndim",
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, word):
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(error, match=word):
        call(q)
