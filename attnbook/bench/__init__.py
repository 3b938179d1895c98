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

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def user_results_dir() -> Path:
    """Where a reader's runs go by default: ``$ATTNBOOK_RESULTS``, else ``./attnbook-results``."""
    return Path(os.environ.get("ATTNBOOK_RESULTS") or "attnbook-results")


def sweep(values, desc: str):
    """Iterate over ``values`` with a progress bar (shown only on a terminal)."""
    return tqdm(list(values), desc=desc, leave=False, disable=None)


def result_path(name: str, device_kind: str, results_dir: Path | str = RESULTS_DIR) -> Path:
    """The file of suite ``name`` measured on ``device_kind`` ('cpu', 'cuda', 'mps') in ``results_dir``."""
    return Path(results_dir) / f"{name}-{device_kind}.json"


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _protect(path: Path, quick: bool, store: bool, force: bool) -> None:
    """Refuse to overwrite the book's stored results without ``store``, or a full run by a quick one."""
    inside = path.resolve().parent == RESULTS_DIR.resolve()
    if inside and not store:
        raise PermissionError(
            f"{path} is one of the book's stored results; pass store=True (--store) to replace it"
        )
    if path.exists() and quick and not force:
        old = json.loads(path.read_text())
        if old.get("quick") is False:
            raise PermissionError(
                f"{path} holds a full run; a quick run replaces it only with force=True (--force)"
            )


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
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available")
    quick = quick_default() if quick is None else bool(quick)
    if store:
        out_dir = RESULTS_DIR
    elif isinstance(out_dir, str) and out_dir == "user":
        out_dir = user_results_dir()
    path = None if out_dir is None else result_path(name, device.type, out_dir)
    if path is not None:
        _protect(path, quick, store, force)
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


def time_of(row: dict, prefix: str = "") -> float:
    """The headline time of a stored row (chapter 2's measurement policy): its minimum over the
    repeats, ``row[prefix + "min_s"]``; the median for a row recorded before minima were stored."""
    key = prefix + "min_s"
    return row[key] if key in row else row[prefix + "median_s"]


def load_result(
    name: str, device_kind: str = "cuda", results_dir: Path | str = RESULTS_DIR
) -> dict | None:
    """The stored result of suite ``name`` measured on ``device_kind`` ('cuda' or 'cpu'), or None."""
    path = result_path(name, device_kind, results_dir)
    return json.loads(path.read_text()) if path.exists() else None


def stored_label(
    name: str, device_kind: str = "cuda", results_dir: Path | str = RESULTS_DIR
) -> str:
    """Two short lines for a chapter's stored-results cell: what the stored run of suite ``name`` on
    ``device_kind`` was measured on (device, torch, date, commit, quick or full), or plainly that there is none."""
    result = load_result(name, device_kind, results_dir)
    what = "GPU" if device_kind == "cuda" else device_kind.upper()
    if result is None:
        return (
            f"no {what} result stored: attnbook/results has no {result_path(name, device_kind).name}\n"
            f"(`python -m attnbook gpu` on a CUDA machine writes it)"
        )
    m = result["meta"]
    return (
        f"stored {what} result ({'quick' if result['quick'] else 'full'} sweep): {m['device']}\n"
        f"torch {m['torch']}, {m['date']}, commit {m['git_commit']}"
    )
