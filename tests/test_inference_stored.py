"""The stored "inference" suite (chapter 10): the claims the chapter makes from it."""

import pytest
import torch

from attnbook import cost
from attnbook.bench import inference as suite
from attnbook.bench import load_result

STORED = load_result("inference", "cpu")
pytestmark = pytest.mark.skipif(STORED is None, reason="no stored inference-cpu.json")


def _part(name):
    return [r for r in STORED["rows"] if r["part"] == name]


def test_every_part_is_stored():
    assert {r["part"] for r in STORED["rows"]} == {
        "roofline",
        "kv_formats",
        "paged",
        "sinks",
        "speculative",
    }


def test_paged_waste_below_contiguous_waste():
    waste = [r for r in _part("paged") if r["kind"] == "waste"]
    assert waste
    for r in waste:
        assert r["waste_paged"] < r["waste_contiguous"]
        assert r["waste_paged"] == pytest.approx(r["waste_paged_formula"])
        lengths = suite.trace_lengths(r["requests"])
        assert r["waste_contiguous"] == pytest.approx(cost.contiguous_waste(lengths, r["max_len"]))


def test_tokens_per_call_within_15_percent_of_the_formula_for_every_gamma():
    rows = _part("speculative")
    assert sorted(r["gamma"] for r in rows) == list(range(1, 7))
    for r in rows:
        formula = cost.expected_tokens_per_step(r["alpha"], r["gamma"])
        assert r["tokens_per_call_formula"] == pytest.approx(formula)
        assert abs(r["tokens_per_call"] / formula - 1) < 0.15, r
        assert r["greedy_identical"] is True


def test_kv_formats_measured_equal_formula_and_mla_holds_latent_plus_rope():
    rows = _part("kv_formats")
    assert all(r["cache_bytes"] == r["formula_bytes"] for r in rows)
    mla = [r for r in rows if r["format"] == "MLA"]
    assert {r["dtype"] for r in mla} == {"float32", "float64"}
    for r in mla:
        assert r["numbers_per_token_layer"] == r["latent_dim"] + r["rope_dim"]
        assert r["absorbed_vs_naive_rel_err"] <= (1e-5 if r["dtype"] == "float32" else 1e-10)


def test_streaming_caches_stay_constant_and_full_cache_grows():
    rows = {r["cache"]: r for r in _part("sinks")}
    assert set(rows) == {"full", "window", "window+sinks"}
    for name in ("window", "window+sinks"):
        assert rows[name]["cache_bytes_max"] == rows[name]["cache_bytes_final"]
        assert rows[name]["cache_bytes_final"] == rows[name]["cache_bytes_at_train_context"]
    assert rows["full"]["cache_bytes_final"] > rows["window"]["cache_bytes_final"]


def test_roofline_rows_count_the_formula():
    rows = [r for r in _part("roofline") if r["kind"] == "decode"]
    for r in rows:
        assert r["flops"] == cost.decode_flops(
            r["batch"],
            r["context"],
            matmul_params=r["model_matmul_params"],
            layers=r["model_layers"],
            d_model=r["model_d_model"],
        )
        assert r["intensity"] == pytest.approx(r["flops"] / r["bytes"])
    tt = [r for r in _part("roofline") if r["kind"] == "ttft_tpot"]
    assert tt and all(r["ttft_s"] > r["tpot_s"] > 0 for r in tt)


def test_the_cheap_parts_of_the_suite_run():
    device = torch.device("cpu")
    formats = suite.kv_format_rows(device, True)
    assert all(r["cache_bytes"] == r["formula_bytes"] for r in formats)
    assert suite.trace_lengths(5, seed=3) == suite.trace_lengths(5, seed=3)
    assert all(1 <= n <= suite.TRACE_MAX_LEN for n in suite.trace_lengths(2000))
