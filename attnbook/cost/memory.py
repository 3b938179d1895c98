"""Memory of a Transformer (chapter 3): parameter and optimiser bytes, activations saved for the
backward pass, gradient checkpointing, the KV cache.

Sizes are in bytes unless a name says otherwise; bytes are reported in binary units
(1 GiB = 2**30 bytes) throughout the book. ``bytes_per_element`` is 4 for float32, 2 for
float16/bfloat16.
"""

from __future__ import annotations

import math

from attnbook.checks import (
    check_bool,
    check_nonnegative_int,
    check_positive_int,
    check_sizes,
    exact_ints,
)

__all__ = [
    "param_bytes",
    "training_state_bytes",
    "activation_bytes_coarse",
    "block_saved_bytes",
    "korthikanti_layer_bytes",
    "checkpoint_saved_bytes",
    "checkpoint_peak_bytes",
    "best_checkpoint_every",
    "kv_cache_bytes",
    "recurrent_state_bytes",
]


@exact_ints
def param_bytes(params: int, bytes_per_element: int = 4) -> int:
    """Bytes to store ``params`` numbers. Chapter 3."""
    check_sizes(params=params, bytes_per_element=bytes_per_element)
    return params * bytes_per_element


@exact_ints
def training_state_bytes(params: int) -> int:
    """Mixed-precision Adam: 16 bytes per parameter. Chapter 3.

    16-bit weights (2) and gradients (2), a float32 master copy (4), and Adam's
    two float32 moments (4 + 4).
    """
    return param_bytes(params, 2 + 2 + 4 + 4 + 4)


@exact_ints
def activation_bytes_coarse(
    layers: int,
    batch: int,
    n: int,
    d_model: int,
    heads: int,
    bytes_per_element: int = 4,
    per_token_widths: int = 16,
) -> dict:
    """The coarse O(Lbnd + LbHn²) activation estimate, its two terms separately. Chapter 3.

    ``per_token_widths`` is how many width-d vectors a layer keeps per token (16 for
    attnbook's block with d_ff = 4d: see :func:`block_saved_bytes`).
    """
    check_sizes(
        layers=layers,
        batch=batch,
        n=n,
        d_model=d_model,
        heads=heads,
        bytes_per_element=bytes_per_element,
    )
    linear = layers * batch * n * d_model * per_token_widths * bytes_per_element
    scores = layers * batch * heads * n * n * bytes_per_element
    return {"linear": linear, "scores": scores, "total": linear + scores}


@exact_ints
def block_saved_bytes(
    batch: int,
    n: int,
    d_model: int,
    heads: int,
    d_ff: int | None = None,
    bytes_per_element: int = 4,
    fused: bool = False,
    causal: bool = True,
    rng_state: bool = False,
) -> int:
    """Exact bytes autograd saves for backward in one ``attnbook.models.gpt.Block`` (no dropout).

    Chapter 3.

    Eight (b, n, d) tensors (two LayerNorm inputs and outputs, q, k, v, the attention output),
    four (b, n) LayerNorm statistics, two (b, n, d_ff) FFN tensors (GELU input and output),
    and for the dense mixer the (b, H, n, n) softmax output plus the (n, n) boolean causal
    mask. A fused kernel (``fused=True``, the "sdpa" mixer) keeps a (b, H, n) log-sum-exp
    instead of the n² terms. On CUDA the fused kernel for float32 (the memory-efficient one) also
    saves its random-number state, a seed and an offset, even without dropout: ``rng_state=True``
    adds those two int64 (16 bytes), as measured on an H200.
    """
    check_sizes(batch=batch, n=n, d_model=d_model, heads=heads, bytes_per_element=bytes_per_element)
    d_ff = 4 * d_model if d_ff is None else check_positive_int("d_ff", d_ff)
    b, e = batch, bytes_per_element
    total = e * (8 * b * n * d_model + 4 * b * n + 2 * b * n * d_ff)
    if fused:  # log-sum-exp kept in float32
        return total + 4 * b * heads * n + (16 if check_bool("rng_state", rng_state) else 0)
    return total + e * b * heads * n * n + (n * n if causal else 0)


