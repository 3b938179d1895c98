"""Synthetic recall tasks generated in code (chapter 5, What efficient attention gives up).

Every generator returns ``(x, y)``: ``x`` (B, N) token ids, ``y`` (B, N) next-token
targets that are ``-100`` everywhere except at the positions the task scores, so
:class:`attnbook.models.gpt.GPT` trains only on the answers and :func:`query_accuracy`
scores only them. Generation is deterministic in ``seed`` (NumPy ``default_rng``).
Each task has an oracle (``solve_*``) that recomputes the answers from ``x`` alone
by a plain lookup, which is how the tests check the targets.

Token layout shared by the recall tasks: id 0 is the blank token; keys are ids 1..V//2-1 and
values V//2..V-1, Zoology's split (:func:`mqar_vocab`); selective copying uses its own layout.
"""

from __future__ import annotations

import numpy as np
import torch

from attnbook.checks import (
    check_bool,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
)

__all__ = [
    "IGNORE",
    "TASKS",
    "mqar",
    "mqar_vocab",
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


def mqar_vocab(vocab_size: int) -> tuple[range, range]:
    """Zoology's vocabulary split for MQAR: key ids
    1..V//2-1 and value ids V//2..V-1 (id 0 is the blank).

    Returns (keys, values) as ranges. Chapter 5.
    """
    check_positive_int("vocab_size", vocab_size)
    return range(1, vocab_size // 2), range(vocab_size // 2, vocab_size)


def _random_pairs(rng, batch: int, num_pairs: int, vocab_size: int):
    """(B, P) distinct keys and (B, P) distinct values
    per row, drawn without replacement as in Zoology."""
    keys, values = mqar_vocab(vocab_size)
    if len(keys) < num_pairs or len(values) < num_pairs:
        raise ValueError(
            f"vocab_size must leave num_pairs={num_pairs} key ids (1..V//2-1) and as many value "
            "ids (V//2..V-1), "
            f"i.e. vocab_size >= {2 * num_pairs + 2}, got {vocab_size}"
        )
    k = np.argsort(rng.random((batch, len(keys))), axis=1)[:, :num_pairs] + keys.start
    v = np.argsort(rng.random((batch, len(values))), axis=1)[:, :num_pairs] + values.start
    return k, v


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


def _query_region(seq_len: int, num_pairs: int, num_queries: int | None) -> tuple[int, int]:
    """(num_queries, slots): the queries MQAR asks (default: every pair) and the even positions
    left for them after the context."""
    check_positive_int("num_pairs", num_pairs)
    num_queries = (
        num_pairs if num_queries is None else check_positive_int("num_queries", num_queries)
    )
    if num_queries > num_pairs:
        raise ValueError(f"num_queries must be <= num_pairs={num_pairs}, got {num_queries}")
    slots = (seq_len - 2 * num_pairs) // 2
    if slots < num_queries:
        raise ValueError(
            f"seq_len must be >= 2*(num_pairs + num_queries) = {2 * (num_pairs + num_queries)}, "
            f"got {seq_len}"
        )
    return num_queries, slots


def _power_law_slots(rng, batch: int, slots: int, num_queries: int, power_a: float):
    """(B, num_queries) slots g, p(g) ∝ (g+1)^(power_a-1), without replacement, in the order
    drawn (an exponential race is the same as successive draws)."""
    weight = np.arange(1, slots + 1, dtype=np.float64) ** (power_a - 1)
    return np.argsort(rng.exponential(size=(batch, slots)) / weight, axis=1)[:, :num_queries]


def mqar(
    batch: int,
    seq_len: int,
    num_pairs: int,
    vocab_size: int,
    seed: int = 0,
    num_queries: int | None = None,
    power_a: float = 0.01,
    random_non_queries: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-query associative recall as Zoology generates it (Arora et al. 2023). Chapter 5.

    Each row starts with the context: ``num_pairs`` pairs ``k1 v1 k2 v2 ...``, keys drawn without
    replacement from ids 1..V//2-1 and values without replacement from V//2..V-1
    (:func:`mqar_vocab`). The query region follows: ``num_queries`` of the keys (default: all)
    reappear once each at even offsets 2g from its start, the slots g drawn without replacement
    with probability p(g) ∝ (g+1)^(power_a-1), so short gaps are likely (power_a = 1: uniform).
    A query is *not* followed by its value; every other position of the region is a random id
    from the whole vocabulary (``random_non_queries``, Zoology's default) or the blank 0. The
    target at a query is its key's value (the next-token label), -100 everywhere else; accuracy is
    the fraction of targets the argmax hits (:func:`query_accuracy`). Needs 2·(num_pairs +
    num_queries) <= seq_len (Zoology: 4·num_pairs <= seq_len).

    Differences from Zoology's ``multiquery_ar``, all deliberate: random numbers come from NumPy's
    ``default_rng(seed)``, so rows are equal in distribution, not bit for bit; ``num_queries`` may
    ask fewer keys than were stored (Zoology asks all); odd ``seq_len`` and ``vocab_size <=
    seq_len`` are allowed (Zoology asserts an even length and ``vocab_size > seq_len``, neither of
    which the construction needs); a single pass (Zoology's ``num_passes = 1``).
    Returns x, y: (B, seq_len) long.
    """
    rng = _check_common(batch, seq_len, vocab_size, seed)
    num_queries, slots = _query_region(seq_len, num_pairs, num_queries)
    power_a = check_positive_float("power_a", power_a)
    random_non_queries = check_bool("random_non_queries", random_non_queries)
    keys, values = _random_pairs(rng, batch, num_pairs, vocab_size)
    if random_non_queries:
        x = rng.integers(0, vocab_size, size=(batch, seq_len))
    else:
        x = np.zeros((batch, seq_len), dtype=np.int64)
    y = np.full((batch, seq_len), IGNORE, dtype=np.int64)
    x[:, 0 : 2 * num_pairs : 2], x[:, 1 : 2 * num_pairs : 2] = keys, values
    rows = np.arange(batch)[:, None]
    # the asked pairs, in context order (all of them when num_queries = num_pairs, as in Zoology)
    which = np.sort(np.argsort(rng.random((batch, num_pairs)), axis=1)[:, :num_queries], axis=1)
    pos = 2 * num_pairs + 2 * _power_law_slots(rng, batch, slots, num_queries, power_a)
    x[rows, pos] = keys[rows, which]
    y[rows, pos] = values[rows, which]
    return _as_tensors(x, y)


def long_range_retrieval(
    batch: int, seq_len: int, num_pairs: int, vocab_size: int, seed: int = 0, num_queries: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Retrieval across a long gap: pairs first, queries last, random distractors between.

    Layout: ``num_pairs`` key-value pairs (the vocabulary of :func:`mqar`), then
    ``seq_len - 2*num_pairs - 2*num_queries`` distractor tokens drawn uniformly from the value ids
    (never a key), then ``num_queries`` (key, value) queries.
    Every answer lies at least :func:`min_query_distance` positions before its query, so any
    local window shorter than that cannot see it. Returns x, y: (B, seq_len) long.

    Chapter 5.
    """
    rng = _check_common(batch, seq_len, vocab_size, seed)
    check_positive_int("num_pairs", num_pairs)
    check_positive_int("num_queries", num_queries)
    if num_queries > num_pairs:
        raise ValueError(f"num_queries must be <= num_pairs={num_pairs}, got {num_queries}")
    gap = seq_len - 2 * num_pairs - 2 * num_queries
    if gap < 1:
        raise ValueError(
            f"seq_len must be > 2*(num_pairs + num_queries) = {2 * (num_pairs + num_queries)}, got "
            f"{seq_len}"
        )
    keys, values = _random_pairs(rng, batch, num_pairs, vocab_size)
    value_ids = mqar_vocab(vocab_size)[1]
    x = rng.integers(value_ids.start, value_ids.stop, size=(batch, seq_len))
    y = np.full((batch, seq_len), IGNORE, dtype=np.int64)
    x[:, 0 : 2 * num_pairs : 2], x[:, 1 : 2 * num_pairs : 2] = keys, values
    rows = np.arange(batch)[:, None]
    which = np.argsort(rng.random((batch, num_pairs)), axis=1)[:, :num_queries]
    pos = seq_len - 2 * num_queries + 2 * np.arange(num_queries)[None, :]
    x[rows, pos], x[rows, pos + 1] = keys[rows, which], values[rows, which]
    y[rows, pos] = values[rows, which]
    return _as_tensors(x, y)


def min_query_distance(seq_len: int, num_pairs: int, num_queries: int = 1) -> int:
    """Smallest distance (in positions) from a long-range query back to the value it asks for.

    Chapter 5.
    """
    for name, value in (
        ("seq_len", seq_len),
        ("num_pairs", num_pairs),
        ("num_queries", num_queries),
    ):
        check_positive_int(name, value)
    return seq_len - 2 * num_queries - 2 * num_pairs + 1


def selective_copy(
    batch: int, seq_len: int, num_tokens: int, vocab_size: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective copying (Gu & Dao 2023, Mamba): copy the scattered data tokens, in order.

    The first ``seq_len - num_tokens`` positions hold ``num_tokens`` data tokens (ids
    2..vocab_size-1) at random positions among blanks (id 0); then a separator (id 1)
    and the data tokens again (teacher forcing). The targets are the data tokens, in
    order, at the separator and the positions after it. Returns x, y: (B, seq_len) long.

    Chapter 5.
    """
    rng = _check_common(batch, seq_len, vocab_size, seed)
    check_positive_int("num_tokens", num_tokens)
    if vocab_size < 3:
        raise ValueError(
            f"vocab_size must be >= 3 (blank, separator and a data token), got {vocab_size}"
        )
    prefix = seq_len - num_tokens
    if prefix < num_tokens:
        raise ValueError(f"seq_len must be >= 2*num_tokens = {2 * num_tokens}, got {seq_len}")
    data = rng.integers(2, vocab_size, size=(batch, num_tokens))
    pos = np.sort(np.argsort(rng.random((batch, prefix)), axis=1)[:, :num_tokens], axis=1)
    x = np.zeros((batch, seq_len), dtype=np.int64)
    y = np.full((batch, seq_len), IGNORE, dtype=np.int64)
    x[np.arange(batch)[:, None], pos] = data
    x[:, prefix] = 1
    x[:, prefix + 1 :] = data[:, :-1]
    y[:, prefix:] = data
    return _as_tensors(x, y)


def solve_mqar(x, vocab_size: int) -> torch.Tensor:
    """Oracle for :func:`mqar` and :func:`long_range_retrieval`:
    answer every repeated key by lookup.

    x: (B, N) ids. A key id (1..V//2-1, :func:`mqar_vocab`) seen for the first time is stored with
    the token after it; a later occurrence of a stored key gets the stored value as target. Returns
    y: (B, N) with -100 elsewhere. It answers at least every query the generators score; with
    ``random_non_queries`` a random id that happens to repeat a key is answered too (the generator
    does not score it), so compare at the scored positions, or generate with
    ``random_non_queries=False``.
    """
    num_keys = len(mqar_vocab(vocab_size)[0])
    x = np.asarray(x)
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
        y[b, sep : sep + len(data)] = data
    return torch.from_numpy(y)


def query_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of scored positions (y != -100) where argmax(logits) equals y. Chapter 5.

    logits: (B, N, |V|), y: (B, N).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError(
            f"logits must be a (B, N, V) tensor, got {getattr(logits, 'shape', type(logits))}"
        )
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"y must be a tensor of shape {tuple(logits.shape[:2])}, got "
            f"{getattr(y, 'shape', type(y))}"
        )
    scored = y != IGNORE
    if not bool(scored.any()):
        raise ValueError("y has no scored positions (every target is -100)")
    hits = (logits.argmax(-1) == y) & scored
    return float(hits.sum()) / float(scored.sum())


TASKS = {"mqar": mqar, "long_range": long_range_retrieval, "selective_copy": selective_copy}
