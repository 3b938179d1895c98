"""The roofline (chapter 4): intensities from FlopCounterMode counts and the compulsory-traffic
model,
the measured roofs, stored GPU points, bad input."""

import numpy as np
import pytest
import torch

from attnbook import cost
from attnbook.experiments import roofline as rl
from attnbook.measure import count_flops, peak_memory_bytes
from attnbook.registry import method_info

B, H, N, D = 1, 2, 96, 32


def _qkv(n=N, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, d, generator=g) for _ in range(3)]


def _tokens(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, D, generator=g) for _ in range(3)]


@pytest.mark.parametrize("n, d", [(96, 32), (77, 16)])
def test_prefill_flops_and_bytes_of_dense_and_flash(n, d):
    q, k, v = _qkv(n, d)
    dense = rl.prefill_flops("dense", q, k, v)
    assert dense == 4 * n * n * d * H * B == count_flops(lambda: q @ k.transpose(-1, -2)) * 2
    assert rl.prefill_flops("flash", q, k, v) == dense  # same products, tiled
    assert rl.prefill_flops("sdpa", q, k, v) == dense  # fused: counted as dense, the same products
    standard = rl.prefill_bytes("dense", n, d, heads=H, batch=B)
    assert (
        standard
        == cost.standard_attention_io(n, d, heads=H, batch=B) * 4
        == (4 * n * d + 4 * n * n) * H * 4
    )
    assert (
        rl.prefill_bytes("flash", n, d, heads=H, batch=B, bytes_per_number=2) == 4 * n * d * H * 2
    )
    # the intensities the section derives: dense tends to d/4 FLOPs per float32 byte, flash grows as
    # n/4
    assert dense / standard == pytest.approx(n * d / (4 * (n + d)))
    assert dense / rl.prefill_bytes("flash", n, d, heads=H, batch=B) == pytest.approx(n / 4)


def test_materialised_forms_are_those_whose_peak_holds_the_score_matrix():
    n, d = 2048, 32  # several of flash's default tiles
    q, k, v = (x[:, :1] for x in _qkv(n, d))
    scores = n * n * 4
    for method in ("dense", "flash", "sdpa", "linear", "sliding_window"):
        causal = method_info(method).causal == "causal"
        with torch.no_grad():
            peak = peak_memory_bytes(
                lambda: __import__("attnbook").attention(q, k, v, method=method, causal=causal)
            )
        assert (peak >= scores) == (method in rl.MATERIALISED), (method, peak, scores)


def test_elementwise_has_no_matrix_product_point():
    q, k, v = _qkv()
    assert rl.prefill_flops("elementwise", q, k, v) == 0
    with pytest.raises(ValueError, match="no matrix products"):
        rl.prefill_point("elementwise", q, k, v, repeats=1)


@pytest.mark.parametrize(
    "method, numbers", [("linear", D * D + D), ("retention", D * D), ("selective_scan", D * D)]
)
def test_fixed_state_is_read_and_written_whole(method, numbers):
    info = method_info(method)
    q_t, k_t, v_t = _tokens()
    state, _ = info.step(None, q_t, k_t, v_t)
    assert rl.state_numbers(state) == (numbers * B * H, numbers * B * H)
    assert rl.decode_bytes(state, q_t) == (2 * numbers + 4 * D) * B * H * 4
    point = rl.decode_point(info.step, state, q_t, k_t, v_t, label=method, repeats=2)
    assert point.flops == count_flops(info.step, state, q_t, k_t, v_t) > 0
    assert (
        point.intensity == point.flops / point.bytes < 1
    )  # well below one FLOP per byte: memory-bound


def test_kv_cache_step_reads_the_cache_and_writes_one_token():
    from attnbook.mechanisms.dense import dense_prefill, dense_step

    t = 200
    _, k, v = _qkv(t, D)
    q_t, k_t, v_t = _tokens()
    cache = dense_prefill(k, v)
    assert rl.state_numbers(cache) == (2 * t * D * B * H, 2 * D * B * H)
    point = rl.decode_point(dense_step, cache, q_t, k_t, v_t, label="dense", repeats=2)
    assert (
        point.flops == 4 * (t + 1) * D * B * H
    )  # q·Kᵀ and p·V over the t cached tokens and the new one
    assert point.bytes == (2 * t * D + 2 * D + 4 * D) * B * H * 4
    assert 0.45 < point.intensity < 0.55  # about 2 FLOPs per cached float32 pair: 1/2 FLOP per byte


def test_elementwise_state_size_from_its_tensors():
    from attnbook.mechanisms.elementwise import state_numbers

    info = method_info("elementwise")
    state, _ = info.step(None, *_tokens())
    read, written = rl.state_numbers(state)
    assert read == written == state_numbers(D, state.order) * B * H


def test_roofline_and_ridge():
    peak, bw = 100.0, 10.0
    assert rl.ridge_intensity(peak, bw) == 10.0
    np.testing.assert_allclose(rl.roofline([1.0, 10.0, 1000.0], peak, bw), [10.0, 100.0, 100.0])


