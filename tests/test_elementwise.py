"""Element-wise attention (chapter 7): forms agree, approach the exact form, gradients, bad
input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook.checks import rel_error
from attnbook.mechanisms import elementwise

SHAPES = [(1, 1, 5, 3), (2, 2, 16, 4), (2, 3, 64, 8), (1, 2, 33, 16)]
IDS = [f"B{b}-H{h}-T{n}-D{d}" for b, h, n, d in SHAPES]


def _rand(shape, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * scale for _ in range(3)]


def _torch_recurrent(q, k, v, order):
    state, outs = None, []
    for i in range(q.shape[2]):
        state, o = elementwise.elementwise_step(
            state, q[:, :, i], k[:, :, i], v[:, :, i], order=order
        )
        outs.append(o)
    return torch.stack(outs, dim=2)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("order", [2, 3, 4, 8])
def test_parallel_equals_recurrent(shape, order):
    q, k, v = _rand(shape, seed=sum(shape) + order)
    ref = elementwise.elementwise_taylor_numpy(q, k, v, order=order, causal=True)
    assert (
        rel_error(elementwise.elementwise_parallel_numpy(q, k, v, order=order, causal=True), ref)
        < 1e-10
    )
    assert rel_error(elementwise.elementwise_recurrent_numpy(q, k, v, order=order), ref) < 1e-10
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        qt, kt, vt = (torch.tensor(x, dtype=dtype) for x in (q, k, v))
        par = elementwise.elementwise_attention(qt, kt, vt, order=order, causal=True)
        rec = _torch_recurrent(qt, kt, vt, order)
        assert par.dtype == rec.dtype == dtype
        assert rel_error(par, rec) < tol, dtype
        assert rel_error(par, ref) < tol, dtype


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("order", [0, 2, 5, 6])
def test_noncausal_parallel_equals_quadratic_and_prefill(shape, order):
    q, k, v = _rand(shape, seed=3 * sum(shape) + order)
    ref = elementwise.elementwise_taylor_numpy(q, k, v, order=order)
    assert rel_error(elementwise.elementwise_parallel_numpy(q, k, v, order=order), ref) < 1e-10
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        qt, kt, vt = (torch.tensor(x, dtype=dtype) for x in (q, k, v))
        out = attnbook.attention(qt, kt, vt, method="elementwise", order=order)
        assert rel_error(out, ref) < tol
        # the non-causal output of every query equals reading the prefilled state of all keys
        state = elementwise.elementwise_prefill(kt, vt, order=order)
        read = elementwise._read(qt, state.A.unsqueeze(2)) / elementwise._read(
            qt, state.Z.unsqueeze(2)
        )
        assert rel_error(read, out) < tol


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    n=st.integers(1, 24),
    d=st.integers(1, 6),
    order=st.integers(0, 7),
    causal=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_random_shapes_torch_matches_numpy(b, h, n, d, order, causal, seed):
    q, k, v = _rand((b, h, n, d), seed)
    ref = elementwise.elementwise_taylor_numpy(q, k, v, order=order, causal=causal)
    out = elementwise.elementwise_attention(
        *(torch.tensor(x) for x in (q, k, v)), order=order, causal=causal
    )
    assert rel_error(out, ref) < 1e-9


def test_cross_attention_lengths():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 2, 7, 4))
    k, v = rng.standard_normal((2, 2, 11, 4)), rng.standard_normal((2, 2, 11, 4))
    out = elementwise.elementwise_attention(*(torch.tensor(x) for x in (q, k, v)), order=4)
    assert out.shape == (2, 2, 7, 4)
    assert rel_error(out, elementwise.elementwise_taylor_numpy(q, k, v, order=4)) < 1e-10


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_taylor_approaches_exact_as_order_grows(causal):
    q, k, v = _rand((2, 2, 32, 8), seed=7, scale=0.5)
    exact = elementwise.elementwise_numpy(q, k, v, causal=causal)
    orders = (2, 4, 6, 8, 12, 16, 24)
    errors = [
        rel_error(elementwise.elementwise_parallel_numpy(q, k, v, order=t, causal=causal), exact)
        for t in orders
    ]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-10
    if causal:
        assert rel_error(elementwise.elementwise_recurrent_numpy(q, k, v, order=24), exact) < 1e-10
    torch_exact = elementwise.elementwise_exact(
        *(torch.tensor(x) for x in (q, k, v)), causal=causal
    )
    assert rel_error(torch_exact, exact) < 1e-12


def test_exact_form_is_per_channel_softmax_and_stable():
    rng = np.random.default_rng(2)
    q, k = (
        rng.standard_normal((1, 1, 6, 3)) * 30,
        rng.standard_normal((1, 1, 6, 3)) * 30,
    )  # exp(−900) underflows
    w = elementwise.elementwise_weights(q, k)
    assert np.all(np.isfinite(w)) and np.allclose(w.sum(axis=3), 1.0)
    c = 1  # channel c alone: a softmax of −(q_ic − k_jc)² over j
    logits = -((q[0, 0, :, None, c] - k[0, 0, None, :, c]) ** 2)
    np.testing.assert_allclose(w[0, 0, :, :, c], attnbook.reference.softmax(logits), rtol=1e-12)


def test_even_orders_positive_odd_orders_negative():
    x = np.linspace(-30, 30, 6001)
    for t in (0, 2, 4, 6, 8):
        assert elementwise.taylor_exp(x, t).min() > 0
    for t in (1, 3, 5, 7):
        assert elementwise.taylor_exp(x, t).min() < 0
    q, k, _ = _rand((1, 1, 16, 4), seed=5, scale=2.0)
    assert elementwise.elementwise_weights(q, k, order=3).min() < 0
    assert elementwise.elementwise_weights(q, k, order=4).min() > 0


def test_gradcheck_parallel_and_step():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, c: elementwise.elementwise_attention(a, b, c, order=4, causal=causal),
            (q, k, v),
        )
    assert torch.autograd.gradcheck(lambda a, b, c: _torch_recurrent(a, b, c, 2), (q, k, v))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gradients_match_quadratic_taylor_autograd(causal):
    """Grads of the O(t·n·D) form equal grads of the (N, N, D) Taylor weights written out in
    torch."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 12, 4, generator=g, requires_grad=True) for _ in range(3))
    order = 6

    def quadratic(q, k, v):
        x = 2 * q.unsqueeze(3) * k.unsqueeze(2)
        w = torch.exp(-k * k).unsqueeze(2) * sum(
            x**p / math.factorial(p) if p else torch.ones_like(x) for p in range(order + 1)
        )
        if causal:
            w = w * torch.ones(12, 12).tril()[:, :, None]
        return (w * v.unsqueeze(2)).sum(3) / w.sum(3)

    w_out = torch.randn(2, 2, 12, 4, generator=g)
    grads_fast = torch.autograd.grad(
        (elementwise.elementwise_attention(q, k, v, order=order, causal=causal) * w_out).sum(),
        (q, k, v),
    )
    grads_ref = torch.autograd.grad((quadratic(q, k, v) * w_out).sum(), (q, k, v))
    for a, b in zip(grads_fast, grads_ref):
        assert rel_error(a, b) < 1e-4


