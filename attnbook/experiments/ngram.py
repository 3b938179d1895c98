"""Count-based character n-gram baselines (chapter 8): what a table of counts achieves.

An order-K model predicts character c after the K − 1 characters h before it, with hierarchical
(Dirichlet) smoothing: P_K(c | h) = (N(h, c) + β · P_{K−1}(c | h')) / (N(h) + β), where h' drops the
oldest character of h and P_0 is uniform over the vocabulary. β is chosen on the training split (fit
on its first 90 %, scored on its last 10 %), then the model is refit on the whole training split and
scored on the validation split, in nats per character: the same 90/10 split and unit as the models
of chapter 8. Every position is scored with the characters before it in its own split (the first K −
1 positions with a shorter context).
"""

from __future__ import annotations

import numpy as np

from attnbook.checks import check_positive_float, check_positive_int

__all__ = ["BETAS", "NGram", "fit_ngram", "ngram_rows"]

#: Smoothing strengths tried on the training split.
BETAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _as_tokens(name: str, tokens, vocab_size: int) -> np.ndarray:
    t = np.asarray(tokens)
    if t.ndim != 1 or t.size == 0 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(
            f"{name} must be a non-empty 1-D array of token ids, got shape {t.shape}, dtype "
            f"{t.dtype}"
        )
    if t.min() < 0 or t.max() >= vocab_size:
        raise ValueError(f"{name} must hold ids in [0, {vocab_size}), got [{t.min()}, {t.max()}]")
    return t.astype(np.int64)


def _codes(tokens: np.ndarray, length: int, vocab_size: int) -> np.ndarray:
    """For every position t, the code of the ``length``
    tokens before t (shorter near the start: -1 pads)."""
    code = np.zeros(tokens.size, dtype=np.int64)
    for back in range(length, 0, -1):  # oldest first: code = Σ (token + 1) · (V + 1)^power
        prev = np.full(tokens.size, -1, dtype=np.int64)
        prev[back:] = tokens[:-back]
        code = code * (vocab_size + 1) + (prev + 1)
    return code


class NGram:
    """An order-K character model with hierarchical smoothing β (see the module docstring).

    Chapter 8.
    """

    def __init__(self, order: int, vocab_size: int, beta: float = 1.0):
        self.order = check_positive_int("order", order)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.beta = check_positive_float("beta", beta)
        self._tables: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def fit(self, tokens) -> NGram:
        """Count every (context, next) pair of every order 1..K in ``tokens``."""
        t = _as_tokens("tokens", tokens, self.vocab_size)
        self._tables = []
        for length in range(self.order):  # context length 0 .. K-1
            ctx = _codes(t, length, self.vocab_size)
            pair_keys, pair_counts = np.unique(ctx * self.vocab_size + t, return_counts=True)
            ctx_keys, ctx_counts = np.unique(ctx, return_counts=True)
            self._tables.append((pair_keys, pair_counts, ctx_keys, ctx_counts))
        return self

    @staticmethod
    def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(keys, query)
        idx_clipped = np.minimum(idx, keys.size - 1)
        return np.where(keys[idx_clipped] == query, counts[idx_clipped], 0)

    def probs(self, tokens) -> np.ndarray:
        """P(tokens[t] | the K − 1 tokens before t) for every position t, shape (len(tokens),)."""
        if not self._tables:
            raise ValueError("the model is not fitted: call fit(tokens) first")
        t = _as_tokens("tokens", tokens, self.vocab_size)
        p = np.full(t.size, 1.0 / self.vocab_size)
        for length, (pair_keys, pair_counts, ctx_keys, ctx_counts) in enumerate(self._tables):
            ctx = _codes(t, length, self.vocab_size)
            n_pair = self._lookup(pair_keys, pair_counts, ctx * self.vocab_size + t)
            n_ctx = self._lookup(ctx_keys, ctx_counts, ctx)
            p = (n_pair + self.beta * p) / (n_ctx + self.beta)
        return p

    def loss(self, tokens) -> float:
        """Mean negative log-likelihood of ``tokens``, in nats per character."""
        return float(-np.mean(np.log(self.probs(tokens))))


def fit_ngram(
    train, order: int, vocab_size: int, betas=BETAS, dev_fraction: float = 0.1
) -> tuple[NGram, dict]:
    """An order-``order`` model with β chosen on the training split; returns (model fitted on all of
    ``train``, {beta: dev loss}). Chapter 8."""
    train = _as_tokens("train", train, vocab_size)
    cut = int(train.size * (1 - dev_fraction))
    if not 0 < cut < train.size:
        raise ValueError(f"dev_fraction must leave both parts non-empty, got {dev_fraction}")
    dev_losses = {b: NGram(order, vocab_size, b).fit(train[:cut]).loss(train[cut:]) for b in betas}
    best = min(dev_losses, key=dev_losses.get)
    return NGram(order, vocab_size, best).fit(train), dev_losses


def ngram_rows(corpus, orders=(1, 2, 3, 4, 5)) -> list[dict]:
    """One row per order for a :class:`attnbook.experiments.data.CharCorpus`: ``mixer`` =
    ``ngram-K``,
    ``val_loss`` and ``train_loss`` in nats per character, the chosen β. Chapter 8."""
    train, val = corpus.train.numpy(), corpus.val.numpy()
    rows = []
    for order in orders:
        model, dev = fit_ngram(train, order, corpus.vocab_size)
        rows.append(
            {
                "mixer": f"ngram-{order}",
                "order": order,
                "seed": 0,
                "steps": 0,
                "beta": model.beta,
                "dev_losses": {str(b): v for b, v in dev.items()},
                "val_loss": model.loss(val),
                "train_loss": model.loss(train),
            }
        )
    return rows
