"""The one-command GPU edition (``python -m attnbook gpu``, ``make gpu``): every suite on CUDA.

Each registered suite runs through :func:`attnbook.bench.run_suite` with ``store=True`` (it writes
the labelled ``attnbook/results/NAME-cuda.json``), in a process of its own, at the sweep its
:class:`~attnbook.registry.Suite` record names (``gpu_quick``), and is stopped when it passes its
time allowance (``gpu_allowance_s``), the suites with the smallest allowances first so that
a long suite stopped at its allowance holds back none of the others. The allowances add up to at
most :data:`BUDGET_S` (15 minutes), so the edition finishes within its budget on any GPU by
construction; on one H100/H200-class GPU every suite is expected to finish well inside its
allowance. A suite that is stopped writes nothing (``run_suite`` writes only a finished run) and is
reported as such.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["BUDGET_S", "Step", "plan", "format_plan", "run_plan"]

#: wall-clock budget of the whole GPU edition, in seconds
BUDGET_S = 900.0
#: of which kept for starting and stopping the suites' processes: the allowances share the rest
START_STOP_S = 20.0


@dataclass(frozen=True)
class Step:
    """One suite of the GPU edition: its sweep (``quick`` or full), time allowance and why."""

    suite: str
    quick: bool
    allowance_s: float
    why: str


def plan() -> list[Step]:
    """The GPU edition's steps, one per registered suite, smallest allowance first (catalogue order
    among equals), read from each :class:`~attnbook.registry.Suite` record (``gpu_quick``,
    ``gpu_allowance_s``, ``gpu_note``)."""
    from attnbook.registry import suite_info, suites

    steps = []
    for name in suites():
        info = suite_info(name)
        steps.append(Step(name, info.gpu_quick, float(info.gpu_allowance_s), info.gpu_note))
    return sorted(steps, key=lambda s: s.allowance_s)


def format_plan(steps: list[Step], device: str) -> str:
    """The plan as printed before anything runs: suites, sweeps, allowances and the total."""
    total = sum(s.allowance_s for s in steps)
    lines = [
        f"attnbook GPU edition on {device}: {len(steps)} suites, stored in "
        "attnbook/results/*-cuda.json",
        "each suite runs in its own process and is stopped at its allowance; at most "
        f"{total / 60:.1f} min "
        f"in all (budget {BUDGET_S / 60:.0f} min)",
        "",
    ]
    for s in steps:
        lines.append(
            f"  {s.suite:22s} {'quick' if s.quick else 'full ':5s} <= {s.allowance_s:4.0f} s  "
            f"{s.why}"
        )
    if total > BUDGET_S - START_STOP_S:
        lines.append(
            f"warning: the allowances add up to {total:.0f} s, above the "
            f"{BUDGET_S - START_STOP_S:.0f} s "
            "they share (suites were added to the registry that the plan does not know)"
        )
    return "\n".join(lines)


def _environment() -> dict:
    env = dict(os.environ)
    # Triton 3.9 warns on every compile when this is unset; 1 keeps its current default (FP fusion
    # on).
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env.pop("TRITON_INTERPRET", None)  # compiled kernels on the GPU, never the CPU interpreter
    return env


def _command(step: Step, device: str, force: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "attnbook",
        "bench",
        step.suite,
        "--device",
        device,
        "--quick" if step.quick else "--full",
        "--store",
    ] + (["--force"] if force else [])


def run_plan(
    steps: list[Step], device: str = "cuda", force: bool = False, out=sys.stdout
) -> list[dict]:
    """Run each step as ``python -m attnbook bench SUITE --device DEVICE --store``
    under its allowance.

    Returns one record per suite: suite, status ("stored", "failed" or "stopped"), seconds, message.
    """
    records = []
    for s in steps:
        cmd = _command(s, device, force)
        print(
            f"== {s.suite} ({'quick' if s.quick else 'full'}, at most {s.allowance_s:.0f} s)",
            file=out,
            flush=True,
        )
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            text, _ = proc.communicate(timeout=s.allowance_s)
            status = "stored" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the suite and any worker processes it started
            text, _ = proc.communicate()
            status = "stopped"
        seconds = time.perf_counter() - start
        last = (text or "").strip().splitlines()[-1:] or [""]
        message = (
            f"passed its {s.allowance_s:.0f} s allowance; nothing stored"
            if status == "stopped"
            else last[0]
        )
        print(f"   {status} in {seconds:.0f} s: {message}", file=out, flush=True)
        records.append({"suite": s.suite, "status": status, "seconds": seconds, "message": message})
    return records