def test_gpt_trains_with_elementwise_mixer():
    from attnbook.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=11,
            block_size=16,
            n_layer=1,
            n_head=2,
            d_model=16,
            mixer="elementwise",
            mixer_options={"order": 4},
        )
    )
    x = torch.randint(0, 11, (4, 16))
    logits, loss = model(x, x)
    loss.backward()
    assert logits.shape == (4, 16, 11) and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # causal: changing the last token leaves the logits of every earlier position unchanged
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 11
    torch.testing.assert_close(model(x2)[0][:, :-1], logits[:, :-1])


def test_state_size_constant():
    assert elementwise.state_numbers(64, 6) == 2 * 7 * 64
    state, _ = elementwise.elementwise_step(
        None, *(torch.randn(1, 2, 8) for _ in range(3)), order=6
    )
    for _ in range(50):
        state, _ = elementwise.elementwise_step(state, *(torch.randn(1, 2, 8) for _ in range(3)))
    assert state.A.numel() + state.Z.numel() == 2 * elementwise.state_numbers(8, 6)
    assert state.order == 6


def _qkv(shape=(1, 2, 8, 4)):
    return [torch.randn(shape) for _ in range(3)]


@pytest.mark.parametrize(
    "order,exc",
    [
        (-1, ValueError),
        (-4, ValueError),
        (2.5, TypeError),
        (2.0, TypeError),
        ("2", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
    ids=["neg1", "neg4", "float", "float-int", "str", "bool", "none"],
)
def test_bad_order(order, exc):
    q, k, v = _qkv()
    with pytest.raises(exc, match="order"):
        attnbook.attention(q, k, v, method="elementwise", order=order)
    with pytest.raises(exc, match="order"):
        elementwise.elementwise_parallel_numpy(q.numpy(), k.numpy(), v.numpy(), order=order)
    if order is not None:  # step(None, ..., order=None) means the default order
        with pytest.raises(exc, match="order"):
            elementwise.elementwise_step(None, q[:, :, 0], k[:, :, 0], v[:, :, 0], order=order)


def test_bad_shapes_and_values():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="v must have the shape of k"):
        elementwise.elementwise_attention(q, k, torch.randn(1, 2, 8, 5))
    with pytest.raises(ValueError, match="v must have the shape of k"):
        attnbook.attention(q, k, torch.randn(1, 2, 8, 5), method="elementwise")
    with pytest.raises(ValueError, match="k must have head dimension"):
        attnbook.attention(q, torch.randn(1, 2, 8, 3), v, method="elementwise")
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        elementwise.elementwise_attention(
            q, torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4), causal=True
        )
    with pytest.raises(ValueError, match="q"):
        elementwise.elementwise_attention(q[0], k, v)
    with pytest.raises(ValueError, match="NaN"):
        elementwise.elementwise_attention(q.masked_fill(q > 0, float("nan")), k, v)
    with pytest.raises(TypeError, match="q"):
        elementwise.elementwise_attention(q.numpy(), k, v)
    with pytest.raises(ValueError, match="v must have the shape of k"):
        elementwise.elementwise_numpy(q.numpy(), k.numpy(), np.zeros((1, 2, 8, 3)))
    with pytest.raises(ValueError, match="unknown option"):
        attnbook.attention(q, k, v, method="elementwise", t=2)
    with pytest.raises(TypeError, match="causal"):
        elementwise.elementwise_parallel_numpy(q.numpy(), k.numpy(), v.numpy(), causal="yes")


