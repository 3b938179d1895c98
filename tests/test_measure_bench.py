"""Chapter 2 tooling: timing, memory, slope fits, the benchmark runner and the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from attnbook import bench, config, measure
from attnbook.bench import RESULTS_DIR, load_result, run_suite
from attnbook.checks import CorrectnessError, checked
from attnbook.registry import SUITES, Suite


def test_time_fn_reports_the_minimum_of_the_calls(monkeypatch):
    ticks = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # three calls of 3 s, 1 s and 2 s
    monkeypatch.setattr(measure.time, "perf_counter", lambda: next(ticks))
    t = measure.time_fn(lambda: None, warmup=0, repeats=3)
    assert (t.min_s, t.median_s, t.q10_s) == (1.0, 2.0, pytest.approx(1.2))


def test_count_ops_counts_sequential_steps():
    from attnbook.mechanisms.rnn import rnn

    w = torch.randn(8, 8)
    calls = [measure.count_ops(rnn, torch.randn(1, n, 8), w, w) for n in (16, 32, 64)]
    assert calls[2] - calls[1] == 2 * (calls[1] - calls[0]) > 0  # one fixed set of calls per token
    assert measure.count_ops(lambda x: x @ x, torch.randn(64, 64)) == 1


def test_time_of_prefers_the_minimum():
    assert bench.time_of({"min_s": 1.0, "median_s": 2.0}) == 1.0
    assert bench.time_of({"median_s": 2.0}) == 2.0
    assert bench.time_of({"token_min_s": 3.0, "token_median_s": 4.0}, "token_") == 3.0


def test_fit_loglog_recovers_known_exponents():
    x = np.array([128, 256, 512, 1024, 2048.0])
    for slope in (1.0, 2.0, 0.5):
        fit = measure.fit_loglog(x, 3e-6 * x**slope)
        assert abs(fit.slope - slope) < 1e-12 and fit.r2 > 0.999999
        np.testing.assert_allclose(fit.predict(x), 3e-6 * x**slope, rtol=1e-10)


@pytest.mark.parametrize(
    "x, y, match",
    [
        ([1.0], [1.0], "at least 2"),
        ([1, 2], [1, -1], "positive"),
        ([1, 2, 3], [1, 2], "equal length"),
    ],
)
def test_fit_loglog_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        measure.fit_loglog(x, y)


def test_time_fn_orders_work_and_reports_spread():
    a = torch.randn(256, 256)
    small = measure.time_fn(lambda: a @ a, repeats=5)
    big = measure.time_fn(lambda: torch.cat([a] * 64) @ a, repeats=5)
    assert (
        big.min_s > small.min_s > 0
    )  # 64 times the work: a margin no load on the machine can close
    assert (
        small.min_s <= small.q10_s <= small.q25_s <= small.median_s <= small.q75_s
        and small.repeats == 5
    )
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        measure.time_fn(lambda: None, repeats=0)


def test_cpu_peak_memory_sees_the_score_matrix():
    q = torch.randn(1, 1, 1024, 32)
    dense_peak = measure.peak_memory_bytes(lambda: torch.softmax(q @ q.transpose(-1, -2), -1) @ q)
    assert dense_peak >= 1024 * 1024 * 4  # at least one float32 n x n matrix is alive at once
    assert measure.peak_memory_bytes(lambda: q * 2) < 1024 * 1024 * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: max_memory_allocated")
def test_cuda_peak_memory():
    x = torch.randn(1024, 1024, device="cuda")
    assert measure.peak_memory_bytes(lambda: x @ x, device="cuda") >= 1024 * 1024 * 4


def test_environment_labels():
    env = measure.environment("cpu")
    assert set(env) >= {"device", "torch", "date", "git_commit", "device_kind"}
    assert env["torch"] == torch.__version__ and env["device_kind"] == "cpu"


def test_checked_refuses_a_wrong_implementation():
    ref = np.ones((3, 3))
    assert checked("ok", torch.ones(3, 3), ref) == 0.0
    with pytest.raises(CorrectnessError, match="relative error"):
        checked("wrong", torch.ones(3, 3) * 1.01, ref)
    with pytest.raises(CorrectnessError, match="shape"):
        checked("shape", torch.ones(3, 2), ref)
    with pytest.raises(CorrectnessError, match="NaN"):
        checked("nan", torch.full((3, 3), float("nan")), ref)


def _ok_suite(device, quick):
    return [{"n": 1, "median_s": measure.time_fn(lambda: torch.ones(4).sum(), repeats=2).median_s}]


def _broken_suite(device, quick):
    checked("broken", torch.zeros(2), np.ones(2))
    return [{"n": 1, "median_s": 1.0}]


@pytest.fixture
def test_suites(monkeypatch):
    monkeypatch.setitem(SUITES, "_test_ok", Suite("_test_ok", _ok_suite, "02", "a tiny suite"))
    monkeypatch.setitem(
        SUITES, "_test_broken", Suite("_test_broken", _broken_suite, "02", "a wrong implementation")
    )


def test_runner_writes_labelled_results_and_refuses_broken_suites(tmp_path, test_suites):
    result = run_suite("_test_ok", device="cpu", quick=True, out_dir=tmp_path)
    stored = json.loads((tmp_path / "_test_ok-cpu.json").read_text())
    assert stored["meta"]["torch"] == torch.__version__ and stored["quick"] is True
    assert {
        "threads",
        "quick",
        "load_average_start",
        "load_average_end",
        "git_commit",
        "date",
    } <= set(stored["meta"])
    assert stored["meta"]["threads"] == torch.get_num_threads()
    assert (
        stored["rows"] == result["rows"]
        and load_result("_test_ok", "cpu", tmp_path)["rows"] == result["rows"]
    )
    assert load_result("_test_ok", "cuda", tmp_path) is None
    with pytest.raises(CorrectnessError):
        run_suite("_test_broken", device="cpu", out_dir=tmp_path)
    assert not (tmp_path / "_test_broken-cpu.json").exists()
    with pytest.raises(ValueError, match="suite must be one of"):
        run_suite("no-such-suite")


def test_runner_protects_stored_results(tmp_path, test_suites, monkeypatch):
    monkeypatch.setenv("ATTNBOOK_RESULTS", str(tmp_path / "mine"))
    before = {p.name: p.stat().st_mtime_ns for p in RESULTS_DIR.glob("*.json")}
    result = run_suite(
        "_test_ok", device="cpu", quick=True
    )  # the default goes to the reader's folder
    assert result["path"] == str(tmp_path / "mine" / "_test_ok-cpu.json")
    with pytest.raises(PermissionError, match="store=True"):
        run_suite("_test_ok", device="cpu", quick=True, out_dir=RESULTS_DIR)
    assert {p.name: p.stat().st_mtime_ns for p in RESULTS_DIR.glob("*.json")} == before
    run_suite(
        "_test_ok", device="cpu", quick=False, out_dir=tmp_path
    )  # a full run in a folder of its own
    with pytest.raises(PermissionError, match="full run"):
        run_suite("_test_ok", device="cpu", quick=True, out_dir=tmp_path)
    assert (
        run_suite("_test_ok", device="cpu", quick=True, out_dir=tmp_path, force=True)["quick"]
        is True
    )


def test_cli_lists_and_runs_the_cost_suite(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "attnbook", "bench", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cost" in out.stdout
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnbook",
            "bench",
            "cost",
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(RESULTS_DIR),
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--store" in refused.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnbook",
            "bench",
            "cost",
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads((tmp_path / "cost-cpu.json").read_text())["rows"]
    assert {r["sweep"] for r in rows} == {"n", "d"} and all(r["median_s"] > 0 for r in rows)


def test_stored_cost_result_is_labelled():
    stored = load_result("cost", "cpu")
    assert stored is not None, "attnbook/results/cost-cpu.json must be committed"
    assert {"device", "torch", "date", "git_commit"} <= set(stored["meta"])


def test_config_switch(monkeypatch):
    assert isinstance(config.QUICK, bool)
    monkeypatch.setenv("ATTNBOOK_QUICK", "maybe")
    with pytest.raises(ValueError, match="ATTNBOOK_QUICK must be '0' .* or '1'"):
        _ = config.QUICK
    monkeypatch.setenv("ATTNBOOK_QUICK", "0")
    assert config.QUICK is False and config.quick() is False
    assert config.pick(1, 2) == (1 if config.QUICK else 2)


# ----------------------------------------------------------------------------- the GPU edition
def _no_cuda_env():
    import os

    return {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
    }  # no GPU visible, even on a machine that has one


def test_gpu_command_refuses_without_cuda():
    out = subprocess.run(
        [sys.executable, "-m", "attnbook", "gpu"],
        capture_output=True,
        text=True,
        env=_no_cuda_env(),
    )
    assert out.returncode == 2
    assert "CUDA is not available" in out.stderr and "Nothing was run" in out.stderr
    assert out.stdout == ""  # refused before printing a plan or running anything


def test_gpu_plan_lists_every_suite_within_the_budget():
    from attnbook.bench.gpu import BUDGET_S, START_STOP_S, plan
    from attnbook.registry import suite_info, suites

    out = subprocess.run(
        [sys.executable, "-m", "attnbook", "gpu", "--plan"],
        capture_output=True,
        text=True,
        env=_no_cuda_env(),
        check=True,
    )
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(suites()) and "warning" not in out.stdout
    assert listed[-1] == "generative"  # the longest allowance last: a stopped one holds back none
    steps = {s.suite: s for s in plan()}  # read from the Suite records
    assert set(steps) == set(suites())
    for name, step in steps.items():
        info = suite_info(name)
        assert (step.quick, step.allowance_s) == (info.gpu_quick, info.gpu_allowance_s)
        assert not step.why.startswith("quick: a suite the plan does not size"), name
    assert sum(s.allowance_s for s in steps.values()) <= BUDGET_S - START_STOP_S
    assert not steps["kernels"].quick  # the kernels' full sweep runs


def test_gpu_edition_stops_a_suite_at_its_allowance(monkeypatch):
    import io

    from attnbook.bench import gpu

    monkeypatch.setattr(gpu, "_environment", lambda: {"PATH": "/usr/bin:/bin"})
    slow = gpu.Step("_sleep", False, 1.0, "test")
    monkeypatch.setattr(gpu, "_command", lambda step, device, force: ["/bin/sh", "-c", "sleep 30"])
    records = gpu.run_plan([slow], out=io.StringIO())
    assert records[0]["status"] == "stopped" and records[0]["seconds"] < 10


def test_kernels_suite_refuses_a_cpu():
    from attnbook.bench import kernels

    with pytest.raises(ValueError, match="needs device 'cuda'.*interpreter"):
        kernels.run(torch.device("cpu"), quick=True)
    out = subprocess.run(
        [sys.executable, "-m", "attnbook", "bench", "kernels", "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "needs device 'cuda'" in out.stderr


def test_kernel_flops_follow_the_counted_products():
    from attnbook.bench.kernels import kernel_flops, shape
    from attnbook.mechanisms.dense import dense_attention

    n, d = 64, 16
    q, k, v = (torch.randn(2, 3, n, d, requires_grad=True) for _ in range(3))
    forward = measure.count_flops(dense_attention, q, k, v)

    def forward_backward():
        dense_attention(q, k, v).sum().backward()

    recompute = measure.count_flops(
        lambda: q @ k.transpose(-1, -2)
    )  # FlashAttention's backward recomputes QKᵀ
    assert kernel_flops(n, d, False, False, heads=3, batch=2) == forward
    assert (
        kernel_flops(n, d, False, True, heads=3, batch=2)
        == measure.count_flops(forward_backward) + recompute
    )
    assert kernel_flops(n, d, True, False, heads=3, batch=2) * 2 == forward
    assert shape(1024, 64) == (16, 32, 1024, 64) and shape(16384, 128) == (1, 16, 16384, 128)
    assert shape(32768, 64)[0] == 1


def test_fit_loglog_refuses_nan():
    with pytest.raises(ValueError, match="finite"):
        measure.fit_loglog([1, 2, 4], [1.0, np.nan, 4.0])


def test_a_copied_checkout_is_labelled_with_the_commit_it_was_made_from(monkeypatch):
    """On a machine that received a copy of the checkout, $ATTNBOOK_COMMIT names the commit."""
    from attnbook.measure import environment

    monkeypatch.setenv("ATTNBOOK_COMMIT", "b0a3c7e")
    assert environment()["git_commit"] == "b0a3c7e"
    monkeypatch.delenv("ATTNBOOK_COMMIT")
    assert environment()["git_commit"] != "b0a3c7e"
