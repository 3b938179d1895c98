"""Chapter 8: L stacked generative layers see exactly the last L + 1 tokens; with the average, all
of them."""

import pytest
import torch

from attnbook.models.gpt import GPT, GPTConfig

VOCAB, N = 11, 24


def _logits_after_perturbing(model, idx, position):
    changed = idx.clone()
    changed[:, position] = (changed[:, position] + 1) % VOCAB
    with torch.no_grad():
        return model(idx)[0], model(changed)[0]


@pytest.mark.parametrize("layers", [1, 2, 3, 5])
def test_generative_sees_exactly_the_last_L_plus_one_tokens(layers):
    torch.manual_seed(layers)
    model = GPT(
        GPTConfig(
            vocab_size=VOCAB, block_size=N, n_layer=layers, n_head=1, d_model=16, mixer="generative"
        )
    ).eval()
    idx = torch.randint(0, VOCAB, (2, N), generator=torch.Generator().manual_seed(0))
    t = N - 1
    before, after = _logits_after_perturbing(model, idx, t - layers - 1)  # just outside the field
    assert torch.equal(before[:, t], after[:, t])
    before, after = _logits_after_perturbing(model, idx, t - layers)  # the oldest token inside it
    assert not torch.allclose(before[:, t], after[:, t])


@pytest.mark.parametrize("layers", [1, 3])
def test_with_the_running_mean_every_earlier_token_reaches_the_output(layers):
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=VOCAB,
            block_size=N,
            n_layer=layers,
            n_head=1,
            d_model=16,
            mixer="generative+avg",
        )
    ).eval()
    idx = torch.randint(0, VOCAB, (2, N), generator=torch.Generator().manual_seed(1))
    for position in (0, N // 2, N - layers - 2):
        before, after = _logits_after_perturbing(model, idx, position)
        assert not torch.allclose(before[:, N - 1], after[:, N - 1])
