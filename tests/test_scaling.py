"""Compute-optimal scaling and depth-vs-width parameter formulas (chapter 6)."""

from __future__ import annotations

import numpy as np
import pytest

from attnbook import cost
from attnbook.experiments import scaling
from attnbook.experiments.scaling import LAWS, chinchilla_loss, compute_optimal
from attnbook.measure import fit_loglog
from attnbook.models.gpt import GPT, GPTConfig

BUDGETS = np.geomspace(1e18, 1e26, 17)

# Hoffmann et al. 2022, Table 3 (Approach 1): parameters, FLOPs, tokens as printed in the paper.
CHINCHILLA_TABLE3 = [
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (1e12, 1.27e26, 21.2e12),
]


def test_chinchilla_rule_spends_the_budget_at_20_tokens_per_param():
    for c in BUDGETS:
        a = compute_optimal(c, "chinchilla")
        assert a.spent == pytest.approx(c, rel=1e-12)
        assert a.tokens_per_param == pytest.approx(20)
    fit_n = fit_loglog(BUDGETS, [compute_optimal(c).params for c in BUDGETS])
    fit_d = fit_loglog(BUDGETS, [compute_optimal(c).tokens for c in BUDGETS])
    assert fit_n.slope == pytest.approx(0.5, abs=1e-9) and fit_d.slope == pytest.approx(
        0.5, abs=1e-9
    )


@pytest.mark.parametrize(
    "params,flops,tokens", CHINCHILLA_TABLE3, ids=[f"N{p:.0e}" for p, _, _ in CHINCHILLA_TABLE3]
)
def test_chinchilla_rule_reproduces_the_papers_table(params, flops, tokens):
    a = compute_optimal(flops, "chinchilla")
    assert a.params == pytest.approx(
        params, rel=0.1
    )  # the table has 20 to 22.4 tokens per parameter
    assert a.tokens == pytest.approx(tokens, rel=0.1)


def test_chinchilla_fit_minimises_the_fitted_loss_on_the_budget_line():
    for c in (1e20, 1e23, 5.76e23):
        a = compute_optimal(c, "chinchilla-fit")
        assert a.spent == pytest.approx(c, rel=1e-12)
        grid = a.params * np.geomspace(0.5, 2, 201)
        losses = chinchilla_loss(grid, c / (6 * grid))
        assert grid[np.argmin(losses)] == pytest.approx(a.params, rel=0.01)
    slope = fit_loglog(
        BUDGETS, [compute_optimal(c, "chinchilla-fit").params for c in BUDGETS]
    ).slope
    f = scaling.CHINCHILLA_FIT
    assert slope == pytest.approx(f["beta"] / (f["alpha"] + f["beta"]), abs=1e-9)
    assert 0.44 < slope < 0.47  # the paper's Approach 3 reports a = 0.46


def test_kaplan_allocation_as_published():
    a = compute_optimal(2 * cost.PF_DAY, "kaplan")  # C_min = C / 2 = one PF-day
    assert a.params == pytest.approx(1.3e9) and a.tokens == pytest.approx(2e10)
    fit_n = fit_loglog(BUDGETS, [compute_optimal(c, "kaplan").params for c in BUDGETS])
    fit_d = fit_loglog(BUDGETS, [compute_optimal(c, "kaplan").tokens for c in BUDGETS])
    assert fit_n.slope == pytest.approx(0.73) and fit_d.slope == pytest.approx(0.27)


def test_kaplan_reading_reproduces_hoffmann_et_al_comparison():
    """Hoffmann et al. compare with Kaplan's law at 1e21 FLOPs: 4.68B parameters, which needs
    C_min = C / 2; reading the budget itself as C_min would give 7.77B."""
    assert compute_optimal(1e21, "kaplan").params == pytest.approx(4.68e9, rel=0.005)
    k = scaling.KAPLAN_FIT
    as_c_min = k["N_e"] * (1e21 / cost.PF_DAY) ** k["p_N"]
    assert as_c_min == pytest.approx(7.77e9, rel=0.005)


def test_kaplan_puts_more_into_parameters_at_large_budgets():
    big = 5.76e23  # Chinchilla's and Gopher's budget
    k, c = compute_optimal(big, "kaplan"), compute_optimal(big, "chinchilla")
    assert k.params > 3 * c.params and k.tokens_per_param < c.tokens_per_param / 10


def test_training_flops_is_6ND():
    assert cost.training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)


@pytest.mark.parametrize(
    "bad,exc",
    [(0, ValueError), (-1e20, ValueError), (float("nan"), ValueError), ("1e20", TypeError)],
    ids=["zero", "negative", "nan", "string"],
)
def test_bad_compute(bad, exc):
    with pytest.raises(exc, match="compute"):
        compute_optimal(bad)


def test_bad_law_and_loss_inputs():
    with pytest.raises(ValueError, match="law"):
        compute_optimal(1e20, "gpt-4")
    with pytest.raises(ValueError, match="n_params"):
        chinchilla_loss(-1, 10)
    with pytest.raises(ValueError, match="tokens"):
        cost.training_flops(1e9, 0)
    assert set(LAWS) == {"chinchilla", "chinchilla-fit", "kaplan"}


SHAPES = [(1, 64, 65, 32), (3, 96, 65, 64), (2, 48, 100, 16), (4, 128, 65, 128)]


@pytest.mark.parametrize("L,d,V,n", SHAPES, ids=[f"L{L}-d{d}-V{V}-n{n}" for L, d, V, n in SHAPES])
def test_gpt_params_formula_against_numel(L, d, V, n):
    for bias in (True, False):
        model = GPT(
            GPTConfig(vocab_size=V, block_size=n, n_layer=L, n_head=4, d_model=d, bias=bias)
        )
        assert sum(p.numel() for p in model.parameters()) == cost.gpt_params(L, d, V, n, bias=bias)
        block = sum(p.numel() for p in model.blocks[0].parameters())
        assert block == cost.layer_params(d, bias=bias)
        for k in (1, 4):  # chapter 5's short convolution in front of each mixer
            model = GPT(
                GPTConfig(
                    vocab_size=V,
                    block_size=n,
                    n_layer=L,
                    n_head=4,
                    d_model=d,
                    bias=bias,
                    short_conv=k,
                )
            )
            assert sum(p.numel() for p in model.parameters()) == cost.gpt_params(
                L, d, V, n, bias=bias, short_conv=k
            )
    assert cost.layer_params(d, bias=False) == 12 * d * d + 2 * d  # 12d² plus the LayerNorm gains


@pytest.mark.parametrize(
    "target,L",
    [(12 * 512**2, 1), (12 * 512**2, 4), (3_000_000, 7), (10**6, 64)],
    ids=["N3M-L1", "N3M-L4", "N3M-L7", "N1M-L64"],
)
def test_width_for_params_is_the_closest_multiple(target, L):
    d = cost.width_for_params(target, L, multiple=16)
    assert d % 16 == 0
    err = abs(L * cost.layer_params(d) - target)
    for other in (d - 16, d + 16):
        if other > 0:
            assert err <= abs(L * cost.layer_params(other) - target)


def test_width_for_params_bad_input():
    with pytest.raises(ValueError, match="layers"):
        cost.width_for_params(10**6, 0)
    with pytest.raises(TypeError, match="n_params"):
        cost.width_for_params(1.5, 2)