def test_measured_roofs_are_positive_and_labelled():
    peak = rl.peak_matmul("cpu", 128, repeats=2)
    bw = rl.peak_bandwidth("cpu", 2**20, repeats=2)
    assert peak.value > 0 and peak.size == 128 and peak.min_s > 0
    assert bw.value == pytest.approx(2 * 2**20 / bw.min_s) and bw.size == 2**20


def test_prefill_point_counts_models_and_times():
    q, k, v = _qkv()
    p = rl.prefill_point("flash", q, k, v, repeats=2)
    assert p.phase == "prefill" and p.flops == 4 * N * N * D * H and p.bytes == 4 * N * D * H * 4
    assert p.seconds > 0 and p.achieved == p.flops / p.seconds


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: rl.roofline([1.0, -1.0], 1.0, 1.0), ValueError, "intensity must be positive"),
        (lambda: rl.roofline([1.0], 0.0, 1.0), ValueError, "peak must be a positive"),
        (lambda: rl.ridge_intensity(1.0, float("nan")), ValueError, "bandwidth must be a positive"),
        (lambda: rl.peak_matmul("cpu", 0), ValueError, "size"),
        (
            lambda: rl.peak_matmul("cpu", 8, dtype=torch.int32),
            TypeError,
            "dtype must be a floating",
        ),
        (lambda: rl.peak_bandwidth("cpu", 6), ValueError, "multiple of 4"),
        (lambda: rl.prefill_bytes("nope", 8, 8), ValueError, "method must be one of"),
        (lambda: rl.prefill_bytes("dense", 0, 8), ValueError, "n must be"),
        (lambda: rl.prefill_flops("dense", *_qkv(), causal="yes"), TypeError, "causal"),
        (lambda: rl.state_numbers([torch.ones(2)]), TypeError, "state must be a decoding state"),
        (
            lambda: rl.decode_bytes(None, torch.ones(1, 1, 4)),
            TypeError,
            "state must be a decoding state",
        ),
        (lambda: rl.prefill_point("dense", torch.ones(2, 2), *_qkv()[1:]), ValueError, "q"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _stored_kernels():
    from attnbook.bench.kernels import kernel_flops

    rows = [
        {
            "kind": "roof",
            "dtype": "float16",
            "peak_flops": 7e14,
            "matmul_size": 8192,
            "bandwidth": 4e12,
            "copy_bytes": 2**30,
        }
    ]
    for form, seconds in (("triton", 2e-3), ("sdpa_flash", 1.6e-3)):
        for direction in ("forward", "forward+backward"):
            rows.append(
                {
                    "kind": "kernel",
                    "form": form,
                    "direction": direction,
                    "n": 4096,
                    "batch": 4,
                    "heads": 32,
                    "head_dim": 64,
                    "causal": False,
                    "dtype": "float16",
                    "min_s": seconds,
                    "flops": kernel_flops(
                        4096, 64, False, direction != "forward", heads=32, batch=4
                    ),
                    "tflops": kernel_flops(
                        4096, 64, False, direction != "forward", heads=32, batch=4
                    )
                    / seconds
                    / 1e12,
                }
            )
    return {"suite": "kernels", "quick": False, "meta": {}, "rows": rows}


def test_stored_kernel_points_and_ratios():
    from attnbook.bench.kernels import ratios

    roofs, points = rl.stored_kernel_points(_stored_kernels())
    assert roofs == {"float16": (7e14, 4e12)} and len(points) == 2
    p = points[0]
    assert p.bytes == 4 * 4096 * 64 * 32 * 4 * 2 and p.intensity == pytest.approx(
        4096 / 2
    )  # n / (2 bytes)
    assert rl.stored_kernel_points(_stored_kernels(), causal=True)[1] == []
    (fwd, both) = sorted(ratios(_stored_kernels()), key=lambda r: r["direction"])
    assert fwd["ratio"] == pytest.approx(0.8) and both["direction"] == "forward+backward"
    with pytest.raises(ValueError, match="suite 'kernels'"):
        rl.stored_kernel_points({"suite": "long", "rows": []})
    with pytest.raises(ValueError, match="suite 'kernels'"):
        ratios({"suite": "long", "rows": []})


def test_stored_label_says_plainly_when_there_is_no_gpu_result(tmp_path):
    import json

    from attnbook.bench import stored_label

    assert stored_label("kernels", "cuda", tmp_path).startswith(
        "no GPU result stored: attnbook/results has no kernels-cuda.json\n"
    )
    result = {
        **_stored_kernels(),
        "meta": {
            "device": "NVIDIA H200 (141 GiB, CUDA 12.8)",
            "torch": "2.13.0",
            "date": "2026-01-01 00:00 UTC",
            "git_commit": "abc1234",
        },
    }
    (tmp_path / "kernels-cuda.json").write_text(json.dumps(result))
    label = stored_label("kernels", "cuda", tmp_path)
    assert label == (
        "stored GPU result (full sweep): NVIDIA H200 (141 GiB, CUDA 12.8)\n"
        "torch 2.13.0, 2026-01-01 00:00 UTC, commit abc1234"
    )
    assert all(len(line) <= 100 for line in label.splitlines())
