"""Chapter 1: the RNN baseline, NumPy against torch, and its FLOP count."""

import numpy as np
import pytest
import torch

from attnbook import cost
from attnbook.measure import count_flops
from attnbook.mechanisms.rnn import rnn, rnn_numpy


@pytest.mark.parametrize("n, d_in, d", [(1, 1, 1), (7, 3, 5), (40, 8, 16)], ids=lambda x: str(x))
def test_torch_rnn_matches_numpy(n, d_in, d):
    rng = np.random.default_rng(n)
    X, Wx, Wh = (
        rng.normal(size=(n, d_in)),
        rng.normal(size=(d_in, d)) / 3,
        rng.normal(size=(d, d)) / 3,
    )
    out = rnn(torch.tensor(X)[None], torch.tensor(Wx), torch.tensor(Wh))[0]
    np.testing.assert_allclose(out.numpy(), rnn_numpy(X, Wx, Wh), rtol=1e-12, atol=1e-14)


def test_rnn_gradcheck():
    g = torch.Generator().manual_seed(0)
    args = [
        torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
        for s in [(2, 4, 3), (3, 5), (5, 5)]
    ]
    assert torch.autograd.gradcheck(rnn, args)


def test_rnn_flops_counted():
    n, d = 23, 16
    fc_flops = count_flops(lambda: rnn(torch.randn(2, n, d), torch.randn(d, d), torch.randn(d, d)))
    assert fc_flops == cost.rnn_flops(n, d, batch=2)


def test_rnn_bad_shapes():
    with pytest.raises(ValueError, match="Wh must be square"):
        rnn_numpy(np.ones((3, 2)), np.ones((2, 4)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="Wx must have 2 rows"):
        rnn(torch.ones(1, 3, 2), torch.ones(3, 4), torch.ones(4, 4))
