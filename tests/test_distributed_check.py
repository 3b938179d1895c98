"""Chapter 9: the torchrun self-check, as a user runs it on a cluster, here with gloo over
loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(nproc: int, *args: str, timeout: float = 150):
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe)] if exe.exists() else [shutil.which("torchrun") or "torchrun"]
    cmd += [
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "attnbook.distributed.check",
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize(
    "nproc, method, n, causal", [(2, "ring", 37, True), (4, "ulysses", 41, True)]
)
def test_torchrun_self_check_passes(nproc, method, n, causal):
    args = ["--method", method, "--seq-len", str(n), "--heads", "4"] + (
        ["--causal"] if causal else []
    )
    done = _torchrun(nproc, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # rank 0 only
    report = json.loads(lines[0])
    assert (report["method"], report["world_size"], report["n"], report["causal"]) == (
        method,
        nproc,
        n,
        causal,
    )
    assert 0 <= report["max_rel_error"] <= 1e-5 and 0 <= report["grad_max_rel_error"] <= 1e-5
    assert report["sent_bytes"] > 0


def test_torchrun_self_check_fails_clearly_on_heads_not_divisible():
    done = _torchrun(2, "--method", "ulysses", "--seq-len", "20", "--heads", "3")
    assert done.returncode != 0
    assert "H=3 heads over the 2 ranks: H must be a multiple of the world size" in done.stderr
