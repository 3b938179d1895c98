"""Input validation helpers name the argument and what was expected."""

import numpy as np
import pytest
import torch

from attnbook.checks import (
    check_array,
    check_mask,
    check_positive_float,
    check_positive_int,
    check_same_length,
    check_tensor,
)


@pytest.mark.parametrize(
    "value, exc",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_positive_int(value, exc):
    with pytest.raises(exc, match="window must be an integer >= 1"):
        check_positive_int("window", value)
    assert check_positive_int("window", np.int64(3)) == 3


@pytest.mark.parametrize(
    "value, exc",
    [(0.0, ValueError), (float("inf"), ValueError), (float("nan"), ValueError), ("x", TypeError)],
)
def test_positive_float(value, exc):
    with pytest.raises(exc, match="gamma must be"):
        check_positive_float("gamma", value)


def test_array_and_tensor_checks():
    with pytest.raises(TypeError, match="X must hold real numbers"):
        check_array("X", np.array(["a"]))
    with pytest.raises(ValueError, match="X contains NaN"):
        check_array("X", np.array([np.inf]))
    with pytest.raises(TypeError, match="q must be a floating-point tensor"):
        check_tensor("q", torch.ones(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="q must have 4 dimensions"):
        check_tensor("q", torch.ones(2), ndim=4)


def test_mask_check():
    with pytest.raises(TypeError, match="mask must be a boolean array or tensor"):
        check_mask("mask", [[True]], 1, 1)
    assert check_mask("mask", None, 3, 3) is None
    assert check_mask("mask", torch.ones(2, 3, 4, dtype=torch.bool), 3, 4).shape == (2, 3, 4)


def test_check_same_length_names_what_needs_it():
    check_same_length(np.zeros((1, 1, 4, 2)), torch.zeros(1, 1, 4, 2))  # equal: no error
    with pytest.raises(ValueError, match=r"^retention needs as many queries as keys, got N=3 "):
        check_same_length(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 5, 2), "retention")
    with pytest.raises(ValueError, match=r"^causal=True needs .* N=5 queries and M=3 keys"):
        check_same_length(np.zeros((5, 2)), np.zeros((3, 2)))
