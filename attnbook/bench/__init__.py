"""The benchmark runner and the stored results every measuring chapter reads.

A suite is a function ``run(device, quick) -> list[dict]`` in a module of this package,
catalogued in :data:`attnbook.registry.SUITES`. :func:`run_suite` runs one and writes a JSON
file labelled with the device, threads, torch version, date, git commit, quick/full and the
machine's load average before and after. By default it writes to the reader's own folder
(``$ATTNBOOK_RESULTS``, else ``./attnbook-results``); replacing the book's stored result in
``attnbook/results/`` needs ``store=True`` (``--store`` on the command line), and a quick run
never replaces a full one unless ``force=True``. Chapters read stored results with
:func:`load_result`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from attnbook.measure import environment
from attnbook.registry import suite_info
from attnbook.results import (
    RESULTS_DIR,
    check_destination,
    load_result,
    protect,
    result_path,
    stored_label,
    time_of,
    user_results_dir,
)

__all__ = [
    "RESULTS_DIR",
    "user_results_dir",
    "sweep",
    "run_suite",
    "load_result",
    "result_path",
    "time_of",
    "stored_label",
]


def sweep(values, desc: str):
    """Iterate over ``values`` with a progress bar (shown only on a terminal)."""
    return tqdm(list(values), desc=desc, leave=False, disable=None)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _check_device(device) -> torch.device:
    """The device to run on, refused by name unless it exists here (cpu, cuda, mps)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be cpu, cuda, cuda:N or mps, got {device!r} ({err})"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {device} was asked for, but there are only "
            f"{torch.cuda.device_count()} CUDA devices"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but MPS is not available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {str(device)!r}")
    return device


def run_suite(
    name: str,
    device="cpu",
    quick: bool | None = None,
    out_dir: Path | str | None = "user",
    *,
    store: bool = False,
    force: bool = False,
) -> dict:
    """Run suite ``name`` on ``device``; write and return the labelled result.

    ``quick=None`` follows :func:`attnbook.config.quick`. ``out_dir``: ``"user"`` (default) is
    :func:`user_results_dir`, ``None`` writes nothing, ``store=True`` writes to the book's
    :data:`RESULTS_DIR` (whatever ``out_dir`` says).
    """
    from attnbook.config import quick as quick_default

    info = suite_info(name)
    device = _check_device(device)
    quick = quick_default() if quick is None else bool(quick)
    if store:
        out_dir = RESULTS_DIR
    elif isinstance(out_dir, str) and out_dir == "user":
        out_dir = user_results_dir()
    path = None if out_dir is None else result_path(name, device.type, out_dir)
    if path is not None:  # checked before anything is measured
        protect(path, quick, store, force)
        check_destination(path)
    if device.type == "cpu" and info.cpu_threads is not None:  # the record's thread policy
        torch.set_num_threads(max(1, min(info.cpu_threads, os.cpu_count() or 1)))
    load_start, start = _load_average(), time.perf_counter()
    rows = info.fn(device, quick)
    meta = {
        **environment(device),
        "threads": torch.get_num_threads(),
        "quick": quick,
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    result = {"suite": name, "description": info.doc, "quick": quick, "meta": meta, "rows": rows}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=float) + "\n")
        result["path"] = str(path)
    return result