@exact_ints
def korthikanti_layer_bytes(s: int, b: int, h: int, a: int) -> int:
    """Korthikanti et al. (2022): 34·s·b·h + 5·a·s²·b bytes per layer, 16-bit, with dropout.

    Chapter 3.
    """
    check_sizes(s=s, b=b, h=h, a=a)
    return 34 * s * b * h + 5 * a * s * s * b


@exact_ints
def checkpoint_saved_bytes(
    layers: int, every: int, batch: int, n: int, d_model: int, bytes_per_element: int = 4
) -> int:
    """Bytes kept after a forward pass checkpointed every ``every`` layers.

    One (b, n, d) input per segment. Chapter 3.
    """
    check_sizes(layers=layers, every=every, batch=batch, n=n, d_model=d_model)
    return math.ceil(layers / every) * batch * n * d_model * bytes_per_element


@exact_ints
def checkpoint_peak_bytes(layers: int, every: int, layer_bytes: int, boundary_bytes: int) -> int:
    """Activation memory of checkpointing: ⌈L/k⌉ segment inputs plus one segment recomputed.

    Chapter 3.

    (L/k)·boundary + k·layer is smallest at k = √(L·boundary/layer): √L when a layer keeps
    about as much as its input, which gives memory O(√L) (Chen et al., 2016).
    """
    check_sizes(layers=layers, every=every, layer_bytes=layer_bytes, boundary_bytes=boundary_bytes)
    return math.ceil(layers / every) * boundary_bytes + min(every, layers) * layer_bytes


@exact_ints
def best_checkpoint_every(layers: int, layer_bytes: int, boundary_bytes: int) -> int:
    """The k in 1..L minimising :func:`checkpoint_peak_bytes`. Chapter 3."""
    check_sizes(layers=layers)
    return min(
        range(1, layers + 1),
        key=lambda k: (checkpoint_peak_bytes(layers, k, layer_bytes, boundary_bytes), k),
    )


@exact_ints
def kv_cache_bytes(
    layers: int,
    d_model: int,
    tokens: int,
    heads: int,
    kv_heads: int | None = None,
    bytes_per_element: int = 2,
    batch: int = 1,
    latent_dim: int | None = None,
    rope_dim: int = 0,
) -> int:
    """KV cache: 2 (K and V) · L · tokens · batch · kv_heads · d_k · bytes. Chapters 3 and 10.

    Multi-head attention (kv_heads = H) needs 2·L·d bytes-per-element per token;
    multi-query (kv_heads = 1) and grouped-query attention divide that by H / kv_heads.
    Multi-head latent attention (``latent_dim`` d_c given, chapter 10) caches one latent of
    width d_c and one shared RoPE key of width ``rope_dim`` d_h^R per token and layer:
    L · tokens · batch · (d_c + d_h^R) · bytes, whatever the heads.
    """
    check_sizes(
        layers=layers,
        d_model=d_model,
        tokens=tokens,
        heads=heads,
        bytes_per_element=bytes_per_element,
        batch=batch,
    )
    if latent_dim is not None:
        check_positive_int("latent_dim", latent_dim)
        check_nonnegative_int("rope_dim", rope_dim)
        if kv_heads is not None:
            raise ValueError("kv_heads and latent_dim exclude each other (GQA or MLA)")
        return layers * tokens * batch * (latent_dim + rope_dim) * bytes_per_element
    if rope_dim:
        raise ValueError("rope_dim is MLA's decoupled key width: give latent_dim with it")
    kv_heads = heads if kv_heads is None else check_positive_int("kv_heads", kv_heads)
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
    return 2 * layers * tokens * batch * kv_heads * (d_model // heads) * bytes_per_element


@exact_ints
def recurrent_state_bytes(
    layers: int,
    heads: int,
    d_k: int,
    d_v: int | None = None,
    bytes_per_element: int = 4,
    batch: int = 1,
) -> int:
    """Decoding state of a matrix-state layer (linear attention's S, retention, the delta rule,
    Gated DeltaNet, GLA): L · batch · heads · d_k · d_v · bytes, whatever the context. Chapter 4.

    Linear attention also keeps its normaliser z, heads · d_k more numbers per layer.
    """
    d_v = d_k if d_v is None else d_v
    check_sizes(layers=layers, heads=heads, d_k=d_k, d_v=d_v, batch=batch)
    check_sizes(bytes_per_element=bytes_per_element)
    return layers * batch * heads * d_k * d_v * bytes_per_element
