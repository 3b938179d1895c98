"""Long-sequence mechanisms (chapter 4): each has a NumPy reference beside its torch form."""
from . import blockwise, flash, sparse  # noqa: F401  (part A: sparse patterns, FlashAttention)
from . import linear, linformer, performer, recurrent  # noqa: F401  (part B: low-rank, kernel and recurrent forms)
