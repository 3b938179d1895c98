"""Chapter 5: the delta rule, Gated DeltaNet and GLA as GPT mixers, and hybrid stacks."""

import pytest
import torch

from attnbook.mechanisms.delta import delta_numpy
from attnbook.mechanisms.gated_layers import GatedRecurrentLayer
from attnbook.models.gpt import GPT, GPTConfig

LAYERS = ["delta_layer", "gated_delta_layer", "gla_layer"]


@pytest.mark.parametrize("mixer", LAYERS)
def test_layer_is_causal_and_keeps_the_shape(mixer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=40, n_layer=1, d_model=16, mixer=mixer))
    idx = torch.randint(0, 11, (2, 37))
    logits, _ = model(idx)
    changed = idx.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 11
    assert logits.shape == (2, 37, 11)
    torch.testing.assert_close(model(changed)[0][:, :20], logits[:, :20])
    assert not torch.allclose(model(changed)[0][:, 20:], logits[:, 20:])


def test_delta_layer_runs_the_delta_rule_on_normalised_projections():
    torch.manual_seed(1)
    layer = GatedRecurrentLayer(8, 2, "delta", chunk_size=4).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    q, k, v = (t.reshape(2, 9, 2, 4).transpose(1, 2) for t in layer.qkv(x).chunk(3, dim=-1))
    q, k = (torch.nn.functional.normalize(t, dim=-1) for t in (q, k))
    beta = torch.sigmoid(layer.beta(x)).transpose(1, 2)
    ref = delta_numpy(*(t.detach().numpy() for t in (q, k, v)), beta=beta.detach().numpy())
    expected = layer.out(torch.as_tensor(ref).transpose(1, 2).reshape(2, 9, 8))
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-12)


def test_hybrid_has_one_dense_and_one_gated_delta_layer_and_learns():
    config = GPTConfig(
        vocab_size=8,
        block_size=16,
        n_layer=2,
        d_model=16,
        layer_mixers=("dense", "gated_delta_layer"),
    )
    model = GPT(config)
    kinds = [type(block.mixer).__name__ for block in model.blocks]
    assert kinds == ["MultiHeadSelfAttention", "GatedRecurrentLayer"]
    assert model.blocks[1].mixer.kind == "gated_delta"
    g = torch.Generator().manual_seed(0)

    def batch():  # copy the previous token: learnable by either layer
        x = torch.randint(0, 8, (16, 16), generator=g)
        return x, torch.cat([torch.full((16, 1), -100), x[:, :-1]], dim=1)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        _, loss = model(*batch())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        ({"layer_mixers": ("dense",)}, ValueError, "one mixer per layer"),
        ({"layer_mixers": ("dense", "nope")}, ValueError, "mixer must be one of"),
        ({"layer_mixers": "dense"}, TypeError, "layer_mixers"),
        (
            {"layer_mixers": ("dense", "gla_layer"), "mixer_options": {"window": 3}},
            ValueError,
            "unknown option 'window'",
        ),
    ],
)
def test_bad_layer_mixers_raise(kwargs, error, word):
    with pytest.raises(error, match=word):
        GPTConfig(vocab_size=8, n_layer=2, d_model=16, **kwargs)


def test_bad_layer_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        GatedRecurrentLayer(8, 2, "retention")
    with pytest.raises(ValueError, match="divisible"):
        GatedRecurrentLayer(9, 2, "delta")
