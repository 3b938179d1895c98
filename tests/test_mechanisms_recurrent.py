"""Chapter 4: retention and the selective scan — parallel, chunked and recurrent forms agree."""

import numpy as np
import pytest
import torch
from helpers import case_id, random_qkv, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook.checks import rel_error
from attnbook.mechanisms import recurrent

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]
# name -> (numpy parallel, numpy recurrent, torch chunked, torch parallel, step, option name, value)
METHODS = {
    "retention": (
        recurrent.retention_numpy,
        recurrent.retention_recurrent_numpy,
        recurrent.retention_attention,
        recurrent.retention_parallel,
        recurrent.retention_step,
        "gamma",
        0.9,
    ),
    "selective_scan": (
        recurrent.selective_scan_numpy,
        recurrent.selective_scan_recurrent_numpy,
        recurrent.selective_scan_attention,
        recurrent.selective_scan_parallel,
        recurrent.selective_scan_step,
        "seed",
        4,
    ),
}


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("method", list(METHODS))
def test_registered_method_float32_matches_numpy_reference(shape, method, device):
    q, k, v = random_qkv(shape, sum(shape), dtype=torch.float32)
    ref = METHODS[method][0](*to_numpy(q, k, v))
    out = attnbook.attention(q.to(device), k.to(device), v.to(device), method=method, causal=True)
    assert out.device.type == device.type and out.shape == shape
    assert rel_error(out, ref) < 1e-5


@settings(max_examples=20, deadline=None)
@given(
    method=st.sampled_from(list(METHODS)),
    B=st.integers(1, 2),
    H=st.integers(1, 4),
    N=st.integers(1, 40),
    D=st.integers(1, 8),
    Dv=st.integers(1, 6),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_parallel_chunked_and_recurrent_forms_agree_float64(method, B, H, N, D, Dv, chunk, seed):
    naive_par, naive_rec, chunked, parallel, step, opt, value = METHODS[method]
    q, k, v = random_qkv((B, H, N, D), seed, dv=Dv)
    ref = naive_par(*to_numpy(q, k, v), **{opt: value})
    forms = {
        "numpy recurrent": naive_rec(*to_numpy(q, k, v), **{opt: value}),
        "torch parallel": parallel(q, k, v, **{opt: value}).numpy(),
        "torch chunked": chunked(q, k, v, chunk_size=chunk, **{opt: value}).numpy(),
        "torch recurrent": attnbook.decode(method, q, k, v, **{opt: value}).numpy(),
    }
    for name, out in forms.items():
        np.testing.assert_allclose(
            out, ref, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(ref).max()), err_msg=name
        )


@pytest.mark.parametrize("method", list(METHODS))
def test_float32_recurrent_equals_chunked_to_rounding(method):
    _, _, chunked, _, step, _, _ = METHODS[method]
    q, k, v = random_qkv((2, 4, 300, 16), 9, dtype=torch.float32)
    a, b = chunked(q, k, v), attnbook.decode(method, q, k, v)
    assert rel_error(a, b) < 1e-5


def test_retention_two_tokens_by_hand():
    q, k, v = random_qkv((1, 1, 2, 3), 1)
    out = recurrent.retention_attention(q, k, v, gamma=0.5)[0, 0]
    q0, q1, k0, k1, v0, v1 = q[0, 0, 0], q[0, 0, 1], k[0, 0, 0], k[0, 0, 1], v[0, 0, 0], v[0, 0, 1]
    s = 3**-0.5
    torch.testing.assert_close(out[0], s * (q0 @ k0) * v0)
    torch.testing.assert_close(out[1], s * (0.5 * (q1 @ k0) * v0 + (q1 @ k1) * v1))


def test_default_gammas_are_retnets_multiscale_heads():
    np.testing.assert_allclose(recurrent.retention_gammas(3), [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128])
    q, k, v = random_qkv((1, 3, 10, 4), 2)
    for h, gamma in enumerate(recurrent.retention_gammas(3)):
        torch.testing.assert_close(
            recurrent.retention_attention(q, k, v)[:, h],
            recurrent.retention_attention(
                q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], gamma=gamma
            )[:, 0],
        )


