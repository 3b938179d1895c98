"""Chapter 8: the count-based n-gram baselines."""

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.experiments.data import CharCorpus, load_tinyshakespeare
from attnbook.experiments.ngram import NGram, fit_ngram, ngram_rows


def _brute_force(train, order, V, beta, query):
    """The smoothing recursion with Python dictionaries, position by position."""
    out = []
    for t in range(len(query)):
        p = 1.0 / V
        for length in range(order):
            ctx = tuple(query[max(0, t - length) : t])
            ctx = (-1,) * (
                length - len(ctx)
            ) + ctx  # shorter context at the start, padded like the counts
            pairs = Counter()
            ctxs = Counter()
            for s in range(len(train)):
                c = tuple(train[max(0, s - length) : s])
                c = (-1,) * (length - len(c)) + c
                pairs[(c, train[s])] += 1
                ctxs[c] += 1
            p = (pairs[(ctx, query[t])] + beta * p) / (ctxs[ctx] + beta)
        out.append(p)
    return np.array(out)


@settings(max_examples=15, deadline=None)
@given(
    V=st.integers(2, 4),
    order=st.integers(1, 3),
    beta=st.sampled_from([0.1, 1.0, 5.0]),
    seed=st.integers(0, 99),
)
def test_vectorised_counts_equal_brute_force(V, order, beta, seed):
    rng = np.random.default_rng(seed)
    train, query = rng.integers(0, V, 40), rng.integers(0, V, 12)
    got = NGram(order, V, beta).fit(train).probs(query)
    want = _brute_force(list(train), order, V, beta, list(query))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_distribution_sums_to_one_for_any_context(order):
    rng = np.random.default_rng(order)
    V = 5
    model = NGram(order, V, 0.7).fit(rng.integers(0, V, 300))
    context = list(rng.integers(0, V, order - 1))
    total = sum(model.probs(np.array(context + [c]))[-1] for c in range(V))
    assert math.isclose(total, 1.0, rel_tol=1e-12)


def test_unseen_context_falls_back_and_bad_input_is_refused():
    model = NGram(2, 3, 1.0).fit(np.array([0, 0, 0, 0]))
    p = model.probs(np.array([2, 1]))  # context '2' never seen: back off to the unigram
    assert 0 < p[1] < 1
    with pytest.raises(ValueError, match="ids in"):
        model.probs(np.array([0, 3]))
    with pytest.raises(ValueError, match="not fitted"):
        NGram(2, 3).probs(np.array([0]))
    with pytest.raises(TypeError, match="order"):
        NGram(2.5, 3)


def test_baselines_on_the_corpus_improve_with_order():
    corpus = CharCorpus(load_tinyshakespeare())
    rows = ngram_rows(corpus, orders=(1, 2, 3))
    losses = [r["val_loss"] for r in rows]
    assert [r["mixer"] for r in rows] == ["ngram-1", "ngram-2", "ngram-3"]
    assert losses[0] > losses[1] > losses[2]
    assert 3.0 < losses[0] < 3.5  # the unigram entropy of English-like text, about 3.3 nats
    assert all(r["train_loss"] <= r["val_loss"] + 0.05 for r in rows)


def test_beta_is_chosen_on_the_training_split():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 4, 2000)
    model, dev = fit_ngram(train, 2, 4, betas=(0.1, 1.0, 10.0))
    assert model.beta == min(dev, key=dev.get) and set(dev) == {0.1, 1.0, 10.0}
