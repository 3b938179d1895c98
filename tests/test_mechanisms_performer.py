"""Chapter 4: Performer FAVOR+ — torch against the NumPy reference, the random features, bad
input."""

import numpy as np
import pytest
import torch
from helpers import case_id, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import reference
from attnbook.checks import rel_error
from attnbook.mechanisms import performer

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 8), (1, 4, 64, 16), (2, 2, 130, 32)]


def _qkv(shape, seed, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(shape, generator=g, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("shape", SHAPES, ids=case_id)
@pytest.mark.parametrize("causal", [False, True])
def test_registered_method_matches_numpy_reference(shape, causal, device):
    q, k, v = _qkv(shape, sum(shape), dtype=torch.float32)
    ref = performer.performer_numpy(*to_numpy(q, k, v), causal=causal, features=64, seed=3)
    out = attnbook.attention(
        q.to(device),
        k.to(device),
        v.to(device),
        method="performer",
        causal=causal,
        features=64,
        seed=3,
    )
    assert out.device.type == device.type and out.shape == shape
    assert rel_error(out, ref) < 1e-4


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    N=st.integers(1, 120),
    D=st.integers(1, 9),
    r=st.integers(1, 40),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
    chunk=st.sampled_from([2, 7]),
)
def test_torch_matches_reference_float64(B, H, N, D, r, causal, seed, chunk):
    """chunk 2: groups of 32 tokens, so N > 32 runs several groups (features made group by group,
    one key stabiliser for all) and a padded last chunk."""
    q, k, v = _qkv((B, H, N, D), seed)
    ref = performer.performer_numpy(*to_numpy(q, k, v), causal=causal, features=r, seed=seed)
    out = performer.performer_attention(
        q, k, v, causal=causal, features=r, seed=seed, chunk_size=chunk
    )
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_large_inputs_do_not_overflow_in_float32():
    q, k, v = _qkv((1, 2, 50, 16), 1, dtype=torch.float32, scale=6.0)
    for causal in (False, True):
        out = performer.performer_attention(q, k, v, causal=causal, features=32)
        ref = performer.performer_numpy(*to_numpy(q, k, v), causal=causal, features=32)
        assert torch.isfinite(out).all()
        assert rel_error(out, ref) < 1e-3


@pytest.mark.parametrize("r, d", [(8, 8), (20, 8), (5, 16)], ids=["r8-D8", "r20-D8", "r5-D16"])
def test_random_features_are_orthogonal_within_blocks(r, d):
    omega = performer.random_features(r, d, seed=7)
    assert omega.shape == (r, d)
    for start in range(0, r, d):
        block = omega[start : start + d]
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-10)
    np.testing.assert_array_equal(omega, performer.random_features(r, d, seed=7))
    assert not np.allclose(omega, performer.random_features(r, d, seed=8))


def test_features_estimate_the_softmax_kernel_without_bias():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=8) * 0.4, rng.normal(size=8) * 0.4
    est = [
        performer.feature_map(x, w) @ performer.feature_map(y, w)
        for w in (performer.random_features(64, 8, seed=s) for s in range(400))
    ]
    # mean over 400 seeds of a positive estimator: within 3 standard errors of exp(x·y)
    assert abs(np.mean(est) - np.exp(x @ y)) < 3 * np.std(est) / np.sqrt(len(est))
    assert all(e > 0 for e in est)


def test_attention_matrix_error_shrinks_with_more_features():
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(64, 16)) * 0.7, rng.normal(size=(64, 16)) * 0.7
    exact = reference.scaled_dot_product_attention(q, k, np.eye(64))[1]

    def err(r):
        return np.mean(
            [
                np.linalg.norm(performer.performer_weights_numpy(q, k, r, s) - exact)
                for s in range(5)
            ]
        )

    assert err(1024) < 0.5 * err(16)


@pytest.mark.parametrize("causal, N, chunk", [(False, 6, 4), (True, 6, 4), (True, 37, 2)])
def test_gradcheck_float64(causal, N, chunk):
    """N = 37, chunk 2: two groups of chunks and a padded last chunk."""
    q, k, v = (x.requires_grad_() for x in _qkv((1, 2, N, 3), 0, scale=0.5))
    assert torch.autograd.gradcheck(
        lambda a, b, c: performer.performer_attention(
            a, b, c, causal=causal, features=5, chunk_size=chunk
        ),
        (q, k, v),
        fast_mode=True,
    )


def test_registry_lists_performer_with_its_options():
    info = attnbook.method_info("performer")
    assert not info.exact and set(info.options) == {"features", "seed", "chunk_size"}


@pytest.mark.parametrize(
    "call, error, word",
    [
        (
            lambda q: attnbook.attention(q, q, q, method="performer", features=0),
            ValueError,
            "features",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="performer", features=-4),
            ValueError,
            "features",
        ),
        (
            lambda q: attnbook.attention(q, q, q, method="performer", features=2.0),
            TypeError,
            "features",
        ),
        (lambda q: attnbook.attention(q, q, q, method="performer", seed=-1), ValueError, "seed"),
        (lambda q: attnbook.attention(q, q, q, method="performer", r=8), ValueError, "r"),
        (
            lambda q: performer.performer_attention(q, q[:, :, :2], q[:, :, :2], causal=True),
            ValueError,
            "causal",
        ),
        (
            lambda q: performer.performer_numpy(q.numpy(), q.numpy()[..., :2], q.numpy()),
            ValueError,
            "q, k, v",
        ),
        (lambda q: performer.random_features(0, 4), ValueError, "features"),
    ],
    ids=[
        "r0",
        "r-neg",
        "r-float",
        "seed-neg",
        "unknown-option",
        "causal-cross",
        "naive-shapes",
        "features0",
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, word):
    q = torch.randn(1, 2, 6, 4)
    with pytest.raises(error, match=word):
        call(q)
