"""Chapter 4: gated linear attention — chunked log-space form, NumPy recurrence, fla-core's naive
reference and the decoding step agree."""

import numpy as np
import pytest
import torch
from helpers import case_id, random_qkv, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import cost
from attnbook.checks import rel_error
from attnbook.measure import count_flops
from attnbook.mechanisms import gla

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]


def _gates(shape, seed, dtype=torch.float64, scale=1.0):
    """gk ≤ 0 as GLA makes it: log-sigmoid of random logits (times ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    return scale * torch.nn.functional.logsigmoid(torch.randn(*shape, generator=g, dtype=dtype))


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 45),
    D=st.integers(1, 8),
    Dv=st.integers(1, 6),
    chunk=st.integers(1, 20),
    scale=st.sampled_from([0.01, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_chunked_form_equals_the_numpy_recurrence_float64(B, H, N, D, Dv, chunk, scale, seed):
    q, k, v = random_qkv((B, H, N, D), seed, dv=Dv)
    gk = _gates((B, H, N, D), seed, scale=scale)
    out, S = gla.gla_chunked(q / D**0.5, k, v, gk, chunk_size=chunk)
    ref, S_ref = gla.gla_numpy(*to_numpy(q, k, v), gk=gk.numpy(), return_state=True)
    assert out.shape == ref.shape and S.shape == S_ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(S.numpy(), S_ref, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
def test_registered_method_matches_numpy_with_default_gates(shape, device):
    q, k, v = random_qkv(shape, sum(shape), dtype=torch.float32)
    ref = gla.gla_numpy(*to_numpy(q, k, v))
    out = attnbook.attention(q.to(device), k.to(device), v.to(device), method="gla", causal=True)
    assert out.device.type == device.type and out.shape == shape
    assert rel_error(out, ref) < 1e-5


def test_default_gates_give_retention():
    q, k, v = random_qkv((2, 4, 70, 8), 2)
    a = attnbook.attention(q, k, v, method="gla", causal=True)
    b = attnbook.attention(q, k, v, method="retention", causal=True)
    torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 50, 16), (1, 2, 128, 32), (2, 1, 7, 64)], ids=case_id)
def test_equals_fla_core_naive_reference_float32(shape):
    naive = pytest.importorskip("fla.ops.gla.naive")
    q, k, v = random_qkv(shape, 21, dtype=torch.float32)
    gk = _gates(shape, 22, dtype=torch.float32)
    ref, S_ref = naive.naive_recurrent_gla(
        *(x.transpose(1, 2) for x in (q, k, v, gk)), output_final_state=True
    )  # (B, T, H, D) layout
    ref = ref.transpose(1, 2)
    out = attnbook.attention(q, k, v, method="gla", causal=True, gk=gk)
    _, S = gla.gla_chunked(q, k, v, gk)
    assert out.shape == ref.shape and S.shape == S_ref.shape
    assert rel_error(out, ref) < 1e-5 and rel_error(S, S_ref) < 1e-5


def test_strong_gates_stay_finite_in_float32():
    """Gates of −50 per token would overflow e^{−G} in a naive chunk form; log space does not."""
    q, k, v = random_qkv((1, 2, 100, 8), 3, dtype=torch.float32)
    gk = _gates((1, 2, 100, 8), 4, dtype=torch.float32, scale=50.0)
    out = attnbook.attention(q, k, v, method="gla", causal=True, gk=gk, chunk_size=64)
    ref = gla.gla_numpy(*to_numpy(q, k, v), gk=gk.double().numpy())
    assert rel_error(out, ref) < 1e-5


def test_gradcheck_float64_through_inputs_and_gates():
    q, k, v = random_qkv((1, 2, 7, 3), 0)
    args = tuple(x.clone().requires_grad_() for x in (q, k, v, _gates((1, 2, 7, 3), 1)))
    assert torch.autograd.gradcheck(
        lambda a, b, c, gg: gla.gla_attention(a, b, c, gk=gg, chunk_size=3), args, fast_mode=True
    )


def test_gradients_equal_autograd_of_the_token_by_token_recurrence():
    base = list(random_qkv((2, 2, 37, 6), 3)) + [_gates((2, 2, 37, 6), 4)]
    grads = []
    for chunked in (True, False):
        xs = [x.clone().requires_grad_() for x in base]
        q, k, v, gk = xs
        if chunked:
            out = gla.gla_attention(q, k, v, gk=gk, chunk_size=8)
        else:
            out = attnbook.decode("gla", q, k, v, gk=gk)
        (out**2).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_decode_and_prefill_with_per_token_gates():
    q, k, v = random_qkv((2, 3, 33, 5), 7)
    gk = _gates((2, 3, 33, 5), 8)
    parallel = attnbook.attention(q, k, v, method="gla", causal=True, gk=gk, chunk_size=8)
    stepped = attnbook.decode("gla", q, k, v, gk=gk, chunk_size=8)
    assert stepped.shape == parallel.shape and rel_error(stepped, parallel) < 1e-12
    state = gla.gla_prefill(k[:, :, :32], v[:, :, :32], gk[:, :, :32])
    assert state.t == 32
    _, o = gla.gla_step(state, q[:, :, 32], k[:, :, 32], v[:, :, 32], gk[:, :, 32])
    torch.testing.assert_close(o, parallel[:, :, 32], rtol=1e-10, atol=1e-12)


def test_registry_lists_gla_with_its_options():
    info = attnbook.method_info("gla")
    assert "gla" in attnbook.methods(causal=True) and "gla" not in attnbook.methods(causal=False)
    assert set(info.options) == {"gk", "chunk_size"} and not info.exact


G3 = torch.full((1, 2, 6, 4), -0.5)


@pytest.mark.parametrize(
    "call, error, word",
    [
        (lambda q: attnbook.attention(q, q, q, method="gla"), ValueError, "causal"),
        (
            lambda q: attnbook.attention(q, q, q, method="gla", causal=True, chunk_size=1.5),
            TypeError,
            "chunk_size",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="gla", causal=True, gk=-G3),
            ValueError,
            "gk",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="gla", causal=True, gk=G3 * np.inf),
            ValueError,
            "gk",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="gla", causal=True, gk=G3[..., 0]),
            ValueError,
            "gk",
        ),
        (
            lambda q: gla.gla_step(None, q[:, :, 0], q[:, :, 0], q[:, :, 0], G3[:, :, 0, :2]),
            ValueError,
            "gk",
        ),
        (
            lambda q: gla.gla_step((1,), q[:, :, 0], q[:, :, 0], q[:, :, 0]),
            ValueError,
            "state",
        ),
        (
            lambda q: gla.gla_numpy(q.numpy(), q.numpy(), q.numpy(), gk=-G3.numpy()),
            ValueError,
            "gk",
        ),
    ],
    ids=[
        "not-causal",
        "chunk-float",
        "gk-positive",
        "gk-inf",
        "gk-shape",
        "step-gk",
        "step-state",
        "numpy-gk",
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, word):
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(error, match=word):
        call(q)


@pytest.mark.parametrize(
    "n, d_k, d_v, chunk", [(128, 16, 16, 32), (100, 8, 12, 16), (37, 4, 4, 64)]
)
def test_flops_formula_equals_the_flop_counter(n, d_k, d_v, chunk):
    g = torch.Generator().manual_seed(n)
    q, k = (torch.randn(2, 3, n, d_k, generator=g) for _ in range(2))
    v = torch.randn(2, 3, n, d_v, generator=g)
    counted = count_flops(
        lambda: attnbook.attention(q, k, v, method="gla", causal=True, chunk_size=chunk)
    )
    assert counted == cost.gla_chunked_flops(n, d_k, d_v, chunk_size=chunk, heads=3, batch=2)
    state = gla.gla_prefill(k, v)
    nbytes = state.S.numel() * state.S.element_size()
    assert nbytes == cost.recurrent_state_bytes(1, 3, d_k, d_v, batch=2)
