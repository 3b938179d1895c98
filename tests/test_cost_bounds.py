"""Chapter 5: the generalization and recall-capacity formulas of attnbook.cost.bounds."""

import math

import numpy as np
import pytest

from attnbook import cost


def test_vc_bound_at_llm_scale_is_vacuous():
    n = 1e11
    assert cost.vc_rate(n, n) == pytest.approx(math.sqrt(np.log2(n)))  # independent: log2 of n
    assert cost.vc_rate(n, n) == pytest.approx(6.04, abs=0.01)
    with_constants = np.sqrt(2 * n * np.log(np.e * n / n) / n) + np.sqrt(np.log(1 / 0.05) / (2 * n))
    assert cost.vc_bound(n, n) == pytest.approx(with_constants)
    assert cost.vc_bound(n, n) > 1 and cost.vc_rate(n, n) > 1


def test_vc_bound_shrinks_with_data():
    vals = [cost.vc_bound(1e3, n) for n in (1e4, 1e5, 1e6, 1e7)]
    assert all(a > b for a, b in zip(vals, vals[1:])) and vals[-1] < 0.1


@pytest.mark.parametrize(
    "bits, n", [(1e6, 1e9), (1.6e12, 1e11), (100, 1000)], ids=["small", "raw-llm", "tiny"]
)
def test_occam_and_pac_bayes_agree_on_a_point_prior(bits, n):
    """Occam is Hoeffding + a union bound; PAC-Bayes with KL = bits·ln2 differs only in the log
    term."""
    occam = cost.occam_bound(bits, n, delta=0.05)
    assert occam == pytest.approx(math.sqrt((bits * math.log(2) + math.log(20)) / (2 * n)))
    pb = cost.pac_bayes_bound(bits * math.log(2), n, delta=0.05)
    assert pb >= occam  # the extra ln(2√n) term


def test_recall_capacity_is_consistent():
    for s, b, c in [(64, 16, 16), (4096, 32, 8192), (10, 1, 2)]:
        p = cost.max_recall_pairs(s, b, c)
        assert cost.recall_state_bits(p, c) <= s * b < cost.recall_state_bits(p + 1, c)
    assert cost.entry_size_threshold(4096) == pytest.approx(np.sqrt(np.log(4096)))


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: cost.vc_bound(2e3, 1e3), ValueError, "d_vc"),
        (lambda: cost.vc_bound(10, 1e3, delta=1.5), ValueError, "delta"),
        (lambda: cost.vc_rate(10, -1), ValueError, "n"),
        (lambda: cost.vc_rate(10, 100, log_base=1), ValueError, "log_base"),
        (lambda: cost.occam_bound(0, 10), ValueError, "bits"),
        (lambda: cost.pac_bayes_bound(-1, 10), ValueError, "kl"),
        (lambda: cost.max_recall_pairs(10, 8, 1), ValueError, "num_values"),
        (lambda: cost.recall_state_bits(0, 4), ValueError, "num_pairs"),
        (lambda: cost.entry_size_threshold(1), ValueError, "n"),
        (lambda: cost.vc_bound("a", 10), TypeError, "d_vc"),
    ],
    ids=["d-gt-n", "delta", "n", "base", "bits", "kl", "values", "pairs", "threshold", "type"],
)
def test_bounds_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
