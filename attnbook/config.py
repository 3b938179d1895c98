"""Run-time switches shared by every chapter, read when first used (never at import).

``QUICK`` is the book's one documented switch: when True (the default on a machine
without a GPU) the chapters shrink their sweeps so that each notebook runs in under
two minutes on a 2-core CPU. Set the environment variable ``ATTNBOOK_QUICK=0`` to force
the full sweeps, or ``ATTNBOOK_QUICK=1`` to force the quick ones. ``DEVICE`` is the
fastest device present. Both are module attributes computed on access (``config.QUICK``,
``from attnbook.config import DEVICE``), so a bad ``ATTNBOOK_QUICK`` is reported when a
chapter first asks for it, not when ``attnbook`` is imported.
"""

from __future__ import annotations

import os

import torch

__all__ = ["DEVICE", "QUICK", "quick", "default_device", "pick"]  # noqa: F822 (module __getattr__)

QUICK_VARIABLE = "ATTNBOOK_QUICK"


def default_device() -> torch.device:
    """The fastest device present: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def quick() -> bool:
    """True when the chapters should run their small
    sweeps: ``$ATTNBOOK_QUICK``, else 'no GPU present'."""
    value = os.environ.get(QUICK_VARIABLE)
    if value is None or value == "":
        return not torch.cuda.is_available()
    if value not in {"0", "1"}:
        raise ValueError(
            f"{QUICK_VARIABLE} must be '0' (full sweeps) or '1' (quick sweeps), got {value!r}"
        )
    return value == "1"


def pick(quick_value, full_value):
    """Return ``quick_value`` when the quick sweeps are on (:func:`quick`), else ``full_value``."""
    return quick_value if quick() else full_value


def __getattr__(name: str):
    if name == "QUICK":
        return quick()
    if name == "DEVICE":
        return default_device()
    raise AttributeError(f"module 'attnbook.config' has no attribute {name!r}")