def test_selective_scan_decay_is_input_dependent_and_in_unit_interval():
    q, k, v = random_qkv((1, 2, 50, 8), 3)
    _, _, xbar, log_a = recurrent._torch_scan_args(q, k, v, True, 0)
    assert torch.equal(recurrent.scan_steps(k)[1], log_a)
    a = log_a.exp()
    assert torch.all((a > 0) & (a < 1)) and a.std() > 1e-3
    A, w = recurrent.scan_parameters(2, 8, 0)
    dt = torch.nn.functional.softplus(k @ torch.tensor(w) + np.log(np.expm1(0.1)))
    torch.testing.assert_close(log_a, dt * torch.tensor(A)[None, :, None])
    torch.testing.assert_close(xbar, dt[..., None] * v)


@pytest.mark.parametrize("method", list(METHODS))
def test_gradcheck_float64_chunked_and_recurrent(method):
    _, _, chunked, _, step, _, _ = METHODS[method]
    q, k, v = (x.requires_grad_() for x in random_qkv((1, 2, 7, 3), 0))
    assert torch.autograd.gradcheck(
        lambda a, b, c: chunked(a, b, c, chunk_size=3), (q, k, v), fast_mode=True
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: attnbook.decode(method, a, b, c), (q, k, v), fast_mode=True
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_gradients_of_chunked_and_parallel_forms_agree(method):
    _, _, chunked, parallel, _, _, _ = METHODS[method]
    base = random_qkv((2, 2, 45, 6), 5)
    grads = []
    for fn in (lambda a, b, c: chunked(a, b, c, chunk_size=8), parallel):
        xs = [x.clone().requires_grad_() for x in base]
        (fn(*xs) ** 2).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", list(METHODS))
def test_decoding_state_does_not_grow_with_context(method):
    step = METHODS[method][4]
    sizes = []
    for n in (8, 64, 512):
        q, k, v = random_qkv((1, 2, n, 4), n, dtype=torch.float32)
        state = None
        for t in range(n):
            state, _ = step(state, q[:, :, t], k[:, :, t], v[:, :, t])
        sizes.append(state.S.numel())
    assert sizes == [2 * 4 * 4] * 3


@pytest.mark.parametrize(
    "call, error, word",
    [
        (lambda q: attnbook.attention(q, q, q, method="retention"), ValueError, "causal"),
        (lambda q: attnbook.attention(q, q, q, method="selective_scan"), ValueError, "causal"),
        (
            lambda q: attnbook.attention(q, q, q, method="retention", causal=True, gamma=0.0),
            ValueError,
            "gamma",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="retention", causal=True, gamma=1.5),
            ValueError,
            "gamma",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="retention", causal=True, gamma="0.9"),
            TypeError,
            "gamma",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="retention", causal=True, chunk_size=0),
            ValueError,
            "chunk_size",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="selective_scan", causal=True, seed=-1),
            ValueError,
            "seed",
        ),
        (
            lambda q: recurrent.retention_attention(q, q[:, :, :3], q[:, :, :3]),
            ValueError,
            "queries",
        ),
        (
            lambda q: recurrent.selective_scan_numpy(*(q.numpy(),) * 3, causal=False),
            ValueError,
            "causal",
        ),
        (
            lambda q: recurrent.retention_step(None, q[:, :, 0], q[:, :, 0, :2], q[:, :, 0]),
            ValueError,
            "k_t",
        ),
        (
            lambda q: recurrent.selective_scan_step(
                recurrent.RecurrentState(torch.zeros(1, 2, 3, 3)),
                q[:, :, 0],
                q[:, :, 0],
                q[:, :, 0],
            ),
            ValueError,
            "state",
        ),
    ],
    ids=[
        "ret-noncausal",
        "scan-noncausal",
        "gamma0",
        "gamma-big",
        "gamma-str",
        "chunk0",
        "seed-neg",
        "cross",
        "naive-noncausal",
        "step-k",
        "step-state",
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, word):
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(error, match=word):
        call(q)
