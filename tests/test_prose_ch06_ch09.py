"""The chapter 6 and chapter 9 figures that issue 27 corrected, asserted against ``cost`` and the
glue keys the pages use (no typed figure)."""

import re
from pathlib import Path

import pytest

from attnbook.cost import comm
from attnbook.distributed.layout import Layout
from attnbook.experiments.scaling import compute_optimal

ROOT = Path(__file__).resolve().parent.parent


def test_ethernet_overlap_threshold_is_about_79k_tokens_and_twice_that_causal():
    c = comm.overlap_block_size(
        comm.H100_BF16_FLOPS, comm.INTERCONNECTS["Ethernet (100 Gb/s)"], dtype_bytes=2
    )
    assert c == pytest.approx(79_120, rel=1e-3)
    page = (ROOT / "book/ch09_distributed.md").read_text()
    assert "09b_comm_cost.md::c_eth_causal" in page and "09b_comm_cost.md::c_eth:" in page
    assert "tens\nof thousands" not in page and "tens of thousands" not in page


def test_causal_contiguous_imbalance_is_2p_minus_1_exact_and_p_whole_blocks():
    n, p = 8192, 8
    kept = [
        sum(int(i) + 1 for i in Layout("contiguous", n, p).positions(r).tolist()) for r in range(p)
    ]
    assert kept[-1] / kept[0] == pytest.approx(2 * p - 1, rel=1e-3)
    whole = [c.flops_forward for c in comm.ring_cost(n, p, heads=1, head_dim=1, causal=True)]
    assert whole[-1] / whole[0] == pytest.approx(p)
    page = (ROOT / "book/ch09_distributed.md").read_text()
    assert "causal_imbalance_exact_p8" in page and "$2P-1$ times" in page


def test_ring_exercise_in_binary_units():
    c = comm.ring_cost(131072, 8, heads=32, head_dim=128, causal=False, dtype_bytes=2)[0]
    assert c.step_bytes[0] == 256 * 2**20 and 7 * c.step_bytes[0] == 1.75 * 2**30
    nb = (ROOT / "notebooks/09_context_parallel.md").read_text()
    assert "256 MiB" in nb and "1.75 GiB" in nb
    for name in ("09_context_parallel.md", "09b_comm_cost.md"):
        text = (ROOT / "notebooks" / name).read_text()
        assert not re.search(r"\d\s*(MB|GB)\b(?!/s)", text), name  # binary units, as elsewhere


def test_kaplan_comparison_follows_the_c_min_reading():
    kaplan, chin = compute_optimal(5.76e23, "kaplan"), compute_optimal(5.76e23, "chinchilla")
    assert kaplan.params / chin.params == pytest.approx(7.0, abs=0.05)  # not 11.6 (C read as C_min)
    page = (ROOT / "book/ch06_design.md").read_text()
    assert "C_{\\min}" in page and "kaplan_1e21_b" in page and "11.6" not in page