def test_bad_step_input():
    q, k, v = (x[:, :, 0] for x in _qkv())
    state, _ = elementwise.elementwise_step(None, q, k, v, order=2)
    with pytest.raises(ValueError, match="differs from the state's order"):
        elementwise.elementwise_step(state, q, k, v, order=4)
    with pytest.raises(ValueError, match="q_t, k_t, v_t"):
        elementwise.elementwise_step(state, q, k, v[..., :3])
    with pytest.raises(ValueError, match="state must hold"):
        elementwise.elementwise_step(state, *(torch.randn(1, 2, 5) for _ in range(3)))
    with pytest.raises(TypeError, match="state"):
        elementwise.elementwise_step((state.A, state.Z), q, k, v)
    with pytest.raises(ValueError, match="q_t"):
        elementwise.elementwise_step(None, q[0], k, v)


# --- chapter 7 tasks: the forecasting generator and the spikiness statistic
# -------------------------------


def test_make_series_deterministic_with_known_noise():
    from attnbook.experiments import elementwise_tasks

    x = elementwise_tasks.make_series(256, 40, channels=3, seed=5)
    assert x.shape == (256, 40, 3) and x.dtype == torch.float32
    assert torch.equal(x, elementwise_tasks.make_series(256, 40, channels=3, seed=5))
    assert not torch.equal(x, elementwise_tasks.make_series(256, 40, channels=3, seed=6))
    resid = x - elementwise_tasks.make_series(256, 40, channels=3, seed=5, noise=1e-12)
    assert abs(float(resid.std()) - 0.2) < 0.01
    for name, kwargs, exc in (
        ("batch", dict(batch=0), ValueError),
        ("noise", dict(noise=-1.0), ValueError),
        ("seq_len", dict(seq_len=2.5), TypeError),
        ("seed", dict(seed=-1), ValueError),
    ):
        args = {"batch": 2, "seq_len": 8, **kwargs}
        with pytest.raises(exc, match=name):
            elementwise_tasks.make_series(**args)


def test_distribution_stats_uniform_and_one_hot():
    from attnbook.experiments import elementwise_tasks

    n = 12
    uniform = np.tril(np.ones((n, n)))
    uniform /= uniform.sum(-1, keepdims=True)
    ent, mx = elementwise_tasks._distribution_stats(uniform[None])
    assert np.allclose(ent, 1.0) and np.allclose(mx, 1 / np.arange(2, n + 1))
    ent, mx = elementwise_tasks._distribution_stats(np.eye(n)[None])
    assert np.allclose(ent, 0.0) and np.allclose(mx, 1.0)


@pytest.mark.parametrize(
    "mixer,options",
    [("dense", {}), ("linear", {}), ("elementwise", {"order": 4})],
    ids=["softmax", "linear", "EA-t4"],
)
def test_spikiness_reads_every_layer(mixer, options):
    from attnbook.experiments import elementwise_tasks
    from attnbook.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=13,
            block_size=10,
            n_layer=2,
            n_head=2,
            d_model=8,
            mixer=mixer,
            mixer_options=options,
        )
    )
    x = torch.randint(0, 13, (3, 10))
    captured = elementwise_tasks.attention_inputs(model, x)
    assert len(captured) == 2 and captured[0][0].shape == (3, 2, 10, 4)
    s = elementwise_tasks.spikiness(model, x)
    assert (
        0 < s["entropy"] <= 1 + 1e-12
        and np.mean(1 / np.arange(2, 11)) - 1e-12 <= s["max_weight"] <= 1
    )


def test_forecaster_is_causal():
    from attnbook.experiments import elementwise_tasks
    from attnbook.models.gpt import GPTConfig

    torch.manual_seed(0)
    model = elementwise_tasks.Forecaster(
        3,
        GPTConfig(
            vocab_size=1,
            block_size=16,
            n_layer=1,
            n_head=2,
            d_model=8,
            mixer="elementwise",
            mixer_options={"order": 2},
        ),
    )
    x = elementwise_tasks.make_series(2, 16, channels=3)
    pred, loss = model(x[:, :-1], x[:, 1:])
    assert pred.shape == (2, 15, 3) and torch.isfinite(loss)
    x2 = x.clone()
    x2[:, 10] += 1.0
    torch.testing.assert_close(model(x2[:, :-1])[0][:, :10], pred[:, :10])
