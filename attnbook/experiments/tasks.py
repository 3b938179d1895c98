"""Synthetic recall tasks generated in code (chapter 5, What efficient attention gives up).

Every generator returns ``(x, y)``: ``x`` (B, N) token ids, ``y`` (B, N) next-token
targets that are ``-100`` everywhere except at the positions the task scores, so
:class:`attnbook.models.gpt.GPT` trains only on the answers and :func:`query_accuracy`
scores only them. Generation is deterministic in ``seed`` (NumPy ``default_rng``).
Each task has an oracle (``solve_*``) that recomputes the answers from ``x`` alone
by a plain lookup, which is how the tests check the targets.

Token layout shared by the tasks: id 0 is the blank/noise token; the other ids
are split between keys (or data tokens) and values as each docstring says.
"""
from __future__ import annotations

import numpy as np
import torch

from attnbook.checks import check_nonnegative_int, check_positive_int

__all__ = [
    "IGNORE",
    "TASKS",
    "mqar",
    "selective_copy",
    "long_range_retrieval",
    "solve_mqar",
    "solve_selective_copy",
    "query_accuracy",
    "min_query_distance",
]

IGNORE = -100  # target value ignored by the loss and by query_accuracy


def _check_common(batch: int, seq_len: int, vocab_size: int, seed: int) -> np.random.Generator:
    check_positive_int("batch", batch)
    check_positive_int("seq_len", seq_len)
    check_positive_int("vocab_size", vocab_size)
    check_nonnegative_int("seed", seed)
    return np.random.default_rng(seed)


def _split_vocab(vocab_size: int, num_pairs: int) -> tuple[int, int]:
    """Keys are ids 1..K, values K+1..vocab_size-1 (K = half of the non-blank ids)."""
    num_keys = (vocab_size - 1) // 2
    num_values = vocab_size - 1 - num_keys
    if num_keys < num_pairs or num_values < 2:
        raise ValueError(
            f"vocab_size must leave at least num_pairs={num_pairs} key ids and 2 value ids "
            f"(vocab_size >= {2 * num_pairs + 1}), got {vocab_size}"
        )
    return num_keys, num_values


def _random_pairs(rng, batch: int, num_pairs: int, num_keys: int, num_values: int):
    """(B, P) distinct keys per row in 1..K and (B, P) values in K+1..K+num_values."""
    keys = np.argsort(rng.random((batch, num_keys)), axis=1)[:, :num_pairs] + 1
    values = rng.integers(num_keys + 1, num_keys + 1 + num_values, size=(batch, num_pairs))
    return keys, values


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


