"""Issue 23's twelve bad inputs across the public surface, each pinned: the right answer or a named
error. Plus the public API's one cheap validation pass (checked by counts, not timings)."""

import collections
import os
import subprocess
import sys

import pytest
import torch
from helpers import random_qkv
from torch.utils._python_dispatch import TorchDispatchMode

import attnbook
from attnbook import checks, measure, registry
from attnbook.bench import load_result, run_suite
from attnbook.checks import rel_error
from attnbook.cost import comm
from attnbook.experiments.data import CharCorpus
from attnbook.registry import Method, Suite


# 1 ------------------------------------------------------------------ performer, large inputs
@pytest.mark.parametrize("scale", [1, 4, 8, 9])
def test_causal_performer_in_float32_is_accurate_or_refuses(scale):
    q, k, v = random_qkv((1, 2, 37, 16), seed=2, dtype=torch.float64, scale=scale)
    v = v * scale
    exact = attnbook.attention(q, k, v, method="performer", causal=True)
    try:
        out = attnbook.attention(q.float(), k.float(), v.float(), method="performer", causal=True)
    except FloatingPointError as err:
        assert "performer" in str(err) and "float32" in str(err)
        assert scale >= 8  # refused only where the features really underflow
    else:
        assert rel_error(out, exact) < 1e-4


# 2 ------------------------------------------------------------------ performer's chunk_size
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "chunk_size, error",
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), (None, TypeError), ("8", TypeError),
     (float("nan"), TypeError), (True, TypeError)],
)  # fmt: skip
def test_performer_chunk_size_is_validated(chunk_size, error, causal):
    q, k, v = random_qkv((1, 1, 8, 4), seed=0, dtype=torch.float32)
    with pytest.raises(error, match="chunk_size"):
        attnbook.attention(q, k, v, method="performer", causal=causal, chunk_size=chunk_size)


# 3 ------------------------------------------------------------------ decode drops parallel options
@pytest.mark.parametrize("method", ["linear", "retention", "selective_scan"])
def test_decode_accepts_options_of_the_parallel_form(method):
    q, k, v = random_qkv((1, 2, 10, 4), seed=1)
    out = attnbook.decode(method, q, k, v, chunk_size=8)
    ref = attnbook.attention(q, k, v, method=method, causal=True, chunk_size=8)
    assert rel_error(out, ref) < 1e-10
    with pytest.raises(ValueError, match="unknown option 'window'"):
        attnbook.decode(method, q, k, v, window=8)


# 4 ------------------------------------------------------------------ unwritable destinations
def _add_suite(name, calls):
    def suite(device, quick):
        calls.append(name)
        return [{"x": 1}]

    registry.add(Suite(name, suite, "00", "test suite"), replace=True)


def test_bench_checks_its_destination_before_measuring(tmp_path):
    calls = []
    _add_suite("_test_dest", calls)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="cannot create the results folder"):
        run_suite("_test_dest", "cpu", quick=True, out_dir=a_file)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes everywhere: nothing to refuse then
            with pytest.raises(ValueError, match="permission denied"):
                run_suite("_test_dest", "cpu", quick=True, out_dir=locked)
    finally:
        locked.chmod(0o700)
    assert calls == []  # nothing was measured
    registry.SUITES.pop("_test_dest")


