"""Mixture of experts (chapter 6): torch layer against the NumPy reference, gradients, capacity,
costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook import cost
from attnbook.measure import count_flops
from attnbook.models.gpt import GPTConfig
from attnbook.models.moe import (
    MoE,
    MoEGPT,
    capacity,
    load_balancing_loss,
    load_balancing_loss_numpy,
    moe_numpy,
    route,
    route_numpy,
)


def _layer(d, d_ff, E, k, cf, bias=True, seed=0, device="cpu"):
    torch.manual_seed(seed)
    layer = MoE(d, d_ff, E, k, cf, bias=bias).double().to(device)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer


def _numpy_weights(layer):
    get = lambda p: p.detach().cpu().numpy()  # noqa: E731
    b1 = get(layer.b1) if layer.b1 is not None else np.zeros((layer.n_experts, layer.d_ff))
    b2 = get(layer.b2) if layer.b2 is not None else np.zeros((layer.n_experts, layer.d_model))
    return get(layer.router.weight).T, get(layer.w1), b1, get(layer.w2), b2


def _dense_combine(layer, x):
    """Independent torch form: every expert on every token, mixed by a (T, E) combine matrix."""
    r = route(layer.router(x), layer.k, layer.capacity_factor)
    combine = torch.zeros_like(r.probs).scatter_add(1, r.experts, r.gates * r.kept)
    outs = torch.stack([layer.expert(e, x) for e in range(layer.n_experts)], dim=1)  # (T, E, d)
    return (combine[..., None] * outs).sum(1)


CASES = [
    (16, 8, 12, 4, 1, 1.0),
    (20, 6, 10, 4, 2, 1.25),
    (9, 4, 8, 3, 2, None),
    (32, 8, 16, 8, 1, 0.5),
    (1, 4, 4, 2, 2, 1.0),
    (24, 5, 7, 5, 3, 2.0),
]
IDS = [f"T{T}-d{d}-F{f}-E{E}-k{k}-cf{cf}" for T, d, f, E, k, cf in CASES]


@pytest.mark.parametrize("T,d,d_ff,E,k,cf", CASES, ids=IDS)
def test_moe_matches_numpy_reference(T, d, d_ff, E, k, cf, device):
    layer = _layer(d, d_ff, E, k, cf, device=device)
    x = torch.randn(T, d, dtype=torch.float64, device=device)
    y = layer(x)
    y_ref, aux_ref, load_ref = moe_numpy(
        x.cpu().numpy(), *_numpy_weights(layer), k=k, capacity_factor=cf
    )
    np.testing.assert_allclose(y.detach().cpu().numpy(), y_ref, rtol=1e-10, atol=1e-12)
    assert layer.aux_loss.item() == pytest.approx(aux_ref, rel=1e-12)
    np.testing.assert_array_equal(layer.routing.load().cpu().numpy(), load_ref)


@settings(max_examples=20, deadline=None)
@given(
    T=st.integers(1, 24),
    d=st.integers(1, 8),
    d_ff=st.integers(1, 10),
    E=st.integers(1, 6),
    data=st.data(),
    cf=st.sampled_from([None, 0.25, 0.5, 1.0, 1.25, 3.0]),
    bias=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_moe_matches_reference_on_random_shapes(T, d, d_ff, E, data, cf, bias, seed):
    k = data.draw(st.integers(1, E))
    layer = _layer(d, d_ff, E, k, cf, bias=bias, seed=seed)
    x = torch.randn(T, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y_ref, aux_ref, load_ref = moe_numpy(x.numpy(), *_numpy_weights(layer), k=k, capacity_factor=cf)
    np.testing.assert_allclose(layer(x).detach().numpy(), y_ref, rtol=1e-10, atol=1e-12)
    assert layer.aux_loss.item() == pytest.approx(aux_ref, rel=1e-12)
    np.testing.assert_array_equal(layer.routing.load().numpy(), load_ref)


@pytest.mark.parametrize("T,d,d_ff,E,k,cf", CASES, ids=IDS)
def test_routing_matches_reference(T, d, d_ff, E, k, cf):
    logits = torch.randn(T, E, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    r = route(logits, k, cf)
    experts, gates, kept, probs = route_numpy(logits.numpy(), k, cf)
    np.testing.assert_array_equal(r.experts.numpy(), experts)
    np.testing.assert_allclose(r.gates.numpy(), gates, rtol=1e-12)
    np.testing.assert_array_equal(r.kept.numpy(), kept)
    np.testing.assert_allclose(r.probs.numpy(), probs, rtol=1e-12)


@pytest.mark.parametrize("T,d,d_ff,E,k,cf", CASES, ids=IDS)
def test_gradients_match_dense_combine_form(T, d, d_ff, E, k, cf, device):
    layer = _layer(d, d_ff, E, k, cf, device=device)
    x = torch.randn(T, d, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(T, d, dtype=torch.float64, device=device)
    params = [x] + list(layer.parameters())
    loss = (layer(x) * w).sum() + layer.aux_loss
    grads = torch.autograd.grad(loss, params)
    probs = torch.softmax(layer.router(x), -1)
    ref_loss = (_dense_combine(layer, x) * w).sum() + load_balancing_loss(
        probs, layer.routing.experts
    )
    ref_grads = torch.autograd.grad(ref_loss, params)
    for g, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k,cf", [(1, 1.0), (2, 0.75)], ids=["k1-cf1.0", "k2-cf0.75"])
def test_gradcheck_float64(k, cf):
    layer = _layer(2, 3, 3, k, cf, seed=3)
    x = torch.randn(
        5, 2, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(1)
    )
    names = [
        "router.weight",
        "w1",
        "b2",
    ]  # the other parameters are covered by the dense-combine test above

    def f(x, *params):
        out = torch.func.functional_call(layer, dict(zip(names, params)), (x,), strict=False)
        return out, layer.aux_loss

    weights = dict(layer.named_parameters())
    assert torch.autograd.gradcheck(f, (x, *[weights[n].detach().requires_grad_() for n in names]))


def test_capacity_drops_exactly_the_overflow():
    logits = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    for cf in (0.25, 0.5, 1.0, 2.0):
        r = route(logits, 2, cf)
        cap = math.ceil(cf * 64 * 2 / 4)
        assigned = torch.bincount(r.experts.reshape(-1), minlength=4)
        assert r.capacity == cap
        assert torch.equal(r.load(), assigned.clamp(max=cap))
        assert r.dropped_fraction() == pytest.approx(
            float((assigned - cap).clamp(min=0).sum()) / 128
        )
    assert route(logits, 2, None).dropped_fraction() == 0.0


def test_first_choices_fill_before_second_choices():
    # every token prefers expert 0, then expert 1: with capacity 2, tokens 0, 1 keep expert 0
    logits = torch.tensor([[3.0, 2.0, 0.0]] * 4)
    r = route(logits, 2, capacity_factor=0.75)  # ceil(0.75 * 4 * 2 / 3) = 2
    assert r.capacity == 2
    assert r.kept[:, 0].tolist() == [True, True, False, False]
    assert r.kept[:, 1].tolist() == [True, True, False, False]


def test_gates_switch_and_gshard():
    logits = torch.randn(10, 5, generator=torch.Generator().manual_seed(2))
    r1, r2 = route(logits, 1, None), route(logits, 2, None)
    torch.testing.assert_close(r1.gates[:, 0], torch.softmax(logits, -1).max(-1).values)
    torch.testing.assert_close(r2.gates.sum(-1), torch.ones(10))


def test_load_balancing_loss_is_one_when_uniform_and_E_when_collapsed():
    E = 4
    uniform = torch.full((8, E), 1 / E)
    balanced = torch.arange(8).remainder(E)[:, None]
    assert float(load_balancing_loss(uniform, balanced)) == pytest.approx(1.0)
    collapsed = torch.zeros(8, E)
    collapsed[:, 0] = 1.0
    assert float(
        load_balancing_loss(collapsed, torch.zeros(8, 1, dtype=torch.long))
    ) == pytest.approx(E)
    assert load_balancing_loss_numpy(
        collapsed.double().numpy(), np.zeros((8, 1), int)
    ) == pytest.approx(E)


FLOP_CASES = [(64, 32, 128, 8, 1), (64, 32, 128, 8, 2), (50, 16, 64, 4, 4), (128, 32, 16, 8, 2)]


@pytest.mark.parametrize(
    "n,d,d_ff,E,k", FLOP_CASES, ids=[f"N{n}-d{d}-F{f}-E{E}-k{k}" for n, d, f, E, k in FLOP_CASES]
)
def test_flops_and_params_against_counters(n, d, d_ff, E, k):
    layer = MoE(d, d_ff, E, k, capacity_factor=None)
    x = torch.randn(2, n // 2, d)
    counter_flops = count_flops(lambda: layer(x))
    assert counter_flops == cost.moe_flops(n, d, d_ff, E, k)
    assert sum(p.numel() for p in layer.parameters()) == cost.moe_params(d, d_ff, E)
    # about k dense FFNs of compute, E of parameters
    assert cost.moe_flops(n, d, d_ff, E, k) - k * cost.ffn_flops(n, d, d_ff) == 2 * n * d * E
    assert cost.moe_params(d, d_ff, E) - E * cost.ffn_params(d, d_ff) == d * E
    assert cost.moe_active_params(d, d_ff, E, k) == d * E + k * cost.ffn_params(d, d_ff)


def test_dropped_tokens_cost_no_expert_flops():
    layer = MoE(16, 32, 4, 1, capacity_factor=0.5)
    counter_flops = count_flops(lambda: layer(torch.randn(64, 16)))
    kept = int(layer.routing.kept.sum())
    assert kept < 64
    assert counter_flops == 2 * 64 * 16 * 4 + kept * 4 * 16 * 32


def test_moe_gpt_params_loss_and_aux():
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, d_model=16)
    model = MoEGPT(config, n_experts=4, k=1, balance_coef=0.5)
    dense_ffn = cost.ffn_params(16, 64)
    expected = cost.gpt_params(2, 16, 11, 16) + 2 * (cost.moe_params(16, 64, 4) - dense_ffn)
    assert sum(p.numel() for p in model.parameters()) == expected
    idx = torch.randint(0, 11, (3, 16), generator=torch.Generator().manual_seed(0))
    model.train()
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 11)
    aux = sum(m.aux_loss.item() for m in model.moe_layers())
    model.eval()
    _, lm_loss = model(idx, idx)
    assert float(loss) == pytest.approx(float(lm_loss) + 0.5 * aux, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,exc,name",
    [
        (dict(d_model=0, d_ff=4, n_experts=2), ValueError, "d_model"),
        (dict(d_model=4, d_ff=4.5, n_experts=2), TypeError, "d_ff"),
        (dict(d_model=4, d_ff=4, n_experts=2, k=3), ValueError, "k"),
        (dict(d_model=4, d_ff=4, n_experts=2, capacity_factor=0.0), ValueError, "capacity_factor"),
        (dict(d_model=4, d_ff=4, n_experts=2, capacity_factor=-1), ValueError, "capacity_factor"),
    ],
    ids=["d_model-0", "d_ff-float", "k-over-E", "cf-0", "cf-negative"],
)
def test_bad_construction(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        MoE(**kwargs)


def test_bad_inputs():
    layer = MoE(4, 8, 2)
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(3, 5))
    with pytest.raises(TypeError, match="x"):
        layer(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="logits"):
        route(torch.randn(5), 1)
    with pytest.raises(ValueError, match="k"):
        route_numpy(np.zeros((3, 2)), k=3)
    with pytest.raises(ValueError, match="balance_coef"):
        MoEGPT(GPTConfig(vocab_size=5), n_experts=2, balance_coef=-1)
    with pytest.raises(ValueError, match="k"):
        cost.moe_flops(4, 4, 4, 2, 3)
    with pytest.raises(ValueError, match="n_experts"):
        capacity(4, 0, 1, 1.0)
    with pytest.raises(ValueError, match="x"):
        moe_numpy(np.full((2, 2), np.nan), np.zeros((2, 2)), *[np.zeros((2, 2, 2))] * 4)
