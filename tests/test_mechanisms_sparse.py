"""Chapter 4: sparse patterns as masks, their block-wise torch form, their costs, bad input."""

import math

import numpy as np
import pytest
import torch
from helpers import case_id
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbook
from attnbook import cost, reference
from attnbook.checks import rel_error
from attnbook.measure import count_flops
from attnbook.mechanisms import blockwise, sparse
from attnbook.mechanisms.dense import dense_attention


def _brute(n, rule):
    return np.array([[bool(rule(i, j)) for j in range(n)] for i in range(n)])


def _patterns(n, w, causal, bs):
    """(pattern, its mask by brute force from the definitions in the chapter)."""
    g = (0, n // 2)
    c = (lambda i, j: j <= i) if causal else (lambda i, j: True)
    layout = sparse.default_block_layout(math.ceil(n / bs))
    return [
        (
            sparse.SlidingWindow(causal=causal, window=w),
            _brute(n, lambda i, j: abs(i - j) < w and c(i, j)),
        ),
        (
            sparse.Strided(causal=causal, stride=w),
            _brute(n, lambda i, j: (abs(i - j) < w or (i - j) % w == 0) and c(i, j)),
        ),
        (
            sparse.Longformer(causal=causal, window=w, global_tokens=g),
            _brute(n, lambda i, j: (abs(i - j) < w or i in g or j in g) and c(i, j)),
        ),
        (
            sparse.BlockSparse(causal=causal, block_size=bs),
            _brute(n, lambda i, j: layout[i // bs, j // bs] and c(i, j)),
        ),
    ]


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), w=st.integers(1, 12), bs=st.integers(1, 9), causal=st.booleans())
def test_masks_match_definitions_and_nnz_formulas(n, w, causal, bs):
    for pattern, expected in _patterns(n, w, causal, bs):
        mask = pattern.mask(n)
        np.testing.assert_array_equal(mask, expected, err_msg=str(pattern))
    layout = sparse.default_block_layout(math.ceil(n / bs))
    assert sparse.sliding_window_mask(n, w, causal).sum() == cost.sliding_window_nnz(n, w, causal)
    assert sparse.strided_mask(n, w, causal).sum() == cost.strided_nnz(n, w, causal)
    assert sparse.longformer_mask(n, w, (0, n // 2), causal).sum() == cost.longformer_nnz(
        n, w, (0, n // 2), causal
    )
    assert sparse.block_sparse_mask(n, bs, None, causal).sum() == cost.block_sparse_nnz(
        n, bs, layout, causal
    )


def test_tiny_pictures_n12():
    causal_w3 = sparse.sliding_window_mask(12, 3, causal=True)
    assert causal_w3[5].tolist() == [j in (3, 4, 5) for j in range(12)]
    lf = sparse.longformer_mask(12, 2, (0,))
    assert (
        lf[0].all() and lf[:, 0].all() and lf[6].sum() == 4
    )  # neighbours 5, 6, 7 and the global token
    assert sparse.strided_mask(12, 4, causal=True)[11].tolist() == [
        j in (3, 7, 8, 9, 10, 11) for j in range(12)
    ]


CASES = [(1, 1, 1, 4), (2, 3, 17, 8), (1, 2, 64, 16), (2, 1, 97, 5)]


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_blockwise_matches_numpy_reference(case, causal, device):
    B, H, N, D = case
    g = torch.Generator().manual_seed(N)
    q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))
    for pattern, mask in _patterns(N, 5, causal, 8):
        ref = sparse.sparse_attention_numpy(
            q.double().numpy(), k.double().numpy(), v.double().numpy(), mask
        )
        out = sparse.sparse_attention(
            q.to(device), k.to(device), v.to(device), pattern, block_size=8
        )
        assert out.device.type == device.type and out.shape == (B, H, N, D)
        assert rel_error(out, ref) < 1e-5, pattern


@settings(max_examples=10, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 2),
    N=st.integers(1, 30),
    D=st.integers(1, 6),
    w=st.integers(1, 10),
    bs=st.integers(1, 12),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_blockwise_outputs_and_gradients_float64(B, H, N, D, w, bs, causal, seed):
    g = torch.Generator().manual_seed(seed)
    base = [torch.randn(B, H, N, D, generator=g, dtype=torch.float64) for _ in range(3)]
    for pattern, mask in _patterns(N, w, causal, bs):
        xs = [b.clone().requires_grad_() for b in base]
        ys = [b.clone().requires_grad_() for b in base]
        out = sparse.sparse_attention(*xs, pattern, block_size=bs)
        ref = dense_attention(*ys, mask=torch.from_numpy(mask))
        np.testing.assert_allclose(
            out.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12
        )
        w_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
        (out * w_out).sum().backward()
        (ref * w_out).sum().backward()
        for a, b in zip(xs, ys):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_gradcheck_sliding_window():
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(1, 2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    f = lambda a, b, c: attnbook.attention(
        a, b, c, method="sliding_window", causal=True, window=3, block_size=2
    )  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, v))