def test_cli_refuses_an_out_that_is_a_file(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "attnbook", "bench", "cost", "--quick", "--out", str(a_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and str(a_file) in out.stderr and "Traceback" not in out.stderr


# 5 ------------------------------------------------------------------ broken stored JSON
@pytest.mark.parametrize("text", ['{"suite": "x", "rows": [', "[1, 2]", "\xff"])
def test_a_broken_result_file_is_named(tmp_path, text):
    path = tmp_path / "cost-cpu.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match="cost-cpu.json"):
        load_result("cost", "cpu", tmp_path)
    with pytest.raises(ValueError, match="cost-cpu.json"):  # the CLI's overwrite check reads it
        run_suite("cost", "cpu", quick=True, out_dir=tmp_path)


# 6 ------------------------------------------------------------------ --device
@pytest.mark.parametrize("device", ["nope", "cuda:99", "mps", "meta"])
def test_bench_refuses_a_device_that_is_not_here(device, tmp_path):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is present here")
    if device == "cuda:99" and not torch.cuda.is_available():
        device = "cuda"
    with pytest.raises(ValueError, match="device"):
        run_suite("cost", device, quick=True, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


# 7 ------------------------------------------------------------------ meta tensors
@pytest.mark.parametrize("method", registry.methods(device="cpu"))
def test_meta_tensors_get_a_named_refusal(method):
    q = torch.empty(1, 1, 4, 4, device="meta")
    causal = registry.method_info(method).causal == "causal"
    with pytest.raises(ValueError, match="q is on the meta device"):
        attnbook.attention(q, q, q, method=method, causal=causal)
    real = torch.ones(1, 1, 4, 4)
    with pytest.raises(ValueError, match="k is on the meta device"):
        attnbook.attention(real, q, real, method=method, causal=causal)


# 8 ------------------------------------------------------------------ CharCorpus.get_batch
@pytest.mark.parametrize(
    "batch_size, block_size, error, name",
    [(2, 0, ValueError, "block_size"), (2, -3, ValueError, "block_size"),
     (2, 2.5, TypeError, "block_size"), (0, 4, ValueError, "batch_size"),
     (-1, 4, ValueError, "batch_size"), (1.0, 4, TypeError, "batch_size")],
)  # fmt: skip
def test_get_batch_refuses_bad_sizes(batch_size, block_size, error, name):
    corpus = CharCorpus("hello world, " * 20)
    with pytest.raises(error, match=name):
        corpus.get_batch("train", batch_size, block_size)


# 9 ------------------------------------------------------------------ distributed self-check flags
@pytest.mark.parametrize(
    "flag, value",
    [("--seq-len", "-5"), ("--heads", "0"), ("--head-dim", "0"), ("--timeout", "0"),
     ("--seq-len", "x")],
)  # fmt: skip
def test_distributed_check_flags_are_argparse_errors(flag, value, capsys):
    from attnbook.distributed.check import main

    argv = ["--method", "ring", "--seq-len", "8", flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


# 10 ----------------------------------------------------------------- cost.comm
@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: comm.ring_cost(64, 2, heads=-1, head_dim=8, causal=True), ValueError, "heads"),
        (lambda: comm.ring_cost(64, 0, heads=2, head_dim=8, causal=True), ValueError, "world_size"),
        (lambda: comm.allgather_cost(64, 2, heads=2, head_dim=8, causal=True, dtype_bytes=-2),
         ValueError, "dtype_bytes"),
        (lambda: comm.ulysses_cost(64, 2, heads=2, head_dim=0, causal=False), ValueError,
         "head_dim"),
        (lambda: comm.message_time(-1, 0.0, 1e9), ValueError, "nbytes"),
        (lambda: comm.message_time(10, 0.0, 0), ValueError, "bandwidth"),
        (lambda: comm.message_time(10, -1e-6, 1e9), ValueError, "alpha_s"),
        (lambda: comm.overlap_block_size(1e12, 0), ValueError, "bandwidth"),
        (lambda: comm.overlap_block_size(-1e12, 1e9), ValueError, "flops_per_s"),
        (lambda: comm.overlap_block_size(1e12, 1e9, work_fraction=2), ValueError,
         "work_fraction"),
    ],
)  # fmt: skip
def test_comm_costs_are_checked(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_ring_time_refuses_a_zero_bandwidth():
    cost = comm.ring_cost(64, 2, heads=2, head_dim=8, causal=True)[0]
    with pytest.raises(ValueError, match="bandwidth"):
        comm.ring_time(cost, 1e12, 0.0, 0.0)


# 11 ----------------------------------------------------------------- fit_loglog
def test_fit_loglog_refuses_x_that_does_not_vary():
    with pytest.raises(ValueError, match="two different values"):
        measure.fit_loglog([4, 4, 4], [1, 2, 3])


# 12 ----------------------------------------------------------------- methods() and add()
def test_methods_filters_are_checked():
    with pytest.raises(TypeError, match="exact must be a bool"):
        attnbook.methods(exact="yes")
    with pytest.raises(TypeError, match="causal must be a bool"):
        attnbook.methods(causal=1)
    with pytest.raises(ValueError, match="device must be"):
        attnbook.methods(device="nope")
    with pytest.raises(TypeError, match="family must be a str"):
        attnbook.methods(family=3)


def test_add_refuses_a_non_string_name():
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        registry.add(Method(3, lambda q, k, v, *, causal=False: q, "00", "x"))
    with pytest.raises(TypeError, match="target"):
        registry.add(Method("_bad_target", "no_colon", "00", "x"))
    assert "_bad_target" not in registry.METHODS


# --------------------------------------------------------------------- the API's one cheap pass
@pytest.mark.parametrize("method", registry.methods(device="cpu"))
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_non_finite_inputs_are_named_through_the_api(method, where):
    causal = registry.method_info(method).causal == "causal"
    q, k, v = random_qkv((1, 2, 64, 4), seed=0, dtype=torch.float32)  # Linformer's rank is 64
    bad = dict(q=q, k=k, v=v)
    bad[where] = bad[where].clone()
    bad[where][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=f"{where} contains NaN"):
        attnbook.attention(bad["q"], bad["k"], bad["v"], method=method, causal=causal)


def test_the_api_scans_each_input_at_most_once_and_only_on_a_bad_output(monkeypatch):
    from attnbook.mechanisms import linear

    calls = []
    real = checks.is_finite

    def counting(x):
        calls.append(tuple(x.shape))
        return real(x)

    for module in (checks, registry, linear):
        monkeypatch.setattr(module, "is_finite", counting)
    q, k, v = random_qkv((1, 2, 16, 4), seed=0, dtype=torch.float32)
    for method in ("dense", "flash", "sdpa", "linear", "performer", "sliding_window"):
        for causal in (True, False):
            calls.clear()
            attnbook.attention(q, k, v, method=method, causal=causal)
            info = registry.method_info(method)
            scanned_first = len(info.scan_inputs.get("cpu", ()))  # sdpa: q, which it can hide
            # then the output once, by the API or by the method itself, except where the method
            # bounds it without reading it (linear attention and the Performer, non-causal)
            reads = 0 if info.checks_output and not causal else 1
            assert calls == [(1, 2, 16, 4)] * (scanned_first + reads), (method, causal, calls)
    calls.clear()
    attnbook.decode("linear", q, k, v)
    assert calls == [(1, 2, 16, 4)], calls  # no step scans: one check at the end


@pytest.mark.parametrize("method", ["linear", "performer"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_methods_that_check_their_own_output_refuse_nan_and_inf(method, causal, where, value):
    """The function alone raises FloatingPointError; through the API the input is named."""
    q, k, v = random_qkv((1, 2, 33, 8), seed=3, dtype=torch.float32)
    bad = dict(q=q, k=k, v=v)
    bad[where] = bad[where].clone()
    bad[where][0, 1, 7, 2] = value
    fn = registry.method_info(method).fn
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        fn(bad["q"], bad["k"], bad["v"], causal=causal)
    with pytest.raises(ValueError, match=f"{where} contains NaN or infinite"):
        attnbook.attention(bad["q"], bad["k"], bad["v"], method=method, causal=causal)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_refuses_a_numerator_that_overflows_in_float16(causal):
    """Finite float16 inputs whose weighted sums pass 65,504: an error, not an inf output; small
    values of the same shape pass (the bound per row is then far from overflow)."""
    q, k, v = random_qkv((1, 1, 64, 8), seed=0, dtype=torch.float16, scale=0.1)
    with pytest.raises(FloatingPointError, match=r"method 'linear' \(max \|q\|.*float16"):
        attnbook.attention(q, k, torch.full_like(v, 6e4), method="linear", causal=causal)
    out = attnbook.attention(q, k, v, method="linear", causal=causal)
    assert torch.isfinite(out).all()


def test_the_row_bound_of_linear_attention_bounds_every_row():
    """Σ_c |o_ic| ≤ φ(q_i)ᵀ(|S| 1) / φ(q_i)ᵀz, the bound the non-causal form checks instead of
    reading its output, on random inputs of both signs."""
    from attnbook.mechanisms.linear import elu_feature

    q, k, v = random_qkv((2, 3, 40, 6), seed=5, dtype=torch.float64, scale=3)
    out = attnbook.attention(q, k, v, method="linear")
    fq, fk = elu_feature(q), elu_feature(k)
    S, z = fk.transpose(-1, -2) @ v, fk.sum(2)
    bound = (fq @ S.abs().sum(-1, keepdim=True))[..., 0] / (fq * z[:, :, None]).sum(-1)
    assert (out.abs().sum(-1) <= bound * (1 + 1e-12)).all()
    assert (out.abs().sum(-1) < 0.999 * bound).any()  # a bound, not an identity


class _CountOps(TorchDispatchMode):
    """Counts the aten operations run inside the block, by name."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["flash", "sdpa", "linear", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_the_api_runs_the_functions_operations_and_its_checks_only(method, causal):
    """Counts, not timings: attention() runs every operation of the function it wraps and, beyond
    them, one sum (and its one number read back) per scanned tensor: none for the methods that
    check their own output, the output for the others, and the queries too for SDPA on a CPU."""
    q, k, v = random_qkv((1, 2, 64, 8), seed=0, dtype=torch.float32)
    info = registry.method_info(method)
    calls = {
        "api": lambda: attnbook.attention(q, k, v, method=method, causal=causal),
        "direct": lambda: info.fn(q, k, v, causal=causal),
    }
    counts = {}
    for name, call in calls.items():
        call()  # warm: cached constants (the Performer's features) are made once
        with _CountOps() as mode:
            call()
        counts[name] = mode.ops
    assert not counts["direct"] - counts["api"], "attention() skipped part of the method"
    scans = len(info.scan_inputs.get("cpu", ())) + (0 if info.checks_output else 1)
    extra = {"detach": scans, "sum": scans, "_local_scalar_dense": scans} if scans else {}
    assert counts["api"] - counts["direct"] == collections.Counter(extra)


@pytest.mark.parametrize("method", ["flash", "sdpa", "linear", "performer"])
def test_the_api_allocates_what_the_function_does(method):
    """Peak bytes are counts, not timings: through attention() no input-sized copy is made."""
    q, k, v = random_qkv((1, 2, 256, 16), seed=0, dtype=torch.float32)
    fn = registry.method_info(method).fn
    with torch.no_grad():
        api = measure.peak_memory_bytes(lambda: attnbook.attention(q, k, v, method=method))
        direct = measure.peak_memory_bytes(lambda: fn(q, k, v, causal=False))
    assert api <= direct + 1024, (api, direct)


def test_is_finite_sees_nan_inf_and_overflowing_sums():
    x = torch.full((100,), 6e4, dtype=torch.float16)  # the sum overflows, the values do not
    assert checks.is_finite(x)
    x[3] = float("inf")
    assert not checks.is_finite(x)
    y = torch.zeros(5)
    y[2] = float("nan")
    assert not checks.is_finite(y)
