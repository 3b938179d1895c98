"""Chapter 8: the generative mixing layer against its NumPy reference, its cost formulas, its
errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from attnbook import cost
from attnbook.bench.generative import _check_mixers, comparison_mixers, mixer_cost
from attnbook.measure import count_flops
from attnbook.mechanisms.dense import MultiHeadSelfAttention
from attnbook.mechanisms.generative import (
    GenerativeMixer,
    generative_features,
    generative_numpy,
    previous_token,
    previous_token_numpy,
    running_mean,
    running_mean_numpy,
)
from attnbook.models.gpt import GPT, GPTConfig
from attnbook.registry import mixer_names

SHAPES = [(1, 1, 1), (2, 7, 3), (2, 64, 8), (3, 33, 5)]
IDS = [f"B{b}-T{n}-D{d}" for b, n, d in SHAPES]
shapes = st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9))


def _weights(layer):
    return [
        t.detach().double().numpy()
        for t in (layer.fc.weight.T, layer.fc.bias, layer.proj.weight.T, layer.proj.bias)
    ]


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_running_mean_matches_naive_mean(shape, seed):
    x = np.random.default_rng(seed).normal(size=shape)
    ref = running_mean_numpy(x)
    np.testing.assert_allclose(running_mean(torch.tensor(x)).numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        running_mean(torch.tensor(x, dtype=torch.float32)).numpy(), ref, rtol=1e-5, atol=1e-5
    )
    # the last row is the plain mean, the first the token itself
    np.testing.assert_allclose(ref[:, -1], x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(ref[:, 0], x[:, 0], rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_previous_token_matches_reference(shape):
    x = np.random.default_rng(1).normal(size=shape)
    np.testing.assert_array_equal(previous_token(torch.tensor(x)).numpy(), previous_token_numpy(x))


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_running_mean_never_builds_an_n_by_n_matrix():
    n, d = 512, 4
    x = torch.randn(1, n, d, requires_grad=True)
    with _LargestTensor() as mode:
        running_mean(x).sum().backward()
    assert mode.largest <= n * d < n * n  # forward and backward: no tensor larger than the input


@settings(max_examples=15, deadline=None)
@given(shape=shapes, hidden=st.integers(1, 12), avg=st.booleans(), seed=st.integers(0, 2**16))
def test_mixer_matches_numpy_reference(shape, hidden, avg, seed):
    torch.manual_seed(seed)
    layer = GenerativeMixer(shape[2], hidden, avg=avg).double()
    x = np.random.default_rng(seed).normal(size=shape)
    with torch.no_grad():
        out = layer(torch.tensor(x)).numpy()
    np.testing.assert_allclose(
        out, generative_numpy(x, *_weights(layer), avg=avg), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("avg", [False, True], ids=["prev", "prev+avg"])
def test_mixer_gradcheck(avg):
    torch.manual_seed(0)
    layer = GenerativeMixer(3, 4, avg=avg).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradcheck(lambda t: generative_features(t, avg), (x,))


@pytest.mark.parametrize("shape", SHAPES[1:], ids=IDS[1:])
def test_running_mean_gradient_equals_naive_autograd(shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*shape, dtype=torch.float64)
    (g_fast,) = torch.autograd.grad((running_mean(x) * w).sum(), x)
    naive = torch.stack([x[:, : t + 1].mean(dim=1) for t in range(shape[1])], dim=1)
    (g_naive,) = torch.autograd.grad((naive * w).sum(), x)
    torch.testing.assert_close(g_fast, g_naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("avg", [False, True], ids=["prev", "prev+avg"])
def test_mixer_is_causal(avg, device):
    torch.manual_seed(0)
    layer = GenerativeMixer(6, avg=avg).to(device)
    x = torch.randn(2, 20, 6, device=device)
    x2 = x.clone()
    x2[:, 12:] += torch.randn(2, 8, 6, device=device)
    with torch.no_grad():
        a, b = layer(x), layer(x2)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12], b[:, 12])


def test_prev_mixer_sees_only_two_tokens_but_avg_sees_all():
    """Without the mean, y_t depends on x_t and x_{t-1} only; with it, on every x_j, j <= t."""
    torch.manual_seed(0)
    x = torch.randn(1, 10, 4)
    x2 = x.clone()
    x2[:, 2] += 1.0
    for avg, changed in ((False, [2, 3]), (True, list(range(2, 10)))):
        layer = GenerativeMixer(4, avg=avg)
        with torch.no_grad():
            diff = (layer(x) - layer(x2)).abs().amax(dim=-1)[0]
        assert torch.nonzero(diff > 1e-7).flatten().tolist() == changed


@pytest.mark.parametrize(
    "n, d, h, b",
    [(1, 4, None, 1), (17, 24, 40, 3), (64, 32, 128, 2)],
    ids=["T1-D4", "T17-D24-H40-B3", "T64-D32-H128-B2"],
)
@pytest.mark.parametrize("avg", [False, True], ids=["prev", "prev+avg"])
def test_flops_and_params_match_counters(n, d, h, b, avg):
    layer = GenerativeMixer(d, h, avg=avg)
    fc_flops = count_flops(lambda: layer(torch.randn(b, n, d)))
    assert fc_flops == cost.generative_flops(n, d, h, avg=avg, batch=b)
    assert sum(p.numel() for p in layer.parameters()) == cost.generative_params(d, h, avg=avg)
    no_bias = GenerativeMixer(d, h, avg=avg, bias=False)
    assert sum(p.numel() for p in no_bias.parameters()) == cost.generative_params(
        d, h, avg=avg, bias=False
    )


@pytest.mark.parametrize("d, heads", [(8, 2), (384, 6)], ids=["D8-H2", "D384-H6"])
def test_attention_params_and_per_token_cost(d, heads):
    attn = MultiHeadSelfAttention(d, heads)
    assert sum(p.numel() for p in attn.parameters()) == cost.attention_params(d)
    # with h = d the generative layer is smaller than attention; with the mean it is 2d smaller
    assert cost.generative_params(d) < cost.attention_params(d)
    assert cost.attention_params(d) - cost.generative_params(d, avg=True) == 2 * d
    # per token: attention grows with n, the generative layer does not
    per_token = [cost.mha_flops(n, d, heads) / n for n in (64, 128)]
    assert per_token[1] - per_token[0] == 4 * 64 * d
    assert cost.generative_flops(128, d) / 128 == cost.generative_flops(64, d) / 64 == 6 * d * d


def test_running_mean_flops():
    assert cost.running_mean_flops(10, 4, batch=2) == 160


def test_mixers_registered_and_train_in_gpt():
    assert {"generative", "generative+avg"} <= set(mixer_names())
    assert comparison_mixers()[:3] == ["dense", "generative", "generative+avg"]
    torch.manual_seed(0)
    x = torch.randint(0, 5, (4, 16))
    for mixer in ("generative", "generative+avg"):
        model = GPT(
            GPTConfig(
                vocab_size=5,
                block_size=16,
                n_layer=1,
                n_head=2,
                d_model=16,
                mixer=mixer,
                mixer_options={"hidden": 8},
            )
        )
        assert model.blocks[0].mixer.hidden == 8
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        first = model(x, x)[1].item()
        for _ in range(30):
            loss = model(x, x)[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.5 * first


def test_bench_checks_and_cost_row():
    _check_mixers(torch.device("cpu"))
    row = mixer_cost("generative+avg", 32, d_model=16, heads=2, repeats=1)
    assert row["flops_forward"] == cost.generative_flops(32, 16, avg=True)
    assert row["params"] == cost.generative_params(16, avg=True)
    assert row["median_s"] > 0 and row["peak_bytes"] > 0


def test_bad_input():
    with pytest.raises(ValueError, match="d_model"):
        GenerativeMixer(0)
    with pytest.raises(TypeError, match="hidden"):
        GenerativeMixer(4, hidden=2.5)
    with pytest.raises(TypeError, match="avg"):
        GenerativeMixer(4, avg="yes")
    layer = GenerativeMixer(4)
    with pytest.raises(ValueError, match="d_model=4"):
        layer(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        layer(torch.randn(3, 4))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        layer(torch.ones(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        running_mean(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        running_mean(np.ones((1, 2, 2)))
    with pytest.raises(TypeError, match="x must be a NumPy array"):
        running_mean_numpy(torch.ones(1, 2, 2))
    w = _weights(GenerativeMixer(4, 3).double())
    with pytest.raises(ValueError, match="w1 must have 3·d = 12 rows"):
        generative_numpy(np.ones((1, 2, 4)), *w, avg=True)
    with pytest.raises(ValueError, match="b1, w2, b2"):
        generative_numpy(np.ones((1, 2, 4)), w[0], w[1], w[2][:, :2], w[3])
    with pytest.raises(ValueError, match="unknown option 'k'"):
        GPT(GPTConfig(vocab_size=5, mixer="generative", mixer_options={"k": 3}))
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        cost.generative_flops(0, 4)
    with pytest.raises(ValueError, match="hidden"):
        cost.generative_params(4, hidden=0)
    with pytest.raises(TypeError, match="d_model"):
        cost.attention_params(4.0)
