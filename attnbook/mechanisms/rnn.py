"""An Elman RNN, the sequential baseline attention is compared with (chapter 1).

h_t = tanh(x_t W_x + h_{t-1} W_h): n dependent steps, each O(d²).
"""

from __future__ import annotations

import numpy as np
import torch

from attnbook.checks import check_array, check_tensor

__all__ = ["rnn_numpy", "rnn"]


def _check_weights(d_in: int, Wx_shape, Wh_shape) -> None:
    if Wx_shape[0] != d_in:
        raise ValueError(f"Wx must have {d_in} rows (the width of X), got shape {tuple(Wx_shape)}")
    if tuple(Wh_shape) != (Wx_shape[1], Wx_shape[1]):
        raise ValueError(
            f"Wh must be square ({Wx_shape[1]}, {Wx_shape[1]}), got shape {tuple(Wh_shape)}"
        )


def rnn_numpy(X, Wx, Wh) -> np.ndarray:
    """NumPy Elman RNN. X: (n, d_in), Wx: (d_in, d), Wh: (d, d) -> hidden states (n, d).

    Chapter 1.
    """
    X, Wx, Wh = (
        check_array("X", X, ndim=2),
        check_array("Wx", Wx, ndim=2),
        check_array("Wh", Wh, ndim=2),
    )
    _check_weights(X.shape[1], Wx.shape, Wh.shape)
    h = np.zeros(Wh.shape[0])
    out = np.empty((X.shape[0], Wh.shape[0]))
    for t, x in enumerate(X):
        h = np.tanh(x @ Wx + h @ Wh)
        out[t] = h
    return out


def rnn(X: torch.Tensor, Wx: torch.Tensor, Wh: torch.Tensor) -> torch.Tensor:
    """Torch Elman RNN. X: (B, n, d_in) -> (B, n, d). The input projection is one parallel
    product; the recurrence is n sequential steps. Chapter 1."""
    check_tensor("X", X, ndim=3)
    check_tensor("Wx", Wx, ndim=2)
    check_tensor("Wh", Wh, ndim=2)
    _check_weights(X.shape[2], Wx.shape, Wh.shape)
    xs = X @ Wx
    h = xs.new_zeros(X.shape[0], Wh.shape[0])
    out = []
    for t in range(X.shape[1]):
        h = torch.tanh(xs[:, t] + h @ Wh)
        out.append(h)
    return torch.stack(out, dim=1)
