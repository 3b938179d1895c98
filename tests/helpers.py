"""Small helpers shared by the mechanism tests (imported as ``from helpers import ...``)."""

import torch


def case_id(shape) -> str:
    """Test id of a (B, H, N, D) shape in the flash-linear-attention style: B2-T512-H4-D64."""
    B, H, T, D = shape
    return f"B{B}-T{T}-H{H}-D{D}"


def random_qkv(shape, seed: int, dtype=torch.float64, dv: int | None = None, scale: float = 1.0):
    """Seeded q, k: (B, H, N, D) and v: (B, H, N, dv or D) from a standard normal times
    ``scale``."""
    g = torch.Generator().manual_seed(seed)
    B, H, N, D = shape
    return (
        scale * torch.randn(B, H, N, D, generator=g, dtype=dtype),
        scale * torch.randn(B, H, N, D, generator=g, dtype=dtype),
        torch.randn(B, H, N, dv or D, generator=g, dtype=dtype),
    )


def to_numpy(*xs):
    """Tensors as float64 NumPy arrays, in order."""
    return [x.detach().double().cpu().numpy() for x in xs]
