"""attention() and decode() through every record: shapes, exactness, refusals, decoding, bad
input found in review (issue 23)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import cost, reference
from attnbook.checks import rel_error
from attnbook.mechanisms.dense import MultiHeadSelfAttention
from attnbook.registry import decode, method_info, methods


def _qkv(B, H, N, D, seed=0, M=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    M = N if M is None else M
    return (
        torch.randn(B, H, N, D, generator=g, dtype=dtype),
        torch.randn(B, H, M, D, generator=g, dtype=dtype),
        torch.randn(B, H, M, D, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("method", methods(device="cpu"))
@pytest.mark.parametrize("causal", [False, True])
def test_every_method_returns_the_right_shape_and_exact_ones_equal_dense(method, causal):
    info = method_info(method)
    q, k, v = _qkv(2, 2, 70, 8, seed=len(method))  # N >= linformer's default k = 64
    if (info.causal == "causal" and not causal) or (info.causal == "noncausal" and causal):
        with pytest.raises(ValueError, match="causal"):
            attnbook.attention(q, k, v, method=method, causal=causal)
        return
    out = attnbook.attention(q, k, v, method=method, causal=causal)
    assert tuple(out.shape) == (2, 2, 70, 8)  # shapes first
    if info.exact:
        ref = reference.attention(*(x.double().numpy() for x in (q, k, v)), causal=causal)
        assert rel_error(out, ref) < 1e-5


@pytest.mark.parametrize("method", methods(exact=True, device="cpu"))
def test_every_exact_method_refuses_causal_with_more_keys_than_queries(method):
    q, k, v = _qkv(1, 2, 8, 4, M=12)
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        attnbook.attention(q, k, v, method=method, causal=True)
    out = attnbook.attention(
        q, k, v, method=method, causal=False
    )  # non-causal cross-attention is fine
    assert rel_error(out, reference.attention(*(x.double().numpy() for x in (q, k, v)))) < 1e-5


@settings(max_examples=15, deadline=None)
@given(
    method=st.sampled_from([m for m in methods() if method_info(m).step_target is not None]),
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 24),
    D=st.integers(1, 8),
    seed=st.integers(0, 999),
)
def test_decode_equals_the_parallel_causal_form(method, B, H, N, D, seed):
    q, k, v = _qkv(B, H, N, D, seed=seed, dtype=torch.float64)
    parallel = attnbook.attention(q, k, v, method=method, causal=True)
    stepped = decode(method, q, k, v)
    assert stepped.shape == parallel.shape
    assert rel_error(stepped, parallel) < 1e-10


@pytest.mark.parametrize(
    "method", [m for m in methods() if method_info(m).prefill_target is not None]
)
def test_prefill_then_step_continues_the_sequence(method):
    info = method_info(method)
    q, k, v = _qkv(1, 2, 10, 4, seed=3, dtype=torch.float64)
    state = info.prefill(k[:, :, :9], v[:, :, :9])
    _, o = info.step(state, q[:, :, 9], k[:, :, 9], v[:, :, 9])
    full = attnbook.attention(q, k, v, method=method, causal=True)
    assert o.shape == full[:, :, 9].shape and rel_error(o, full[:, :, 9]) < 1e-10


def test_decode_refuses_methods_without_a_step():
    q, k, v = _qkv(1, 1, 4, 2)
    with pytest.raises(ValueError, match="no recurrent step"):
        decode("performer", q, k, v)


def test_elementwise_order_zero_non_causal_keeps_every_query():
    q, k, v = _qkv(2, 2, 7, 4)
    out = attnbook.attention(q, k, v, method="elementwise", order=0)
    assert out.shape == (2, 2, 7, 4)
    mha = MultiHeadSelfAttention(8, 2, method="elementwise", causal=False, order=0)
    assert mha(torch.randn(1, 5, 8)).shape == (1, 5, 8)


@pytest.mark.parametrize("method", ["performer", "elementwise", "linear"])
def test_large_inputs_give_a_named_error_not_nan(method):
    q, k, v = _qkv(1, 2, 64, 16, seed=1)
    try:
        out = attnbook.attention(q * 100, k * 100, v, method=method, causal=True)
    except FloatingPointError as err:  # overflow names max |q|, underflow the normaliser
        assert method in str(err) and ("max |q|" in str(err) or "underflow" in str(err))
    else:
        assert torch.isfinite(out).all()


def test_bool_arguments_accept_numpy_bools_and_refuse_strings():
    q, k, v = _qkv(1, 1, 4, 2)
    torch.testing.assert_close(
        attnbook.attention(q, k, v, causal=np.bool_(True)), attnbook.attention(q, k, v, causal=True)
    )
    X, W = np.ones((3, 2)), np.ones((2, 2))
    with pytest.raises(TypeError, match="causal must be a bool"):
        reference.self_attention(X, W, W, W, causal="yes")
    with pytest.raises(TypeError, match="causal must be a bool"):
        attnbook.attention(q, k, v, causal="yes")
    with pytest.raises(TypeError, match="bias must be a bool"):
        cost.gpt_params(2, 8, 10, bias="no")


def test_multi_head_attention_validates_at_construction():
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        MultiHeadSelfAttention(8, 2, bogus=1)
    with pytest.raises(TypeError, match="causal must be a bool"):
        MultiHeadSelfAttention(8, 2, causal="no")
    with pytest.raises(ValueError, match="no causal form"):
        MultiHeadSelfAttention(8, 2, method="linformer", causal=True)