def mqar(batch: int, seq_len: int, num_pairs: int, vocab_size: int, seed: int = 0,
         num_queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-query associative recall (Arora et al. 2023, Zoology). Chapter 5.

    Each row starts with ``num_pairs`` key-value pairs ``k1 v1 k2 v2 ...`` (distinct keys
    from ids 1..K, values from K+1..vocab_size-1), followed by blanks (id 0) among which
    ``num_queries`` of the keys (default: all of them, in random order) reappear at
    random even offsets, each followed by its value as in Zoology. The target at a
    queried key is its value; every other target is -100. Returns x, y: (B, seq_len) long.
    """
    rng = _check_common(batch, seq_len, vocab_size, seed)
    check_positive_int("num_pairs", num_pairs)
    num_queries = num_pairs if num_queries is None else check_positive_int("num_queries", num_queries)
    if num_queries > num_pairs:
        raise ValueError(f"num_queries must be <= num_pairs={num_pairs}, got {num_queries}")
    slots = (seq_len - 2 * num_pairs) // 2
    if slots < num_queries:
        raise ValueError(
            f"seq_len must be >= 2*(num_pairs + num_queries) = {2 * (num_pairs + num_queries)}, got {seq_len}")
    num_keys, num_values = _split_vocab(vocab_size, num_pairs)
    keys, values = _random_pairs(rng, batch, num_pairs, num_keys, num_values)
    x = np.zeros((batch, seq_len), dtype=np.int64)
    y = np.full((batch, seq_len), IGNORE, dtype=np.int64)
    x[:, 0:2 * num_pairs:2], x[:, 1:2 * num_pairs:2] = keys, values
    rows = np.arange(batch)[:, None]
    which = np.argsort(rng.random((batch, num_pairs)), axis=1)[:, :num_queries]  # which pairs are asked
    slot = np.sort(np.argsort(rng.random((batch, slots)), axis=1)[:, :num_queries], axis=1)
    pos = 2 * num_pairs + 2 * slot
    x[rows, pos], x[rows, pos + 1] = keys[rows, which], values[rows, which]
    y[rows, pos] = values[rows, which]
    return _as_tensors(x, y)


def long_range_retrieval(batch: int, seq_len: int, num_pairs: int, vocab_size: int, seed: int = 0,
                         num_queries: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Retrieval across a long gap: pairs first, queries last, random distractors between. Chapter 5.

    Layout: ``num_pairs`` key-value pairs, then ``seq_len - 2*num_pairs - 2*num_queries`` distractor
    tokens drawn uniformly from the value ids (never a key), then ``num_queries`` (key, value) queries.
    Every answer lies at least :func:`min_query_distance` positions before its query, so any
    local window shorter than that cannot see it. Returns x, y: (B, seq_len) long.
    """
    rng = _check_common(batch, seq_len, vocab_size, seed)
    check_positive_int("num_pairs", num_pairs)
    check_positive_int("num_queries", num_queries)
    if num_queries > num_pairs:
        raise ValueError(f"num_queries must be <= num_pairs={num_pairs}, got {num_queries}")
    gap = seq_len - 2 * num_pairs - 2 * num_queries
    if gap < 1:
        raise ValueError(f"seq_len must be > 2*(num_pairs + num_queries) = {2 * (num_pairs + num_queries)}, got {seq_len}")
    num_keys, num_values = _split_vocab(vocab_size, num_pairs)
    keys, values = _random_pairs(rng, batch, num_pairs, num_keys, num_values)
    x = rng.integers(num_keys + 1, num_keys + 1 + num_values, size=(batch, seq_len))
    y = np.full((batch, seq_len), IGNORE, dtype=np.int64)
    x[:, 0:2 * num_pairs:2], x[:, 1:2 * num_pairs:2] = keys, values
    rows = np.arange(batch)[:, None]
    which = np.argsort(rng.random((batch, num_pairs)), axis=1)[:, :num_queries]
    pos = seq_len - 2 * num_queries + 2 * np.arange(num_queries)[None, :]
    x[rows, pos], x[rows, pos + 1] = keys[rows, which], values[rows, which]
    y[rows, pos] = values[rows, which]
    return _as_tensors(x, y)


def min_query_distance(seq_len: int, num_pairs: int, num_queries: int = 1) -> int:
    """Smallest distance (in positions) from a long-range query back to the value it asks for. Chapter 5."""
    for name, value in (("seq_len", seq_len), ("num_pairs", num_pairs), ("num_queries", num_queries)):
        check_positive_int(name, value)
    return seq_len - 2 * num_queries - 2 * num_pairs + 1


def selective_copy(batch: int, seq_len: int, num_tokens: int, vocab_size: int, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective copying (Gu & Dao 2023, Mamba): copy the scattered data tokens, in order. Chapter 5.

    The first ``seq_len - num_tokens`` positions hold ``num_tokens`` data tokens (ids
    2..vocab_size-1) at random positions among blanks (id 0); then a separator (id 1)
    and the data tokens again (teacher forcing). The targets are the data tokens, in
    order, at the separator and the positions after it. Returns x, y: (B, seq_len) long.
    """
    rng = _check_common(batch, seq_len, vocab_size, seed)
    check_positive_int("num_tokens", num_tokens)
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (blank, separator and a data token), got {vocab_size}")
    prefix = seq_len - num_tokens
    if prefix < num_tokens:
        raise ValueError(f"seq_len must be >= 2*num_tokens = {2 * num_tokens}, got {seq_len}")
    data = rng.integers(2, vocab_size, size=(batch, num_tokens))
    pos = np.sort(np.argsort(rng.random((batch, prefix)), axis=1)[:, :num_tokens], axis=1)
    x = np.zeros((batch, seq_len), dtype=np.int64)
    y = np.full((batch, seq_len), IGNORE, dtype=np.int64)
    x[np.arange(batch)[:, None], pos] = data
    x[:, prefix] = 1
    x[:, prefix + 1:] = data[:, :-1]
    y[:, prefix:] = data
    return _as_tensors(x, y)


def solve_mqar(x, vocab_size: int) -> torch.Tensor:
    """Oracle for :func:`mqar` and :func:`long_range_retrieval`: answer every repeated key by lookup.

    x: (B, N) ids. A key id (1..K, K = (vocab_size-1)//2) seen for the first time is stored with
    the token after it; a later occurrence of a stored key gets the stored value as target.
    Returns y: (B, N) with -100 elsewhere.
    """
    check_positive_int("vocab_size", vocab_size)
    x = np.asarray(x)
    num_keys = (vocab_size - 1) // 2
    y = np.full(x.shape, IGNORE, dtype=np.int64)
    for b, row in enumerate(x):
        memory: dict[int, int] = {}
        for i, tok in enumerate(row[:-1].tolist()):
            if not 1 <= tok <= num_keys:
                continue
            if tok in memory:
                y[b, i] = memory[tok]
            else:
                memory[tok] = int(row[i + 1])
    return torch.from_numpy(y)


def solve_selective_copy(x) -> torch.Tensor:
    """Oracle for :func:`selective_copy`: the non-blank tokens before the separator, in order.

    x: (B, N) ids -> y: (B, N) with the copied tokens from the separator on, -100 before it.
    """
    x = np.asarray(x)
    y = np.full(x.shape, IGNORE, dtype=np.int64)
    for b, row in enumerate(x):
        sep = int(np.flatnonzero(row == 1)[0])
        data = row[:sep][row[:sep] != 0]
        y[b, sep:sep + len(data)] = data
    return torch.from_numpy(y)


def query_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of scored positions (y != -100) where argmax(logits) equals y. Chapter 5.

    logits: (B, N, |V|), y: (B, N).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(f"logits must be a (B, N, V) tensor, got {getattr(logits, 'shape', type(logits))}")
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"y must be a tensor of shape {tuple(logits.shape[:2])}, got {getattr(y, 'shape', type(y))}")
    scored = y != IGNORE
    if not bool(scored.any()):
        raise ValueError("y has no scored positions (every target is -100)")
    hits = (logits.argmax(-1) == y) & scored
    return float(hits.sum()) / float(scored.sum())


TASKS = {"mqar": mqar, "long_range": long_range_retrieval, "selective_copy": selective_copy}
