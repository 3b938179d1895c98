"""Mixture-of-experts FFN with a top-k router (chapter 6, Designing efficient architectures).

Each of T tokens x_t: (d,) goes to the k experts with the largest router probabilities
p_t = softmax(x_t W_r); expert e is a two-layer FFN d -> d_ff -> d. The output is
sum over the token's kept choices of gate · expert(x_t). The gate is the router
probability for k = 1 (Switch Transformer) and the top-k probabilities renormalised
to sum to 1 for k > 1 (GShard). Each expert takes at most
capacity = ceil(capacity_factor · T · k / E) tokens, filled first choices first and
then in token order; the rest are dropped (they contribute 0, and the residual
connection carries them past the layer). The load-balancing loss of Switch is
E · sum_e f_e · P_e, with f_e the fraction of routing choices (before dropping) that
go to expert e and P_e the mean router probability of e; it equals 1 when the load is
uniform. ``moe_numpy`` is the NumPy float64 reference of the same computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from attnbook.checks import check_array, check_positive_float, check_positive_int, check_tensor
from attnbook.models.gpt import GPT, GPTConfig

__all__ = [
    "capacity",
    "Routing",
    "route",
    "load_balancing_loss",
    "MoE",
    "MoEGPT",
    "route_numpy",
    "load_balancing_loss_numpy",
    "moe_numpy",
]


def capacity(tokens: int, n_experts: int, k: int, capacity_factor: float | None) -> int | None:
    """Slots per expert: ceil(capacity_factor · tokens · k / E); None (no limit) when
    capacity_factor is None."""
    check_positive_int("tokens", tokens)
    check_positive_int("n_experts", n_experts)
    check_positive_int("k", k)
    if k > n_experts:
        raise ValueError(f"k must be <= n_experts ({n_experts}), got {k}")
    if capacity_factor is None:
        return None
    check_positive_float("capacity_factor", capacity_factor)
    return math.ceil(capacity_factor * tokens * k / n_experts)


@dataclass(frozen=True)
class Routing:
    """Where the T tokens went: experts, gates, kept: (T, k); probs: (T, E) router probabilities."""

    experts: torch.Tensor
    gates: torch.Tensor
    kept: torch.Tensor
    probs: torch.Tensor
    capacity: int | None

    def load(self) -> torch.Tensor:
        """(E,) number of kept (token, choice) assignments per expert."""
        return torch.bincount(self.experts[self.kept], minlength=self.probs.shape[-1])

    def dropped_fraction(self) -> float:
        """Fraction of the T·k assignments dropped for lack of capacity."""
        return int((~self.kept).sum()) / self.kept.numel()


def _fill_order_positions(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """experts: (T, k) -> (T, k) slot of each assignment in its expert, first choices first."""
    T, k = experts.shape
    onehot = F.one_hot(experts.t().reshape(-1), n_experts)  # (k·T, E), choice-major order
    slots = (onehot.cumsum(0) * onehot).sum(-1) - 1
    return slots.view(k, T).t()


def route(logits: torch.Tensor, k: int = 1, capacity_factor: float | None = 1.25) -> Routing:
    """Top-k routing with capacity. logits: (T, E) -> :class:`Routing`. Chapter 6."""
    check_tensor("logits", logits, ndim=2)
    T, E = logits.shape
    cap = capacity(T, E, k, capacity_factor)
    probs = torch.softmax(logits, dim=-1)
    top_p, experts = probs.topk(k, dim=-1)
    gates = top_p if k == 1 else top_p / top_p.sum(-1, keepdim=True)
    kept = (
        torch.ones_like(experts, dtype=torch.bool)
        if cap is None
        else _fill_order_positions(experts, E) < cap
    )
    return Routing(experts, gates, kept, probs, cap)


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch load-balancing loss E · Σ_e f_e · P_e (=
    1 when balanced). probs: (T, E), experts: (T, k)."""
    E = probs.shape[-1]
    f = torch.bincount(experts.reshape(-1), minlength=E).to(probs.dtype) / experts.numel()
    return E * (f * probs.mean(0)).sum()


