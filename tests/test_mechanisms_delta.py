"""Chapter 4: the delta rule and Gated DeltaNet — chunked (WY) form, NumPy recurrence, fla-core's
naive references and the decoding step agree."""

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
from attnbook.mechanisms import delta

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]


def _gates(B, H, N, seed, dtype=torch.float64):
    """β in (0, 1) and g ≤ 0 as a model makes them: sigmoid and −softplus of random logits."""
    g = torch.Generator().manual_seed(seed)
    beta = torch.sigmoid(torch.randn(B, H, N, generator=g, dtype=dtype))
    log_a = -torch.nn.functional.softplus(torch.randn(B, H, N, generator=g, dtype=dtype))
    return beta, log_a


def _unit_keys(shape, seed, dtype=torch.float64, dv=None):
    q, k, v = random_qkv(shape, seed, dtype=dtype, dv=dv)
    return q, torch.nn.functional.normalize(k, dim=-1), v


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 45),
    D=st.integers(1, 8),
    Dv=st.integers(1, 6),
    chunk=st.integers(1, 20),
    gated=st.booleans(),
    unit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunked_form_equals_the_numpy_recurrence_float64(B, H, N, D, Dv, chunk, gated, unit, seed):
    q, k, v = (_unit_keys if unit else random_qkv)((B, H, N, D), seed, dv=Dv)
    beta, g = _gates(B, H, N, seed)
    g = g if gated else None
    out, S = delta.delta_chunked(q / D**0.5, k, v, beta, g, chunk_size=chunk)
    ref, S_ref = delta.gated_delta_numpy(
        *to_numpy(q, k, v),
        beta=beta.numpy(),
        g=np.zeros((B, H, N)) if g is None else g.numpy(),
        return_state=True,
    )
    assert out.shape == ref.shape and S.shape == S_ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(S.numpy(), S_ref, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("method", ["delta", "gated_delta"])
def test_registered_methods_match_numpy_with_default_gates(shape, method, device):
    q, k, v = random_qkv(shape, sum(shape), dtype=torch.float32)
    ref = getattr(delta, f"{method}_numpy")(*to_numpy(q, k, v))
    out = attnbook.attention(q.to(device), k.to(device), v.to(device), method=method, causal=True)
    assert out.device.type == device.type and out.shape == shape
    assert rel_error(out, ref) < 1e-5


@pytest.mark.parametrize("shape", [(2, 3, 50, 16), (1, 2, 128, 32), (2, 1, 7, 64)], ids=case_id)
def test_delta_equals_fla_core_naive_reference_float32(shape):
    naive = pytest.importorskip("fla.ops.delta_rule.naive")
    q, k, v = _unit_keys(shape, 11, dtype=torch.float32)
    beta, _ = _gates(*shape[:3], 12, dtype=torch.float32)
    ref, S_ref = naive.delta_rule_recurrence(q, k, v, beta)  # (B, H, T, D) layout
    out = attnbook.attention(q, k, v, method="delta", causal=True, beta=beta, chunk_size=16)
    _, S = delta.delta_chunked(q, k, v, beta, chunk_size=16)
    assert out.shape == ref.shape and S.shape == S_ref.shape
    assert rel_error(out, ref) < 1e-5 and rel_error(S, S_ref) < 1e-5


@pytest.mark.parametrize("shape", [(2, 3, 50, 16), (1, 2, 128, 32), (2, 1, 7, 64)], ids=case_id)
def test_gated_delta_equals_fla_core_naive_reference_float32(shape):
    naive = pytest.importorskip("fla.ops.gated_delta_rule.naive")
    q, k, v = _unit_keys(shape, 13, dtype=torch.float32)
    beta, g = _gates(*shape[:3], 14, dtype=torch.float32)
    ref, S_ref = naive.naive_recurrent_gated_delta_rule(
        *(x.transpose(1, 2) for x in (q, k, v, beta, g)), output_final_state=True
    )  # (B, T, H, D) layout
    ref = ref.transpose(1, 2)
    out = attnbook.attention(q, k, v, method="gated_delta", causal=True, beta=beta, g=g)
    _, S = delta.delta_chunked(q, k, v, beta, g)
    assert out.shape == ref.shape and S.shape == S_ref.shape
    assert rel_error(out, ref) < 1e-5 and rel_error(S, S_ref) < 1e-5


def test_gated_delta_with_no_decay_is_the_delta_rule():
    q, k, v = random_qkv((2, 2, 40, 8), 5)
    beta, _ = _gates(2, 2, 40, 6)
    zero = torch.zeros(2, 2, 40, dtype=torch.float64)
    a = attnbook.attention(q, k, v, method="gated_delta", causal=True, beta=beta, g=zero)
    b = attnbook.attention(q, k, v, method="delta", causal=True, beta=beta)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_default_step_keeps_large_keys_stable():
    """The long suite's inputs: unnormalised keys of norm ≈ 8 over 4096 tokens."""
    q, k, v = random_qkv((1, 2, 4096, 64), 1, dtype=torch.float32)
    for method in ("delta", "gated_delta"):
        out = attnbook.attention(q, k, v, method=method, causal=True)
        assert out.shape == v.shape and out.abs().max() < 10 * v.abs().max()


def test_gradcheck_float64_through_inputs_and_gates():
    q, k, v = _unit_keys((1, 2, 7, 3), 0)
    beta, g = _gates(1, 2, 7, 1)
    args = tuple(x.clone().requires_grad_() for x in (q, k, v, beta, g))
    assert torch.autograd.gradcheck(
        lambda a, b, c, be, gg: delta.gated_delta_attention(a, b, c, beta=be, g=gg, chunk_size=3),
        args,
        fast_mode=True,
    )


def test_gradients_equal_autograd_of_the_token_by_token_recurrence():
    base = list(_unit_keys((2, 2, 37, 6), 3)) + list(_gates(2, 2, 37, 4))
    grads = []
    for chunked in (True, False):
        xs = [x.clone().requires_grad_() for x in base]
        q, k, v, beta, g = xs
        if chunked:
            out = delta.gated_delta_attention(q, k, v, beta=beta, g=g, chunk_size=8)
        else:
            out = attnbook.decode("gated_delta", q, k, v, beta=beta, g=g)
        (out**2).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("method", ["delta", "gated_delta"])
def test_decode_with_per_token_gates_equals_the_parallel_form(method):
    q, k, v = _unit_keys((2, 3, 29, 5), 7)
    beta, g = _gates(2, 3, 29, 8)
    options = {"beta": beta} if method == "delta" else {"beta": beta, "g": g}
    parallel = attnbook.attention(q, k, v, method=method, causal=True, chunk_size=8, **options)
    stepped = attnbook.decode(method, q, k, v, chunk_size=8, **options)
    assert stepped.shape == parallel.shape and rel_error(stepped, parallel) < 1e-12


def test_prefill_then_step_with_gates_continues_the_sequence():
    q, k, v = _unit_keys((2, 2, 33, 5), 9)
    beta, g = _gates(2, 2, 33, 10)
    full = delta.gated_delta_attention(q, k, v, beta=beta, g=g)
    state = delta.gated_delta_prefill(k[:, :, :32], v[:, :, :32], beta[:, :, :32], g[:, :, :32])
    assert state.t == 32
    state, o = delta.gated_delta_step(state, q[:, :, 32], k[:, :, 32], v[:, :, 32], beta, g)
    torch.testing.assert_close(o, full[:, :, 32], rtol=1e-10, atol=1e-12)
    _, o = delta.gated_delta_step(
        delta.gated_delta_prefill(k[:, :, :32], v[:, :, :32], beta[:, :, :32], g[:, :, :32]),
        q[:, :, 32],
        k[:, :, 32],
        v[:, :, 32],
        beta[:, :, 32],
        g[:, :, 32],
    )  # this token's gates only
    torch.testing.assert_close(o, full[:, :, 32], rtol=1e-10, atol=1e-12)


def test_one_pass_overwrites_a_repeated_key():
    """β = 1, a unit key: writing (k, v₁) then (k, v₂) leaves Sᵀk = v₂ (overwrite, not sum)."""
    k = torch.nn.functional.normalize(torch.randn(1, 1, 1, 8, dtype=torch.float64), dim=-1)
    k = k.expand(1, 1, 2, 8)
    v = torch.randn(1, 1, 2, 4, dtype=torch.float64)
    _, S = delta.delta_chunked(None, k, v, torch.ones(1, 1, 2))
    torch.testing.assert_close((k[:, :, 0, None] @ S)[:, :, 0], v[:, :, 1], rtol=1e-12, atol=1e-13)


def test_registry_lists_the_methods_with_their_options():
    for name, options in (
        ("delta", {"beta", "chunk_size"}),
        ("gated_delta", {"beta", "g", "chunk_size"}),
    ):
        info = attnbook.method_info(name)
        assert name in attnbook.methods(causal=True) and name not in attnbook.methods(causal=False)
        assert set(info.options) == options and not info.exact


B3 = torch.full((1, 2, 6), 0.5)


@pytest.mark.parametrize(
    "call, error, word",
    [
        (lambda q: attnbook.attention(q, q, q, method="delta"), ValueError, "causal"),
        (lambda q: delta.delta_attention(q, q, q, causal=False), ValueError, "causal"),
        (
            lambda q: attnbook.attention(q, q, q, method="delta", causal=True, chunk_size=0),
            ValueError,
            "chunk_size",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="delta", causal=True, beta=B3 + 1),
            ValueError,
            "beta",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="delta", causal=True, beta=B3 * np.nan),
            ValueError,
            "beta",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="delta", causal=True, beta=B3[:, :, :5]),
            ValueError,
            "beta",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="delta", causal=True, beta=B3.numpy()),
            TypeError,
            "beta",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="gated_delta", causal=True, g=B3),
            ValueError,
            "g must",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="delta", causal=True, g=-B3),
            ValueError,
            "unknown option 'g'",
        ),
        (
            lambda q: delta.delta_step((1, 2), q[:, :, 0], q[:, :, 0], q[:, :, 0]),
            ValueError,
            "state",
        ),
        (
            lambda q: delta.delta_step(None, q[:, :, 0], q[:, :, 0], q[:, :, 0], B3[:, :1]),
            ValueError,
            "beta",
        ),
        (
            lambda q: delta.delta_numpy(q.numpy(), q.numpy(), q.numpy(), beta=B3.numpy() - 1),
            ValueError,
            "beta",
        ),
    ],
    ids=[
        "not-causal",
        "not-causal-direct",
        "chunk0",
        "beta-above-1",
        "beta-nan",
        "beta-shape",
        "beta-numpy",
        "g-positive",
        "g-on-delta",
        "step-state",
        "step-beta-shape",
        "numpy-beta",
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, word):
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(error, match=word):
        call(q)


@pytest.mark.parametrize("n, d_k, d_v, chunk", [(128, 16, 16, 32), (100, 8, 12, 64), (37, 4, 4, 8)])
@pytest.mark.parametrize("method", ["delta", "gated_delta"])
def test_flops_formula_equals_the_flop_counter(n, d_k, d_v, chunk, method):
    g = torch.Generator().manual_seed(n)
    q, k = (torch.randn(2, 3, n, d_k, generator=g) for _ in range(2))
    v = torch.randn(2, 3, n, d_v, generator=g)
    counted = count_flops(
        lambda: attnbook.attention(q, k, v, method=method, causal=True, chunk_size=chunk)
    )
    assert counted == cost.delta_chunked_flops(n, d_k, d_v, chunk_size=chunk, heads=3, batch=2)


def test_state_bytes_equal_the_decoding_state_and_do_not_grow():
    for n in (16, 1024):
        q, k, v = random_qkv((2, 4, n, 8), n, dtype=torch.float32, dv=6)
        state = delta.gated_delta_prefill(k, v)
        nbytes = state.S.numel() * state.S.element_size()
        assert nbytes == cost.recurrent_state_bytes(1, 4, 8, 6, bytes_per_element=4, batch=2)
