"""Triton kernels of the book (chapter 4, Long sequences): FlashAttention-2 and chunked causal
linear attention.

The public functions are in :mod:`attnbook.kernels.api`
(:func:`~attnbook.kernels.api.flash_attention_triton`,
:func:`~attnbook.kernels.api.linear_attention_triton`); the kernels themselves in
:mod:`attnbook.kernels.flash_triton` and :mod:`attnbook.kernels.linear_triton`. Importing this
package imports neither Triton nor the kernels. They run on CUDA tensors, or on CPU tensors in
Triton's interpreter when ``TRITON_INTERPRET=1`` is in the environment before Triton is first
imported and stays set (e.g. set in the shell): Triton reads it when it decorates functions, on
import.
"""
