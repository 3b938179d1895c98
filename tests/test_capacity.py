"""Chapter 5: recall capacity without training, and the fixed-state sizes of attnbook.cost."""

import numpy as np
import pytest
import torch

from attnbook import cost
from attnbook.experiments.capacity import (
    CAPACITY_METHODS,
    capacity_sweep,
    orthogonal_keys,
    rank_bound,
    recall_errors,
    store_and_read,
)
from attnbook.mechanisms.elementwise import init_state
from attnbook.mechanisms.linear import linear_prefill
from attnbook.mechanisms.recurrent import retention_step, selective_scan_step
from attnbook.registry import attention


def _pairs(p, r=16, d=24, seed=0):
    return orthogonal_keys(p, r, seed), np.random.default_rng(seed + 1).standard_normal((p, d))


@pytest.mark.parametrize("p", [1, 5, 16])
def test_identity_state_recalls_exactly_up_to_r(p):
    keys, values = _pairs(p)
    assert keys.shape == (p, 16) and np.allclose(keys @ keys.T, np.eye(p))
    nmse, acc = recall_errors(store_and_read(keys, values, "identity"), values)
    assert nmse < 1e-20 and acc == 1.0


@pytest.mark.parametrize("p", [17, 32, 64])
def test_identity_state_fails_beyond_r(p):
    keys, values = _pairs(p)
    nmse, _ = recall_errors(store_and_read(keys, values, "identity"), values)
    assert nmse >= rank_bound(values, 16) > 0  # no r-feature read-out beats Eckart–Young
    assert nmse > 0.05


@pytest.mark.parametrize("method", ["elu", "performer"])
@pytest.mark.parametrize("p", [20, 48])
def test_feature_maps_respect_the_rank_bound(method, p):
    keys, values = _pairs(p)
    retrieved = store_and_read(keys, values, method)
    assert (
        np.linalg.matrix_rank(retrieved, tol=1e-8) <= 16
    )  # the read-out lives in an r-dimensional row space
    assert recall_errors(retrieved, values)[0] >= rank_bound(values, 16) - 1e-12


@pytest.mark.parametrize("p", [4, 16, 64, 200])
def test_softmax_recalls_every_pair(p):
    keys, values = _pairs(p)
    nmse, acc = recall_errors(store_and_read(keys, values, "softmax", scale=40.0), values)
    assert acc == 1.0 and nmse < 1e-3
    ref = attention(
        *(torch.from_numpy(x)[None, None] for x in (keys, keys, values)), method="dense"
    )
    # dense attention of the registry computes the same read-back with scale 1/sqrt(r)
    np.testing.assert_allclose(
        store_and_read(keys, values, "softmax", scale=16**-0.5),
        ref[0, 0].numpy(),
        rtol=1e-10,
        atol=1e-12,
    )


def test_window_recalls_exactly_inside_and_nothing_outside():
    keys, values = _pairs(48)
    retrieved = store_and_read(keys, values, "window", scale=40.0, window=16)
    inside = np.arange(48) >= 32
    assert np.allclose(retrieved[inside], values[inside], atol=1e-6)
    far = ((retrieved[~inside][:, None] - values[None]) ** 2).sum(-1).argmin(1)
    assert (
        far >= 32
    ).all()  # a query outside the window gets a value from inside it: never its own


def test_rank_bound_is_eckart_young():
    values = np.random.default_rng(3).standard_normal((40, 30))
    u, s, vt = np.linalg.svd(values, full_matrices=False)
    best = (u[:, :10] * s[:10]) @ vt[:10]
    assert rank_bound(values, 10) == pytest.approx(((best - values) ** 2).sum() / (values**2).sum())
    assert rank_bound(values[:10], 10) == pytest.approx(0.0, abs=1e-12)


def test_sweep_rows():
    rows = capacity_sweep(ratios=(0.5, 2), r=8, d=16, seeds=(0, 1))
    assert len(rows) == 2 * 2 * len(CAPACITY_METHODS)
    assert {r["num_pairs"] for r in rows} == {4, 16}
    soft = [r for r in rows if r["method"] == "softmax"]
    assert all(r["accuracy"] == 1.0 for r in soft)
    ident = {r["num_pairs"]: r for r in rows if r["method"] == "identity" and r["seed"] == 0}
    assert ident[4]["nmse"] < 1e-20 and ident[16]["nmse"] > 0.1


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: store_and_read(np.eye(3), np.eye(3), "nope"), ValueError, "method"),
        (lambda: store_and_read(np.eye(3), np.eye(4), "identity"), ValueError, "keys"),
        (lambda: store_and_read(np.eye(3), np.eye(3), "softmax", scale=0), ValueError, "scale"),
        (lambda: orthogonal_keys(0, 4), ValueError, "num_pairs"),
        (lambda: recall_errors(np.eye(3), np.eye(4)), ValueError, "retrieved"),
        (lambda: cost.state_numbers("dense", 64, 2), ValueError, "method"),
        (lambda: cost.state_numbers("linear", 64, 3), ValueError, "heads"),
        (lambda: cost.exact_recall_pairs("elementwise", 64, 2, order=-1), ValueError, "order"),
    ],
    ids=["method", "shapes", "scale", "pairs", "errors-shape", "state-method", "heads", "order"],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# ---- state sizes against the mechanisms' own state tensors
# ----------------------------------------------


@pytest.mark.parametrize("d_model, heads", [(64, 2), (32, 4), (48, 1)])
def test_state_numbers_match_the_decoding_states(d_model, heads):
    d_k = d_model // heads
    q = k = v = torch.randn(1, heads, 5, d_k)
    lin = linear_prefill(k, v)
    assert cost.state_numbers("linear", d_model, heads) == lin.S.numel() + lin.z.numel()
    ret, _ = retention_step(None, q[:, :, 0], k[:, :, 0], v[:, :, 0])
    assert cost.state_numbers("retention", d_model, heads) == sum(t.numel() for t in ret)
    scan, _ = selective_scan_step(None, q[:, :, 0], k[:, :, 0], v[:, :, 0])
    assert cost.state_numbers("selective_scan", d_model, heads) == sum(t.numel() for t in scan)
    for order in (0, 2, 4):
        ew = init_state(1, heads, d_k, order)
        assert (
            cost.state_numbers("elementwise", d_model, heads, order=order)
            == ew.A.numel() + ew.Z.numel()
        )
        assert cost.exact_recall_pairs("elementwise", d_model, heads, order=order) == order + 1
    # the Performer is linear attention on r random features: S (r × d_k) and z (r) per head
    r = 24
    assert cost.state_numbers("performer", d_model, heads, features=r) == heads * (r * d_k + r)
    assert cost.exact_recall_pairs("linear", d_model, heads) == d_k


def test_delta_rule_is_exact_up_to_r_then_keeps_the_latest_pairs():
    r, d = 8, 16
    values = np.random.default_rng(0).standard_normal((3 * r, d))
    keys = orthogonal_keys(3 * r, r, seed=0)
    for P in (3, r):
        nmse, acc = recall_errors(store_and_read(keys[:P], values[:P], "delta"), values[:P])
        assert nmse < 1e-20 and acc == 1.0
    read = store_and_read(keys, values, "delta")  # three stacked bases: the last overwrites
    np.testing.assert_allclose(read[-r:], values[-r:], atol=1e-12)
    assert recall_errors(read, values)[1] < 0.5
    one, several = (
        recall_errors(store_and_read(keys, values, m), values)[0] for m in ("delta", "delta_3pass")
    )
    assert several < one  # averaged passes trade the latest pairs for a least-squares compromise
