"""Synthetic recall tasks (chapter 5): shapes, answers checked by an oracle, determinism, bad
input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.experiments.tasks import (
    IGNORE,
    TASKS,
    long_range_retrieval,
    min_query_distance,
    mqar,
    query_accuracy,
    selective_copy,
    solve_mqar,
    solve_selective_copy,
)

SIZES = [(1, 16, 2, 9), (3, 40, 6, 33), (4, 64, 8, 65)]  # batch, seq_len, pairs, vocab


def _id(size):
    return "B{}-N{}-P{}-V{}".format(*size)


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("size", SIZES, ids=_id)
def test_shapes_dtype_and_range(name, size):
    batch, n, p, vocab = size
    x, y = TASKS[name](batch, n, p, vocab, seed=3)
    assert x.shape == y.shape == (batch, n)
    assert x.dtype == y.dtype == torch.long
    assert int(x.min()) >= 0 and int(x.max()) < vocab
    scored = y[y != IGNORE]
    assert scored.numel() > 0 and int(scored.min()) >= 0 and int(scored.max()) < vocab


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    pairs=st.integers(1, 8),
    extra=st.integers(0, 30),
    vocab_extra=st.integers(0, 20),
    seed=st.integers(0, 10_000),
    random_non_queries=st.booleans(),
    data=st.data(),
)
def test_mqar_targets_match_oracle(
    batch, pairs, extra, vocab_extra, seed, random_non_queries, data
):
    queries = data.draw(st.integers(1, pairs))
    n = 2 * (pairs + queries) + extra
    vocab = 2 * pairs + 2 + vocab_extra
    x, y = mqar(
        batch,
        n,
        pairs,
        vocab,
        seed=seed,
        num_queries=queries,
        random_non_queries=random_non_queries,
    )
    oracle, scored = solve_mqar(x, vocab), y != IGNORE
    if (
        random_non_queries
    ):  # a random id may repeat a key: the oracle answers it, the task does not score it
        assert torch.equal(oracle[scored], y[scored]) and bool((oracle != IGNORE)[scored].all())
    else:
        assert torch.equal(oracle, y)
    assert (scored.sum(dim=1) == queries).all()
    keys, values = x[:, 0 : 2 * pairs : 2], x[:, 1 : 2 * pairs : 2]
    assert all(len(set(row.tolist())) == pairs for row in keys)  # distinct keys per row (Zoology)
    assert all(len(set(row.tolist())) == pairs for row in values)  # and distinct values
    assert (
        int(keys.min()) >= 1
        and int(keys.max()) < vocab // 2 <= int(values.min())
        and int(values.max()) < vocab
    )
    rows, cols = torch.nonzero(scored, as_tuple=True)
    assert (
        bool(((cols - 2 * pairs) % 2 == 0).all()) and int(cols.min()) >= 2 * pairs
    )  # even offsets of the query region
    if (
        not random_non_queries
    ):  # the value does not follow its query: the region holds only the queried keys
        region = x[:, 2 * pairs :]
        assert int((region != 0).sum()) == int(scored.sum())


def test_mqar_query_slots_follow_zoologys_power_law():
    """The slots' distribution equals Zoology's draw: np.random.choice(space, P, replace=False, p ∝
    i^(a-1))."""
    pairs, n, a, batch = 4, 40, 0.01, 4000
    space = (n - 2 * pairs) // 2
    x, y = mqar(batch, n, pairs, 64, seed=5, power_a=a)
    _, cols = torch.nonzero(y != IGNORE, as_tuple=True)
    ours = np.bincount(((cols - 2 * pairs) // 2).numpy(), minlength=space) / cols.numel()
    p = a * np.arange(1, space + 1) ** (a - 1)
    rng = np.random.RandomState(0)
    ref = np.bincount(
        np.concatenate(
            [rng.choice(space, pairs, replace=False, p=p / p.sum()) for _ in range(batch)]
        ),
        minlength=space,
    ) / (batch * pairs)
    assert np.abs(ours - ref).max() < 0.02 and ours[0] > 3 * ours[-1]  # short gaps likely
    x, y = mqar(batch, n, pairs, 64, seed=5, power_a=1.0)  # power_a = 1: uniform slots
    _, cols = torch.nonzero(y != IGNORE, as_tuple=True)
    uniform = np.bincount(((cols - 2 * pairs) // 2).numpy(), minlength=space) / cols.numel()
    assert np.abs(uniform - 1 / space).max() < 0.01


def test_mqar_non_queries_are_random_tokens_of_the_whole_vocabulary():
    x, y = mqar(2000, 32, 4, 40, seed=2)
    region = x[:, 8:][y[:, 8:] == IGNORE]
    counts = np.bincount(region.numpy(), minlength=40) / region.numel()
    assert np.abs(counts - 1 / 40).max() < 0.005  # uniform over 0..V-1, keys and values included
    x0, y0 = mqar(50, 32, 4, 40, seed=2, random_non_queries=False)
    assert int(x0[:, 8:][y0[:, 8:] == IGNORE].abs().sum()) == 0


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 4),
    pairs=st.integers(1, 6),
    gap=st.integers(1, 40),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_long_range_answers_are_far_and_correct(batch, pairs, gap, seed, data):
    queries = data.draw(st.integers(1, pairs))
    n = 2 * (pairs + queries) + gap
    vocab = 2 * pairs + 5
    x, y = long_range_retrieval(batch, n, pairs, vocab, seed=seed, num_queries=queries)
    assert torch.equal(solve_mqar(x, vocab), y)
    dist = min_query_distance(n, pairs, queries)
    for b in range(batch):
        for i in torch.nonzero(y[b] != IGNORE).flatten().tolist():
            j = (
                x[b, : 2 * pairs].tolist().index(int(x[b, i]))
            )  # where the key sits in the pair block
            assert i - (j + 1) >= dist
    # the bound is attained: some query is exactly min_query_distance after its value when it asks
    # the last pair
    assert dist == n - 2 * queries - (2 * pairs - 1)


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 4),
    tokens=st.integers(1, 10),
    extra=st.integers(0, 20),
    vocab=st.integers(3, 30),
    seed=st.integers(0, 10_000),
)
def test_selective_copy_targets_match_oracle(batch, tokens, extra, vocab, seed):
    n = 2 * tokens + extra
    x, y = selective_copy(batch, n, tokens, vocab, seed=seed)
    assert torch.equal(solve_selective_copy(x), y)
    assert ((y != IGNORE).sum(dim=1) == tokens).all()
    assert (x[:, n - tokens] == 1).all()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_by_seed(name):
    a = TASKS[name](4, 48, 6, 33, seed=11)
    b = TASKS[name](4, 48, 6, 33, seed=11)
    c = TASKS[name](4, 48, 6, 33, seed=12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mqar_queries_spread_over_the_sequence():
    """Query distances vary (some near, some far), unlike long_range_retrieval."""
    x, y = mqar(64, 128, 8, 129, seed=0)
    pos = torch.nonzero(y != IGNORE)[:, 1]
    assert int(pos.min()) == 16 and int(pos.max()) > 100


def test_query_accuracy_scores_only_targets():
    x, y = mqar(8, 32, 4, 17, seed=1)
    perfect = torch.nn.functional.one_hot(y.clamp(min=0), 17).float()
    assert query_accuracy(perfect, y) == 1.0
    wrong = torch.nn.functional.one_hot((y.clamp(min=0) + 1) % 17, 17).float()
    assert query_accuracy(wrong, y) == 0.0
    half = perfect.clone()
    rows, cols = torch.nonzero(y != IGNORE, as_tuple=True)
    half[rows[::2], cols[::2]] = wrong[rows[::2], cols[::2]]
    m = len(rows)
    assert query_accuracy(half, y) == pytest.approx(1 - np.ceil(m / 2) / m)


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: mqar(0, 32, 4, 17), ValueError, "batch"),
        (lambda: mqar(2, 32, 4, 17, seed=-1), ValueError, "seed"),
        (lambda: mqar(2, 32, 4.0, 17), TypeError, "num_pairs"),
        (lambda: mqar(2, 15, 4, 17), ValueError, "seq_len"),
        (lambda: mqar(2, 32, 4, 8), ValueError, "vocab_size"),
        (lambda: mqar(2, 32, 4, 17, num_queries=5), ValueError, "num_queries"),
        (lambda: mqar(2, 32, 4, 17, power_a=0), ValueError, "power_a"),
        (lambda: mqar(2, 32, 4, 17, random_non_queries=1), TypeError, "random_non_queries"),
        (lambda: long_range_retrieval(2, 10, 4, 17), ValueError, "seq_len"),
        (lambda: long_range_retrieval(2, 32, 4, 17, num_queries=0), ValueError, "num_queries"),
        (lambda: selective_copy(2, 7, 4, 10), ValueError, "seq_len"),
        (lambda: selective_copy(2, 16, 4, 2), ValueError, "vocab_size"),
        (lambda: selective_copy(2, 16, 0, 10), ValueError, "num_tokens"),
        (lambda: min_query_distance(0, 2), ValueError, "seq_len"),
        (
            lambda: query_accuracy(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)),
            TypeError,
            "logits",
        ),
        (
            lambda: query_accuracy(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)),
            ValueError,
            "y",
        ),
        (lambda: query_accuracy(torch.zeros(2, 3, 5), torch.full((2, 3), IGNORE)), ValueError, "y"),
    ],
    ids=[
        "batch",
        "seed",
        "pairs-type",
        "mqar-short",
        "vocab",
        "queries",
        "power-a",
        "random-type",
        "lr-short",
        "lr-queries",
        "copy-short",
        "copy-vocab",
        "copy-tokens",
        "distance",
        "logits-dim",
        "y-shape",
        "y-empty",
    ],
)
def test_bad_input_names_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
