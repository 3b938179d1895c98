"""Run-time switches shared by every chapter.

``QUICK`` is the book's one documented switch: when True (the default on a
machine without a GPU) the chapters shrink their sweeps so that each notebook
runs in under two minutes on a 2-core CPU. Set the environment variable
``ATTNBOOK_QUICK=0`` to force the full sweeps, or ``ATTNBOOK_QUICK=1`` to force
the quick ones.
"""
from __future__ import annotations

import os

import torch

__all__ = ["DEVICE", "QUICK", "pick", "default_device"]


def default_device() -> torch.device:
    """The fastest device present: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _quick_from_env() -> bool:
    value = os.environ.get("ATTNBOOK_QUICK")
    if value is None:
        return not torch.cuda.is_available()
    if value not in {"0", "1"}:
        raise ValueError(f"ATTNBOOK_QUICK must be '0' or '1', got {value!r}")
    return value == "1"


DEVICE: torch.device = default_device()
QUICK: bool = _quick_from_env()


def pick(quick, full):
    """Return ``quick`` when :data:`QUICK` is set, else ``full``."""
    return quick if QUICK else full
