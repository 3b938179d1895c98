"""Compute-optimal allocation of a training budget (chapter 6, Designing efficient architectures).

Training a model of N parameters on D tokens costs C ≈ 6·N·D FLOPs. For a budget C,
three published answers to "how large a model, how many tokens":

- ``"chinchilla"``: Hoffmann et al. 2022's rule, about 20 tokens per parameter, so
  N = sqrt(C / 120) and D = 20·N, both ∝ C^0.5;
- ``"chinchilla-fit"``: the minimum of their fitted loss L(N, D) = E + A/N^α + B/D^β
  under 6·N·D = C, N ∝ C^(β/(α+β)) ≈ C^0.45 (their Approach 3);
- ``"kaplan"``: Kaplan et al. 2020, N = 1.3e9 · (C_min / PF-day)^0.73 non-embedding parameters
  and D = 2e10 · (C_min / PF-day)^0.27 tokens, as published (6·N·D is then not exactly C).

Kaplan et al. state their fits in C_min, the compute of an idealised run at a batch far below the
critical batch size (their section 5); a run at the critical batch size, the one they recommend,
takes twice the minimum steps or twice the minimum data, so C ≈ 2·C_min. This module reads a
budget C as C_min = C / 2 (:data:`KAPLAN_C_MIN_PER_C`), the reading under which Hoffmann et al.'s
comparison with Kaplan's law is reproduced (4.68B parameters at 1e21 FLOPs; reading C as C_min
would give 7.77B).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnbook.checks import check_positive_float
from attnbook.cost.flops import PF_DAY, training_flops
from attnbook.plot import labels, loglog_fit

__all__ = ["LAWS", "Allocation", "compute_optimal", "chinchilla_loss", "plot_allocations"]

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: about 20 training tokens per parameter
# Hoffmann et al. 2022, eq. (10) (Approach 3): L(N, D) = E + A / N^alpha + B / D^beta.
CHINCHILLA_FIT = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# Kaplan et al. 2020, Table 6 / Fig. 14: N_opt = N_e (C/PF-day)^p_N (non-embedding),
# D_opt = D_e (C/PF-day)^p_D.
KAPLAN_FIT = {"N_e": 1.3e9, "p_N": 0.73, "D_e": 2e10, "p_D": 0.27}
#: C_min / C for a run at Kaplan et al.'s critical batch size (twice the minimum steps or data).
KAPLAN_C_MIN_PER_C = 0.5

LAWS = ("chinchilla", "chinchilla-fit", "kaplan")


@dataclass(frozen=True)
class Allocation:
    """A compute-optimal (N, D) for budget ``compute`` (FLOPs) under ``law``."""

    law: str
    compute: float
    params: float
    tokens: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def spent(self) -> float:
        """6·N·D of this allocation, FLOPs (equals ``compute`` except for the Kaplan fit)."""
        return training_flops(self.params, self.tokens)


def compute_optimal(compute: float, law: str = "chinchilla") -> Allocation:
    """Parameters N and tokens D for a training budget of ``compute`` FLOPs under ``law``.

    ``law``: one of :data:`LAWS`. Chapter 6.
    """
    c = check_positive_float("compute", compute)
    if law == "chinchilla":
        n = np.sqrt(c / (6 * CHINCHILLA_TOKENS_PER_PARAM))
        return Allocation(law, c, float(n), float(CHINCHILLA_TOKENS_PER_PARAM * n))
    if law == "chinchilla-fit":
        f = CHINCHILLA_FIT
        s = f["alpha"] + f["beta"]
        g = (f["alpha"] * f["A"] / (f["beta"] * f["B"])) ** (1 / s)
        n = g * (c / 6) ** (f["beta"] / s)
        return Allocation(law, c, float(n), float(c / 6 / n))
    if law == "kaplan":
        k, c_min = KAPLAN_FIT, KAPLAN_C_MIN_PER_C * c
        return Allocation(
            law, c, k["N_e"] * (c_min / PF_DAY) ** k["p_N"], k["D_e"] * (c_min / PF_DAY) ** k["p_D"]
        )
    raise ValueError(f"law must be one of {LAWS}, got {law!r}")


def chinchilla_loss(n_params, tokens):
    """Hoffmann et al.'s fitted loss E + A/N^α + B/D^β (nats per token on their data). Chapter 6."""
    n, d = np.asarray(n_params, dtype=float), np.asarray(tokens, dtype=float)
    if np.any(n <= 0) or np.any(d <= 0):
        raise ValueError("n_params and tokens must be > 0")
    f = CHINCHILLA_FIT
    return f["E"] + f["A"] / n ** f["alpha"] + f["B"] / d ** f["beta"]


def plot_allocations(ax_params, ax_tokens, compute, laws=LAWS) -> dict:
    """Draw N(C) on ``ax_params`` and D(C) on ``ax_tokens`` for each law, with log-log slopes.

    Returns {law: (fit of N vs C, fit of D vs C)}.
    """
    compute = np.asarray(compute, dtype=float)
    fits = {}
    for law in laws:
        allocs = [compute_optimal(c, law) for c in compute]
        fits[law] = (
            loglog_fit(ax_params, compute, [a.params for a in allocs], law),
            loglog_fit(ax_tokens, compute, [a.tokens for a in allocs], law),
        )
    labels(ax_params, "training compute C (FLOPs)", "parameters N")
    labels(ax_tokens, "training compute C (FLOPs)", "training tokens D")
    return fits
