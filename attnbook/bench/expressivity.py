"""Suite "expressivity": recall accuracy of every mechanism vs sequence length and vs pairs (chapter 5)."""
from __future__ import annotations

import torch

from attnbook.experiments.recall import compare, recall_methods


#: Shared training budget of the sweep: tiny 2-layer GPTs, fresh MQAR batches every step.
BUDGET = dict(task="mqar", vocab_size=17, d_model=32, n_layer=2, n_head=2, batch_size=64, lr=3e-3)


def settings(quick: bool) -> tuple[list[dict], tuple[int, ...], int]:
    """(settings, seeds, steps): a length sweep at 2 pairs and a pairs sweep at length 24."""
    lengths, pairs = ((12, 24), (1, 2, 4)) if quick else ((12, 24, 48, 96), (1, 2, 4, 8))
    grid = [dict(seq_len=n, num_pairs=2) for n in lengths]
    grid += [dict(seq_len=24, num_pairs=p) for p in pairs if p != 2]
    return grid, ((0, 1) if quick else (0, 1, 2)), (200 if quick else 1500)


def run(device, quick: bool) -> list[dict]:
    grid, seeds, steps = settings(quick)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest and does not spin-wait on a shared CPU
    try:
        rows, skipped = compare(recall_methods(), grid, seeds=seeds, steps=steps, device=device, **BUDGET)
    finally:
        torch.set_num_threads(threads)
    rows += [{"method": m, "skipped": reason} for m, reason in skipped.items()]
    return rows
