"""Shared test set-up: the corpus folder and small helpers."""

import os
from pathlib import Path

import pytest
import torch

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "ATTNBOOK_DATA" not in os.environ and _SHARED_DATA.exists():
    os.environ["ATTNBOOK_DATA"] = str(_SHARED_DATA)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# Without CUDA the Triton kernels run in Triton's interpreter, which must be chosen before anything
# imports Triton (torch's FlopCounterMode does): so, here, before any test module is collected.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test using this fixture runs on CPU and, when present, on CUDA."""
    return torch.device(request.param)
