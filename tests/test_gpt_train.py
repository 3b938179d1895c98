"""The small GPT and its trainer (chapters 5-8): shapes, tied head, causality of every mixer,
seeding, errors."""

import json

import pytest
import torch

from attnbook.models.gpt import GPT, GPTConfig
from attnbook.models.train import train
from attnbook.registry import method_info, methods, mixers

VOCAB = 11


def _model(mixer="dense", **kw):
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, block_size=24, n_layer=2, n_head=2, d_model=16, mixer=mixer) | kw
    return GPT(GPTConfig(**shape))


def _batches(batch=4, n=24):
    def get_batch(split, generator):
        x = torch.randint(0, VOCAB, (batch, n + 1), generator=generator)
        if split == "val":
            x = (x * 3) % VOCAB
        return x[:, :-1], x[:, 1:]

    return get_batch


@pytest.mark.parametrize("b, n", [(1, 1), (3, 24), (2, 7)], ids=["B1-T1", "B3-T24", "B2-T7"])
def test_shapes(b, n):
    model = _model()
    idx = torch.randint(0, VOCAB, (b, n))
    logits, loss = model(idx)
    assert logits.shape == (b, n, VOCAB) and loss is None
    _, loss = model(idx, idx)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_tied_head_is_one_tensor_counted_once():
    model = _model()
    assert model.head.weight is model.tok.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == sum(unique.values())
    every_module = sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False))
    assert (
        every_module - model.num_params() == VOCAB * 16
    )  # the head shares the embedding's V·d numbers
    with torch.no_grad():
        model.tok.weight[3].add_(1.0)
    assert torch.equal(model.head.weight[3], model.tok.weight[3])


@pytest.mark.parametrize("mixer", methods(device="cpu") + mixers())
def test_every_mixer_is_causal(mixer):
    """Changing tokens after position t must not change any logit at positions <= t.

    A mechanism that cannot be causal (Linformer) must refuse when the model is built, with a
    ValueError that says so.
    """
    if mixer in mixers() or method_info(mixer).causal != "noncausal":
        model = _model(mixer).eval()
    else:
        with pytest.raises(ValueError, match="causal"):
            _model(mixer)
        return
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, VOCAB, (2, 24), generator=g)
    idx2 = idx.clone()
    idx2[:, 15:] = (idx2[:, 15:] + 1 + torch.randint(0, VOCAB - 1, (2, 9), generator=g)) % VOCAB
    with torch.no_grad():
        try:
            a = model(idx)[0]
        except ValueError as err:
            assert "causal" in str(err)
            return
        b = model(idx2)[0]
    torch.testing.assert_close(a[:, :15], b[:, :15], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, 15], b[:, 15])


def test_training_is_deterministic_by_seed():
    runs = [
        train(_model(), _batches(), steps=6, eval_every=3, eval_batches=2, seed=s, progress=False)
        for s in (5, 5, 6)
    ]
    assert runs[0].history == runs[1].history
    assert runs[0].history != runs[2].history


def test_train_result_records_and_saves(tmp_path):
    model = _model("generative")
    result = train(
        model, _batches(), steps=4, eval_every=2, eval_batches=1, lr=3e-3, progress=False
    )
    assert [r["step"] for r in result.history] == [2, 4]
    assert result.time_per_iter_s > 0 and result.peak_memory_bytes > 0
    assert result.params == model.num_params()
    assert result.config["mixer"] == "generative" and result.config["train"]["lr"] == 3e-3
    saved = json.loads(result.save_json(tmp_path / "run.json").read_text())
    assert saved["history"] == result.history and saved["meta"]["torch"] == torch.__version__
    assert result.final_val_loss == result.history[-1]["val_loss"]


def test_generate_shape_and_determinism():
    model = _model().eval()
    idx = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(idx, 12, generator=torch.Generator().manual_seed(0))
    b = model.generate(idx, 12, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 15) and torch.equal(a, b) and torch.equal(a[:, :3], idx)


def test_bad_input():
    model = _model()
    with pytest.raises(TypeError, match="idx must be a \\(B, N\\) torch.long"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="idx length must be in 1..block_size=24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="mixer must be one of"):
        GPTConfig(vocab_size=4, mixer="magic")
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(vocab_size=4, d_model=10, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(vocab_size=4, dropout=1.0)
    with pytest.raises(ValueError, match="short_conv must be an integer >= 0"):
        GPTConfig(vocab_size=4, short_conv=-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 2, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="steps"):
        train(model, _batches(), steps=0)
    with pytest.raises(ValueError, match="lr"):
        train(model, _batches(), steps=1, lr=-1.0)


def test_short_conv_is_causal():
    """Changing token i changes no output before position i, with the convolution in every block."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=2, d_model=16, short_conv=4)
    ).eval()
    x = torch.randint(0, 11, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 11
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])