@pytest.mark.parametrize("N", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_window_covering_sequence_is_exact(N, causal, device):
    g = torch.Generator().manual_seed(N)
    q, k, v = (torch.randn(2, 2, N, 16, generator=g).to(device) for _ in range(3))
    out = attnbook.attention(
        q, k, v, method="sliding_window", causal=causal, window=N, block_size=64
    )
    ref = reference.attention(*(x.cpu().double().numpy() for x in (q, k, v)), causal=causal)
    assert rel_error(out, ref) < 1e-5


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_blockwise_skips_tiles_and_flops_match_formula(causal):
    n, w, bs, D, H = 512, 32, 16, 8, 2
    q, k, v = (torch.randn(1, H, n, D) for _ in range(3))
    pattern = sparse.SlidingWindow(causal=causal, window=w)
    counter_flops = count_flops(lambda: sparse.sparse_attention(q, k, v, pattern, block_size=bs))
    tiles = cost.sliding_window_tiles(n, w, bs, causal)
    assert blockwise.plan(pattern, n, bs).tiles == tiles
    assert counter_flops == cost.blockwise_flops(tiles, bs, D, heads=H)
    dense = cost.sparse_flops(n * n, D, heads=H)
    assert counter_flops < dense / 5  # the kernel really skips the masked work
    assert cost.sparse_flops(cost.sliding_window_nnz(n, w, causal), D, heads=H) <= counter_flops


def test_classic_slip_total_vs_per_token():
    n, s, d = 16384, 256, 64
    assert cost.sparse_flops_total(n, s, d) == n * cost.sparse_flops_per_token(s, d)
    assert cost.sparse_flops_total(2 * n, s, d) == 2 * cost.sparse_flops_total(
        n, s, d
    )  # linear in n, not constant
    assert cost.sparse_flops(n * n, d) // cost.sparse_flops_total(n, s, d) == 64


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: sparse.sliding_window_mask(8, 0), ValueError, "window"),
        (lambda: sparse.sliding_window_mask(8, -3), ValueError, "window"),
        (lambda: sparse.sliding_window_mask(8, 1.5), TypeError, "window"),
        (lambda: sparse.strided_mask(8, 0), ValueError, "stride"),
        (lambda: sparse.longformer_mask(8, 2, (0, 8)), ValueError, "global_tokens"),
        (lambda: sparse.longformer_mask(8, 2, (-1,)), ValueError, "global_tokens"),
        (lambda: sparse.longformer_mask(8, 2, ("a",)), TypeError, "global_tokens"),
        (lambda: sparse.block_sparse_mask(8, 0), ValueError, "block_size"),
        (lambda: sparse.block_sparse_mask(8, 4, np.ones((3, 3), dtype=bool)), ValueError, "layout"),
        (lambda: sparse.block_sparse_mask(8, 4, np.ones((2, 2))), TypeError, "layout"),
        (
            lambda: sparse.block_sparse_mask(
                8, 4, np.array([[False, True], [True, True]]), causal=True
            ),
            ValueError,
            "layout",
        ),
        (
            lambda: sparse.sparse_attention_numpy(
                np.ones((1, 1, 4, 2)),
                np.ones((1, 1, 4, 2)),
                np.ones((1, 1, 4, 2)),
                np.ones((3, 3), dtype=bool),
            ),
            ValueError,
            "mask",
        ),
        (
            lambda: sparse.sparse_attention_numpy(
                np.ones((1, 1, 2, 2)),
                np.ones((1, 1, 2, 2)),
                np.ones((1, 1, 2, 2)),
                np.array([[True, False], [False, False]]),
            ),
            ValueError,
            "mask",
        ),
        (
            lambda: sparse.sparse_attention(*(torch.ones(1, 1, 4, 2) for _ in range(3)), "window"),
            TypeError,
            "pattern",
        ),
        (lambda: cost.longformer_nnz(8, 2, (9,)), ValueError, "global_tokens"),
    ],
)
def test_bad_inputs(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


@pytest.mark.parametrize(
    "method, options, word",
    [
        ("sliding_window", {"window": 0}, "window"),
        ("sliding_window", {"block_size": 0}, "block_size"),
        ("strided", {"stride": -1}, "stride"),
        ("strided", {"stride": 0}, "stride"),
        ("strided", {"block_size": 0}, "block_size"),
        ("longformer", {"global_tokens": (99,)}, "global_tokens"),
        ("block_sparse", {"layout": np.ones((5, 5), dtype=bool)}, "layout"),
        ("sliding_window", {"widow": 3}, "widow"),
    ],
)
def test_registered_methods_reject_bad_options(method, options, word):
    q, k, v = (torch.randn(1, 1, 16, 4) for _ in range(3))
    with pytest.raises(ValueError, match=word):
        attnbook.attention(q, k, v, method=method, **options)


def test_strided_two_pass_skips_most_tiles():
    n, s, bs, D = 1024, 32, 16, 8
    q, k, v = (torch.randn(1, 1, n, D) for _ in range(3))
    pattern = sparse.Strided(causal=True, stride=s)
    counter_flops = count_flops(lambda: sparse.sparse_attention(q, k, v, pattern, block_size=bs))
    near = cost.sliding_window_tiles(n, s, bs, causal=True)
    far = blockwise.plan(sparse.StridedFar(causal=True, stride=s), n, bs).tiles
    assert counter_flops == cost.blockwise_flops(near + far, bs, D)
    naive = blockwise.plan(pattern, n, bs).tiles
    assert near + far < naive / 3 < cost.sliding_window_nnz(n // bs, n // bs, causal=True)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40), w=st.integers(1, 12), bs=st.integers(1, 9), causal=st.booleans())
def test_flex_mask_mod_is_the_same_mask(n, w, causal, bs):
    """FlexAttention's mask_mod of each pattern, evaluated on every (i, j), is the pattern's
    mask."""
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    for pattern, expected in _patterns(n, w, causal, bs):
        got = sparse.flex_mask_mod(pattern, n)(0, 0, i, j).expand(n, n).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=repr(pattern))


@pytest.mark.parametrize("n", [17, 130])
@pytest.mark.parametrize("causal", [False, True])
def test_flex_attention_matches_numpy_reference(n, causal):
    """The same four masks run by FlexAttention (eager) agree with dense attention under the
    mask."""
    q, k, v = (
        torch.randn(1, 2, n, 16, generator=torch.Generator().manual_seed(s)) for s in (1, 2, 3)
    )
    for pattern, mask in _patterns(n, 5, causal, 16):
        out = sparse.flex_sparse_attention(q, k, v, pattern, block_size=16)
        ref = reference.attention(*(x.double().numpy() for x in (q, k, v)), mask=mask)
        assert out.shape == q.shape and rel_error(out, ref) < 1e-5, repr(pattern)


def test_flex_bad_input():
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(ValueError, match="a sparse pattern needs as many queries as keys"):
        sparse.flex_sparse_attention(
            q, torch.randn(1, 1, 9, 4), torch.randn(1, 1, 9, 4), sparse.SlidingWindow(window=2)
        )
    with pytest.raises(TypeError, match="pattern must be"):
        sparse.flex_mask_mod("window", 8)
    with pytest.raises(ValueError, match="block_size"):
        sparse.flex_sparse_attention(q, q, q, sparse.SlidingWindow(window=2), block_size=0)