class MoE(nn.Module):
    """Mixture-of-experts FFN. x: (..., d_model) -> (..., d_model). Chapter 6.

    After each forward, ``self.routing`` holds the :class:`Routing` and ``self.aux_loss``
    the load-balancing loss (a scalar in the autograd graph).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        k: int = 1,
        capacity_factor: float | None = 1.25,
        bias: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("d_model", d_model),
            ("d_ff", d_ff),
            ("n_experts", n_experts),
            ("k", k),
        ):
            check_positive_int(name, value)
        capacity(1, n_experts, k, capacity_factor)  # validates k and capacity_factor
        self.d_model, self.d_ff, self.n_experts, self.k, self.capacity_factor = (
            d_model,
            d_ff,
            n_experts,
            k,
            capacity_factor,
        )
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(n_experts, d_model, d_ff) * 0.02)
        self.w2 = nn.Parameter(torch.randn(n_experts, d_ff, d_model) * 0.02)
        self.b1 = nn.Parameter(torch.zeros(n_experts, d_ff)) if bias else None
        self.b2 = nn.Parameter(torch.zeros(n_experts, d_model)) if bias else None
        nn.init.normal_(self.router.weight, std=0.02)
        self.routing: Routing | None = None
        self.aux_loss: torch.Tensor | None = None

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e's FFN on x: (m, d) -> (m, d)."""
        h = x @ self.w1[e]
        h = F.gelu(h + self.b1[e] if self.b1 is not None else h)
        h = h @ self.w2[e]
        return h + self.b2[e] if self.b2 is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have last dimension d_model={self.d_model}, got shape {tuple(x.shape)}"
            )
        tokens = x.reshape(-1, self.d_model)
        r = route(self.router(tokens), self.k, self.capacity_factor)
        y = torch.zeros_like(tokens)
        for e in range(self.n_experts):
            tok, slot = torch.nonzero((r.experts == e) & r.kept, as_tuple=True)
            if tok.numel():
                y = y.index_add(0, tok, self.expert(e, tokens[tok]) * r.gates[tok, slot, None])
        self.routing, self.aux_loss = r, load_balancing_loss(r.probs, r.experts)
        return y.reshape(x.shape)


class MoEGPT(nn.Module):
    """:class:`attnbook.models.gpt.GPT` whose every FFN is an :class:`MoE` of width config.d_ff.

    In training mode the loss is the language-model loss plus ``balance_coef`` times the sum of
    the layers' load-balancing losses (Switch uses 0.01); in eval mode it is the LM loss alone.
    idx: (B, N) -> (logits (B, N, |V|), loss or None).

    Chapter 6.
    """

    def __init__(
        self,
        config: GPTConfig,
        n_experts: int,
        k: int = 1,
        capacity_factor: float | None = 1.25,
        balance_coef: float = 0.01,
    ):
        super().__init__()
        if (
            isinstance(balance_coef, bool)
            or not isinstance(balance_coef, (int, float))
            or not balance_coef >= 0
        ):
            raise ValueError(f"balance_coef must be a number >= 0, got {balance_coef!r}")
        self.config, self.balance_coef = config, float(balance_coef)
        self.gpt = GPT(config)
        for block in self.gpt.blocks:
            block.mlp = MoE(
                config.d_model, config.d_ff, n_experts, k, capacity_factor, bias=config.bias
            )

    def moe_layers(self) -> list[MoE]:
        return [block.mlp for block in self.gpt.blocks]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits, loss = self.gpt(idx, targets)
        if loss is not None and self.training and self.balance_coef:
            loss = loss + self.balance_coef * sum(m.aux_loss for m in self.moe_layers())
        return logits, loss


# ---------------------------------------------------------------- NumPy float64 reference


def route_numpy(logits, k: int = 1, capacity_factor: float | None = 1.25):
    """NumPy top-k routing. logits: (T, E) -> (experts
    (T, k), gates (T, k), kept (T, k), probs (T, E))."""
    logits = check_array("logits", logits, ndim=2)
    T, E = logits.shape
    cap = capacity(T, E, k, capacity_factor)
    z = np.exp(logits - logits.max(-1, keepdims=True))
    probs = z / z.sum(-1, keepdims=True)
    experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    top_p = np.take_along_axis(probs, experts, axis=-1)
    gates = top_p if k == 1 else top_p / top_p.sum(-1, keepdims=True)
    kept = np.ones((T, k), dtype=bool)
    if cap is not None:
        used = np.zeros(E, dtype=int)
        for choice in range(k):  # first choices of every token, then second choices, ...
            for t in range(T):
                e = experts[t, choice]
                kept[t, choice] = used[e] < cap
                used[e] += 1
    return experts, gates, kept, probs


def load_balancing_loss_numpy(probs, experts) -> float:
    """NumPy E · Σ_e f_e · P_e. probs: (T, E), experts: (T, k)."""
    E = probs.shape[-1]
    f = np.bincount(np.asarray(experts).reshape(-1), minlength=E) / np.asarray(experts).size
    return float(E * np.sum(f * probs.mean(0)))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def moe_numpy(x, w_router, w1, b1, w2, b2, k: int = 1, capacity_factor: float | None = 1.25):
    """NumPy float64 MoE layer, token by token.

    x: (T, d), w_router: (d, E), w1: (E, d, d_ff), b1: (E, d_ff), w2: (E, d_ff, d), b2: (E, d)
    -> (y (T, d), load-balancing loss, load (E,) kept assignments per expert).
    """
    x = check_array("x", x, ndim=2)
    experts, gates, kept, probs = route_numpy(
        x @ check_array("w_router", w_router, ndim=2), k, capacity_factor
    )
    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        for c in range(k):
            if kept[t, c]:
                e = experts[t, c]
                y[t] += gates[t, c] * (_gelu(x[t] @ w1[e] + b1[e]) @ w2[e] + b2[e])
    load = np.bincount(experts[kept], minlength=probs.shape[1])
    return y, load_balancing_loss_numpy(probs, experts), load
