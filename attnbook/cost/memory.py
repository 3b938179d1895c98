"""Memory of a Transformer: parameters, activations, checkpointing, the KV cache (chapter 3, Memory).

Sizes are in bytes unless a name says otherwise. ``bytes_per_element`` is 4 for
float32, 2 for float16/bfloat16.
"""
from __future__ import annotations

import math

from ..checks import check_nonnegative_int, check_positive_int

__all__ = [
    "layer_param_count",
    "param_count",
    "param_bytes",
    "training_state_bytes",
    "activation_bytes_coarse",
    "block_saved_bytes",
    "korthikanti_layer_bytes",
    "checkpoint_saved_bytes",
    "checkpoint_peak_bytes",
    "best_checkpoint_every",
    "kv_cache_bytes",
]


def _check(**values) -> None:
    for name, value in values.items():
        check_positive_int(name, value)


def layer_param_count(d_model: int, d_ff: int | None = None, bias: bool = True) -> int:
    """Parameters of one pre-norm Transformer layer: 4d² + 2d·d_ff, plus 5d + d_ff biases and 4d LayerNorm.

    Matches ``nn.TransformerEncoderLayer`` and ``attnbook.gpt.Block``. Chapter 3.
    """
    _check(d_model=d_model)
    d_ff = 4 * d_model if d_ff is None else check_positive_int("d_ff", d_ff)
    weights = 4 * d_model**2 + 2 * d_model * d_ff
    biases = (5 * d_model + d_ff) if bias else 0
    layernorms = 2 * (2 * d_model if bias else d_model)
    return weights + biases + layernorms


def param_count(layers: int, d_model: int, vocab_size: int, d_ff: int | None = None, block_size: int = 0,
                bias: bool = True, tied: bool = True) -> int:
    """Exact parameters of a GPT: L layers, token (and, if ``block_size``, learned position) embeddings,
    a final LayerNorm, and an LM head tied to the token embedding unless ``tied=False``.

    P ≈ 12Ld² + |V|d for d_ff = 4d; this adds every lower-order term. Chapter 3.
    """
    _check(layers=layers, vocab_size=vocab_size)
    check_nonnegative_int("block_size", block_size)
    total = layers * layer_param_count(d_model, d_ff, bias)
    total += vocab_size * d_model + block_size * d_model
    total += 2 * d_model if bias else d_model
    if not tied:
        total += vocab_size * d_model
    return total


def param_bytes(params: int, bytes_per_element: int = 4) -> int:
    """Bytes to store ``params`` numbers. Chapter 3."""
    _check(params=params, bytes_per_element=bytes_per_element)
    return params * bytes_per_element


def training_state_bytes(params: int) -> int:
    """Mixed-precision Adam: 16 bytes per parameter. Chapter 3.

    16-bit weights (2) and gradients (2), a float32 master copy (4), and Adam's
    two float32 moments (4 + 4).
    """
    return param_bytes(params, 2 + 2 + 4 + 4 + 4)


def activation_bytes_coarse(layers: int, batch: int, n: int, d_model: int, heads: int,
                            bytes_per_element: int = 4, per_token_widths: int = 16) -> dict:
    """The coarse O(Lbnd + LbHn²) activation estimate, its two terms separately. Chapter 3.

    ``per_token_widths`` is how many width-d vectors a layer keeps per token (16 for
    attnbook's block with d_ff = 4d: see :func:`block_saved_bytes`).
    """
    _check(layers=layers, batch=batch, n=n, d_model=d_model, heads=heads, bytes_per_element=bytes_per_element)
    linear = layers * batch * n * d_model * per_token_widths * bytes_per_element
    scores = layers * batch * heads * n * n * bytes_per_element
    return {"linear": linear, "scores": scores, "total": linear + scores}


def block_saved_bytes(batch: int, n: int, d_model: int, heads: int, d_ff: int | None = None,
                      bytes_per_element: int = 4, fused: bool = False, causal: bool = True) -> int:
    """Exact bytes autograd saves for backward in one ``attnbook.gpt.Block`` (no dropout). Chapter 3.

    Eight (b, n, d) tensors (two LayerNorm inputs and outputs, q, k, v, the attention output),
    four (b, n) LayerNorm statistics, two (b, n, d_ff) FFN tensors (GELU input and output),
    and for the dense mixer the (b, H, n, n) softmax output plus the (n, n) boolean causal
    mask. A fused kernel (``fused=True``, the "sdpa" mixer) keeps a (b, H, n) log-sum-exp
    instead of the n² terms.
    """
    _check(batch=batch, n=n, d_model=d_model, heads=heads, bytes_per_element=bytes_per_element)
    d_ff = 4 * d_model if d_ff is None else check_positive_int("d_ff", d_ff)
    b, e = batch, bytes_per_element
    total = e * (8 * b * n * d_model + 4 * b * n + 2 * b * n * d_ff)
    if fused:
        return total + 4 * b * heads * n  # log-sum-exp is kept in float32
    return total + e * b * heads * n * n + (n * n if causal else 0)


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int) -> int:
    """Korthikanti et al. (2022): 34·s·b·h + 5·a·s²·b bytes per layer, 16-bit, with dropout. Chapter 3."""
    _check(s=s, b=b, h=h, a=a)
    return 34 * s * b * h + 5 * a * s * s * b


def checkpoint_saved_bytes(layers: int, every: int, batch: int, n: int, d_model: int, bytes_per_element: int = 4) -> int:
    """Bytes kept after a forward pass checkpointed every ``every`` layers: one (b, n, d) input per segment. Chapter 3."""
    _check(layers=layers, every=every, batch=batch, n=n, d_model=d_model)
    return math.ceil(layers / every) * batch * n * d_model * bytes_per_element


def checkpoint_peak_bytes(layers: int, every: int, layer_bytes: int, boundary_bytes: int) -> int:
    """Activation memory model of checkpointing: ⌈L/k⌉ segment inputs plus one segment recomputed. Chapter 3.

    (L/k)·boundary + k·layer is smallest at k = √(L·boundary/layer): √L when a layer keeps
    about as much as its input, which gives memory O(√L) (Chen et al., 2016).
    """
    _check(layers=layers, every=every, layer_bytes=layer_bytes, boundary_bytes=boundary_bytes)
    return math.ceil(layers / every) * boundary_bytes + min(every, layers) * layer_bytes


def best_checkpoint_every(layers: int, layer_bytes: int, boundary_bytes: int) -> int:
    """The k in 1..L minimising :func:`checkpoint_peak_bytes`. Chapter 3."""
    _check(layers=layers)
    return min(range(1, layers + 1), key=lambda k: (checkpoint_peak_bytes(layers, k, layer_bytes, boundary_bytes), k))


def kv_cache_bytes(layers: int, d_model: int, tokens: int, heads: int, kv_heads: int | None = None,
                   bytes_per_element: int = 2, batch: int = 1) -> int:
    """KV cache: 2 (K and V) · L · tokens · batch · kv_heads · d_k · bytes. Chapter 3.

    Multi-head attention (kv_heads = H) needs 2·L·d bytes-per-element per token;
    multi-query (kv_heads = 1) and grouped-query attention divide that by H / kv_heads.
    """
    _check(layers=layers, d_model=d_model, tokens=tokens, heads=heads, bytes_per_element=bytes_per_element, batch=batch)
    kv_heads = heads if kv_heads is None else check_positive_int("kv_heads", kv_heads)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
    return 2 * layers * tokens * batch * kv_heads * (d_model // heads) * bytes_per_element
