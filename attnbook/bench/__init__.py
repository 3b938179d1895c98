"""Benchmark suites and their stored results (used by every measuring chapter).

A suite is a function ``(device, quick) -> list[dict]`` registered with
:func:`suite` in a module of this package (modules are discovered
automatically). :func:`run_suite` runs one and writes
``attnbook/results/<suite>-<device kind>.json`` labelled with device, torch
version, date and git commit; chapters read it back with :func:`load_result`.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..measure import environment

__all__ = ["RESULTS_DIR", "Suite", "suite", "suites", "sweep", "CorrectnessError", "checked", "run_suite", "load_result"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    fn: Callable


_SUITES: dict[str, Suite] = {}


def suite(name: str, description: str):
    """Decorator registering a benchmark suite ``fn(device: torch.device, quick: bool) -> list[dict]``."""

    def wrap(fn):
        _SUITES[name] = Suite(name, description, fn)
        return fn

    return wrap


def suites() -> dict[str, Suite]:
    """Every registered suite, by name (imports each module of ``attnbook.bench``)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return dict(_SUITES)


def sweep(values, desc: str):
    """Iterate over ``values`` with a progress bar (suites sweep sizes through this)."""
    return tqdm(list(values), desc=desc, leave=False, disable=None)  # None: only on a terminal


class CorrectnessError(RuntimeError):
    """An implementation disagreed with its reference, so it is not timed."""


def checked(name: str, fast, reference, rtol: float = 1e-4, atol: float = 1e-6):
    """Compare ``fast`` with ``reference`` (arrays or tensors); raise :class:`CorrectnessError` if they differ.

    Returns the maximum relative error, ``max|fast - ref| / max|ref|``. Benchmarks call this
    before timing an implementation, so a wrong form never gets a speed reported.
    """
    f = fast.detach().double().cpu().numpy() if isinstance(fast, torch.Tensor) else np.asarray(fast, dtype=float)
    r = reference.detach().double().cpu().numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference, dtype=float)
    if f.shape != r.shape:
        raise CorrectnessError(f"{name}: shape {f.shape} differs from the reference's {r.shape}")
    if not np.all(np.isfinite(f)):
        raise CorrectnessError(f"{name}: output contains NaN or infinite values")
    scale = max(float(np.max(np.abs(r))), 1e-30)
    err = float(np.max(np.abs(f - r))) / scale
    if not np.allclose(f, r, rtol=rtol, atol=atol):
        raise CorrectnessError(f"{name}: relative error {err:.2e} against the reference exceeds rtol={rtol}, atol={atol}")
    return err


def _device_kind(device: torch.device) -> str:
    return torch.device(device).type


def run_suite(name: str, device="cpu", quick: bool | None = None, out_dir: Path | str | None = RESULTS_DIR) -> dict:
    """Run suite ``name`` on ``device``; write and return the labelled result.

    ``quick=None`` follows :data:`attnbook.config.QUICK`. ``out_dir=None`` writes nothing.
    """
    from ..config import QUICK

    available = suites()
    if name not in available:
        raise ValueError(f"suite must be one of {sorted(available)}, got {name!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available")
    quick = QUICK if quick is None else bool(quick)
    rows = available[name].fn(device, quick)
    result = {"suite": name, "description": available[name].description, "quick": quick,
              "meta": environment(device), "rows": rows}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}-{_device_kind(device)}.json"
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        result["path"] = str(path)
    return result


def load_result(name: str, device_kind: str = "cuda", results_dir: Path | str = RESULTS_DIR) -> dict | None:
    """The stored result of suite ``name`` measured on ``device_kind`` ('cuda' or 'cpu'), or None."""
    path = Path(results_dir) / f"{name}-{device_kind}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())
