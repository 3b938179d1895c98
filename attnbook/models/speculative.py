"""Speculative decoding (Leviathan et al., 2023; Chen et al., 2023) with KV caches (chapter 10).

A small draft model proposes γ tokens one at a time; the target model scores all of them in one
call; each drafted token x is accepted with probability min(1, p(x)/q(x)) (p the target's, q the
draft's distribution), the first rejected one is replaced by a sample from norm(max(0, p − q)),
and when all γ are accepted the target's last distribution gives one more token. The emitted
tokens are distributed exactly as the target's own samples. Greedy mode accepts a drafted token
iff it is the target's argmax, so the output equals greedy target-only decoding.

Models are called as ``model(idx, cache) -> logits`` with ``model.new_cache()``
(:class:`attnbook.models.decoder.Decoder`), batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnbook.checks import check_positive_int

__all__ = ["SpecStats", "truncate_cache", "target_decode", "speculative_decode"]


@dataclass
class SpecStats:
    """Counts of one speculative run: target calls, draft calls, drafted, accepted and emitted
    tokens (before the last step is cut at the length asked for), and acceptance trials (drafted
    tokens the target judged: accepted ones plus one per rejection)."""

    target_calls: int = 0
    draft_calls: int = 0
    drafted: int = 0
    accepted: int = 0
    trials: int = 0
    emitted: int = 0

    @property
    def alpha(self) -> float:
        """Measured acceptance rate: accepted / trials (the i.i.d. estimate of α)."""
        return self.accepted / self.trials

    @property
    def tokens_per_call(self) -> float:
        """Tokens emitted per target call (accepted drafts plus the target's own token)."""
        return self.emitted / self.target_calls


def truncate_cache(cache, tokens: int) -> None:
    """Drop everything after the first ``tokens`` cached tokens of a ``Decoder`` KV cache."""
    for store in (cache.keys, cache.values):
        for i, t in enumerate(store):
            if t is not None:
                store[i] = t[:, :, :tokens]


def _prompt(prompt) -> torch.Tensor:
    if not isinstance(prompt, torch.Tensor) or prompt.dtype != torch.long or prompt.dim() != 2:
        raise TypeError("prompt must be a (1, N) torch.long tensor")
    if prompt.shape[0] != 1 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (1, N) with N >= 1, got {tuple(prompt.shape)}")
    return prompt


def _feed(model, cache, tokens: torch.Tensor) -> torch.Tensor:
    """Feed the tokens not yet in ``cache``; return the logits at every fed position, (n, |V|)."""
    return model(tokens[:, cache.tokens :], cache)[0]


def _pick(logits: torch.Tensor, greedy: bool, generator) -> int:
    """Argmax, or a sample drawn on the CPU (``generator`` is a CPU generator on any device)."""
    if greedy:
        return int(logits.argmax())
    return int(torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator))


@torch.no_grad()
def target_decode(
    model, prompt: torch.Tensor, new_tokens: int, *, greedy: bool = True, generator=None
) -> torch.Tensor:
    """Target-only decoding, one token per call: the reference. Returns (1, N + new_tokens)."""
    tokens = _prompt(prompt)
    check_positive_int("new_tokens", new_tokens)
    cache = model.new_cache()
    for _ in range(new_tokens):
        nxt = _pick(_feed(model, cache, tokens)[-1], greedy, generator)
        tokens = torch.cat([tokens, tokens.new_tensor([[nxt]])], dim=1)
    return tokens


@torch.no_grad()
def speculative_decode(
    target,
    draft,
    prompt: torch.Tensor,
    new_tokens: int,
    gamma: int,
    *,
    greedy: bool = True,
    generator=None,
) -> tuple[torch.Tensor, SpecStats]:
    """Speculative decoding of ``new_tokens`` tokens with draft length ``gamma``. Chapter 10.

    Returns the tokens (1, N + new_tokens) and the :class:`SpecStats` of the run.
    """
    tokens = _prompt(prompt)
    check_positive_int("new_tokens", new_tokens)
    check_positive_int("gamma", gamma)
    goal = tokens.shape[1] + new_tokens
    t_cache, d_cache, stats = target.new_cache(), draft.new_cache(), SpecStats()
    while tokens.shape[1] < goal:
        n0 = tokens.shape[1]
        g = min(gamma, goal - n0)  # never draft past the length asked for
        drafted, q = [], []
        for _ in range(g):
            logits = _feed(draft, d_cache, tokens)[-1]
            stats.draft_calls += 1
            q.append(logits.softmax(-1))
            drafted.append(_pick(logits, greedy, generator))
            tokens = torch.cat([tokens, tokens.new_tensor([[drafted[-1]]])], dim=1)
        p = _feed(target, t_cache, tokens)[-g - 1 :].softmax(-1)  # (γ + 1, |V|)
        stats.target_calls += 1
        stats.drafted += g
        kept = 0
        extra = None
        for i, x in enumerate(drafted):
            stats.trials += 1
            if greedy:
                ok = int(p[i].argmax()) == x
            else:
                u = torch.rand((), generator=generator, dtype=p.dtype)  # on the CPU, as sampling
                ok = bool(u * q[i][x] <= p[i][x])  # u < p/q, without dividing by q
            if not ok:
                if greedy:
                    extra = int(p[i].argmax())
                else:
                    residual = (p[i] - q[i]).clamp(min=0)
                    extra = int(
                        torch.multinomial((residual / residual.sum()).cpu(), 1, generator=generator)
                    )
                break
            kept += 1
        stats.accepted += kept
        stats.emitted += kept + 1
        if extra is None:
            extra = _pick(p[g].log(), greedy, generator)
        tokens = torch.cat([tokens[:, : n0 + kept], tokens.new_tensor([[extra]])], dim=1)
        tokens = tokens[:, :goal]
        truncate_cache(t_cache, min(t_cache.tokens, tokens.shape[1] - 1))
        truncate_cache(d_cache, min(d_cache.tokens, tokens.shape[1] - 1))
    return tokens, stats
