"""Chapter 1: the NumPy reference against first principles and the torch twins."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook import reference
from attnbook.mechanisms import dense

SETTINGS = settings(max_examples=25, deadline=None)


def test_softmax_rows_sum_to_one_and_survive_huge_logits():
    x = np.array([[1e4, 1e4 - 1.0, -1e4], [0.0, 0.0, 0.0]])
    p = reference.softmax(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(
        p[0, :2], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))], rtol=1e-12
    )
    np.testing.assert_allclose(p[1], 1 / 3)


def test_softmax_is_shift_invariant():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 7))
    np.testing.assert_allclose(reference.softmax(x), reference.softmax(x + 123.4), rtol=1e-12)


def test_causal_mask_is_lower_triangular():
    m = reference.causal_mask(5)
    assert m.dtype == bool and m.shape == (5, 5)
    assert np.array_equal(m, np.arange(5)[:, None] >= np.arange(5)[None, :])


@SETTINGS
@given(
    n=st.integers(1, 9),
    d=st.integers(1, 8),
    dk=st.integers(1, 6),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_self_attention_matches_explicit_loops(n, d, dk, causal, seed):
    rng = np.random.default_rng(seed)
    X, Wq, Wk, Wv = (
        rng.normal(size=(n, d)),
        rng.normal(size=(d, dk)),
        rng.normal(size=(d, dk)),
        rng.normal(size=(d, dk)),
    )
    out, w = reference.self_attention(X, Wq, Wk, Wv, causal=causal)
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    for i in range(n):
        keys = range(i + 1) if causal else range(n)
        s = np.array([Q[i] @ K[j] / np.sqrt(dk) for j in keys])
        p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        np.testing.assert_allclose(w[i, list(keys)], p, rtol=1e-10)
        np.testing.assert_allclose(out[i], p @ V[list(keys)], rtol=1e-9, atol=1e-12)
    if causal:
        assert np.all(w[np.triu_indices(n, 1)] == 0.0)


@SETTINGS
@given(
    n=st.integers(1, 8),
    heads=st.integers(1, 4),
    dk=st.integers(1, 5),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_multi_head_numpy_equals_torch(n, heads, dk, causal, seed):
    rng = np.random.default_rng(seed)
    d = heads * dk
    X = rng.normal(size=(n, d))
    Ws = [[rng.normal(size=(d, dk)) for _ in range(heads)] for _ in range(3)]
    Wo = rng.normal(size=(d, d))
    ref = reference.multi_head_attention(X, *Ws, Wo, causal=causal)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    out = dense.multi_head_attention(t(X), *[[t(w) for w in ws] for ws in Ws], t(Wo), causal=causal)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(X=np.zeros((0, 4))), "X must not be empty"),
        (dict(X=np.full((3, 4), np.nan)), "X contains NaN"),
        (dict(X=np.ones((3, 4, 1))), "X must have 2 dimensions"),
        (dict(Wq=np.ones((5, 2))), "Wq must have 4 rows"),
        (dict(Wk=np.ones((4, 3))), "Wq and Wk must have the same number of columns"),
        (dict(X=torch.ones(3, 4)), "X must be a NumPy array"),
    ],
)
def test_self_attention_rejects_bad_input(bad, match):
    args = dict(X=np.ones((3, 4)), Wq=np.ones((4, 2)), Wk=np.ones((4, 2)), Wv=np.ones((4, 2)))
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        reference.self_attention(**args)


def test_mask_of_wrong_size_and_dtype_are_rejected():
    q = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"mask must end in shape \(3, 3\)"):
        reference.scaled_dot_product_attention(q, q, q, mask=np.ones((3, 4), dtype=bool))
    with pytest.raises(TypeError, match="mask must have a boolean dtype"):
        reference.scaled_dot_product_attention(q, q, q, mask=np.ones((3, 3)))


def test_multi_head_rejects_mismatched_head_lists():
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="same number"):
        reference.multi_head_attention(X, [np.ones((4, 2))], [], [np.ones((4, 2))], np.ones((2, 4)))
    with pytest.raises(ValueError, match="Wo must have 2 rows"):
        reference.multi_head_attention(
            X, [np.ones((4, 2))], [np.ones((4, 2))], [np.ones((4, 2))], np.ones((3, 4))
        )


def test_reference_attention_refuses_mismatched_batch_or_heads():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 5, 4))
    with pytest.raises(ValueError, match="leading"):
        reference.attention(q, rng.standard_normal((1, 3, 5, 4)), rng.standard_normal((1, 3, 5, 4)))
    with pytest.raises(ValueError, match="leading"):
        reference.attention(q, q, rng.standard_normal((2, 1, 5, 4)))
