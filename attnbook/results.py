"""The stored benchmark results: where they live, how they are read, labelled and protected.

The book's stored results are ``attnbook/results/SUITE-DEVICE.json`` (:data:`RESULTS_DIR`); a
reader's own runs go to ``$ATTNBOOK_RESULTS`` or ``./attnbook-results``. Chapters read them with
:func:`load_result` and label them with :func:`stored_label`; :func:`protect` refuses to
overwrite a stored result without ``store``, or a full run with a quick one. Used by
:mod:`attnbook.bench` (which re-exports these names) and by :mod:`attnbook.experiments.chooser`,
which therefore needs no bench.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = [
    "RESULTS_DIR",
    "user_results_dir",
    "result_path",
    "read_result_file",
    "load_result",
    "stored_label",
    "time_of",
    "protect",
    "check_destination",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def user_results_dir() -> Path:
    """Where a reader's runs go by default: ``$ATTNBOOK_RESULTS``, else ``./attnbook-results``."""
    return Path(os.environ.get("ATTNBOOK_RESULTS") or "attnbook-results")


def result_path(name: str, device_kind: str, results_dir: Path | str = RESULTS_DIR) -> Path:
    """The file of suite ``name`` measured on ``device_kind`` ('cpu', 'cuda', 'mps')."""
    return Path(results_dir) / f"{name}-{device_kind}.json"


def read_result_file(path: Path | str) -> dict:
    """The JSON object in ``path``; ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a valid JSON result file ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object (a result), got a {type(data).__name__}")
    return data


def load_result(
    name: str, device_kind: str = "cuda", results_dir: Path | str = RESULTS_DIR
) -> dict | None:
    """The stored result of suite ``name`` measured on ``device_kind`` ('cuda', 'cpu'), or None."""
    path = result_path(name, device_kind, results_dir)
    return read_result_file(path) if path.exists() else None


def time_of(row: dict, prefix: str = "") -> float:
    """The headline time of a stored row (chapter 2's measurement policy): its minimum over the
    repeats, ``row[prefix + "min_s"]``; the median for a row recorded before minima were stored."""
    key = prefix + "min_s"
    return row[key] if key in row else row[prefix + "median_s"]


def stored_label(
    name: str, device_kind: str = "cuda", results_dir: Path | str = RESULTS_DIR
) -> str:
    """Two short lines for a chapter's stored-results cell: what the stored run of suite ``name``
    on ``device_kind`` was measured on (device, torch, date, commit, quick or full), or plainly
    that there is none."""
    result = load_result(name, device_kind, results_dir)
    what = "GPU" if device_kind == "cuda" else device_kind.upper()
    if result is None:
        return (
            f"no {what} result stored: attnbook/results has no "
            f"{result_path(name, device_kind).name}\n"
            f"(`python -m attnbook gpu` on a CUDA machine writes it)"
        )
    m = result["meta"]
    return (
        f"stored {what} result ({'quick' if result['quick'] else 'full'} sweep): {m['device']}\n"
        f"torch {m['torch']}, {m['date']}, commit {m['git_commit']}"
    )


def protect(path: Path, quick: bool, store: bool, force: bool) -> None:
    """Refuse to overwrite the book's stored results without ``store``, or a full run by a quick
    one without ``force``."""
    inside = path.resolve().parent == RESULTS_DIR.resolve()
    if inside and not store:
        raise PermissionError(
            f"{path} is one of the book's stored results; pass store=True (--store) to replace it"
        )
    if path.exists() and quick and not force:
        if read_result_file(path).get("quick") is False:
            raise PermissionError(
                f"{path} holds a full run; a quick run replaces it only with force=True (--force)"
            )


def check_destination(path: Path) -> None:
    """Make sure ``path`` can be written before anything is measured (``ValueError`` naming it)."""
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"cannot write the result to {path}: it is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"cannot create the results folder {folder}: {err.strerror or err}"
        ) from err
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"cannot write the result to {path}: permission denied")
