"""One rank's share of exact attention, in blocks (chapter 9, Attention across devices).

:func:`attend` computes softmax attention of a set of query pieces against a set of key pieces and
returns the output with its log-sum-exp, skipping the piece pairs a causal mask hides entirely;
:func:`merge` combines two such partial results by the online-softmax rule of FlashAttention
(chapter 4); :func:`attend_backward` is the matching backward pass, recomputing the probabilities
from the saved log-sum-exp. Every distributed form in :mod:`attnbook.distributed` is built on these.
Queries are processed in tiles of at most ``Q_TILE`` rows, so the score workspace is
``Q_TILE × keys`` whatever the number of queries.
"""

from __future__ import annotations

import torch

from .layout import Piece, pair_kind

__all__ = ["Q_TILE", "attend", "merge", "attend_backward", "LocalAttention"]

Q_TILE = 512


def _keys(k_pieces, q: Piece, causal: bool):
    """The key pieces q meets, the rows they occupy,
    their positions, and whether any needs a mask."""
    kept = [(kp, pair_kind(q, kp, causal)) for kp in k_pieces]
    kept = [(kp, kind) for kp, kind in kept if kind != "skip"]
    rows = torch.cat([torch.arange(kp.start, kp.stop) for kp, _ in kept]) if kept else None
    positions = torch.cat([kp.positions for kp, _ in kept]) if kept else None
    return rows, positions, any(kind == "masked" for _, kind in kept)


def _select(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[..., rows, :] without a copy when rows is one contiguous run."""
    first, last = int(rows[0]), int(rows[-1])
    if last - first + 1 == len(rows):
        return x[..., first : last + 1, :]
    return x.index_select(-2, rows.to(x.device))


def _tiles(q: Piece):
    for t0 in range(q.start, q.stop, Q_TILE):
        t1 = min(t0 + Q_TILE, q.stop)
        yield t0, t1, q.positions[t0 - q.start : t1 - q.start]


def attend(q, k, v, q_pieces, k_pieces, causal: bool, scale: float):
    """Attention of the queries in ``q_pieces`` to the keys in ``k_pieces`` (chapter 9).

    q: (B, H, Nq, D), k: (B, H, Nk, D), v: (B, H, Nk, Dv); pieces give rows and global positions.
    Returns (o (B, H, Nq, Dv), lse (B, H, Nq)): the normalised output over the allowed keys and the
    log-sum-exp of its scores; a row that sees no key gets o = 0 and lse = -inf.
    """
    B, H, Nq, _ = q.shape
    o = q.new_zeros(B, H, Nq, v.shape[-1])
    lse = q.new_full((B, H, Nq), float("-inf"))
    for qp in q_pieces:
        rows, k_pos, masked = _keys(k_pieces, qp, causal)
        if rows is None:
            continue
        kk, vv = _select(k, rows), _select(v, rows)
        for t0, t1, q_pos in _tiles(qp):
            s = (q[..., t0:t1, :] @ kk.transpose(-1, -2)) * scale
            if masked:
                s = s.masked_fill(
                    q_pos.to(s.device)[:, None] < k_pos.to(s.device)[None, :], float("-inf")
                )
            m = s.amax(-1, keepdim=True)
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
            e = torch.exp(s - m)
            denom = e.sum(-1, keepdim=True)
            o[..., t0:t1, :] = (e @ vv) / torch.where(denom > 0, denom, torch.ones_like(denom))
            lse[..., t0:t1] = (m + torch.log(denom)).squeeze(-1)
    return o, lse


def merge(o, lse, o_b, lse_b):
    """Combine two partial results over disjoint key sets by the online-softmax rule (chapter 4).

    o, o_b: (B, H, N, Dv); lse, lse_b: (B, H, N). Returns (o', lse') over the union of the keys.
    """
    new = torch.logaddexp(lse, lse_b)
    safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
    w, w_b = torch.exp(lse - safe).unsqueeze(-1), torch.exp(lse_b - safe).unsqueeze(-1)
    return o * w + o_b * w_b, new


def attend_backward(q, k, v, do, lse, delta, dq, q_pieces, k_pieces, causal: bool, scale: float):
    """Backward of :func:`attend` for queries whose full softmax has log-sum-exp ``lse``.

    do: (B, H, Nq, Dv); lse, delta = rowsum(do ∘ o): (B, H, Nq), over *all* keys the queries see.
    Adds the queries' gradient from these keys into ``dq`` (B, H, Nq, D) and returns (dk, dv), the
    gradients of these keys and values (shapes of k and v).

    Chapter 9.
    """
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    lse = torch.where(
        torch.isinf(lse), torch.zeros_like(lse), lse
    )  # a row that sees no key: p = 0, not NaN
    for qp in q_pieces:
        rows, k_pos, masked = _keys(k_pieces, qp, causal)
        if rows is None:
            continue
        kk, vv = _select(k, rows), _select(v, rows)
        dkk, dvv = torch.zeros_like(kk), torch.zeros_like(vv)
        for t0, t1, q_pos in _tiles(qp):
            qt, dot = q[..., t0:t1, :], do[..., t0:t1, :]
            s = (qt @ kk.transpose(-1, -2)) * scale
            if masked:
                s = s.masked_fill(
                    q_pos.to(s.device)[:, None] < k_pos.to(s.device)[None, :], float("-inf")
                )
            p = torch.exp(s - lse[..., t0:t1, None])
            dvv += p.transpose(-1, -2) @ dot
            ds = p * (dot @ vv.transpose(-1, -2) - delta[..., t0:t1, None])
            dq[..., t0:t1, :] += (ds @ kk) * scale
            dkk += (ds.transpose(-1, -2) @ qt) * scale
        dk.index_add_(-2, rows.to(k.device), dkk)
        dv.index_add_(-2, rows.to(v.device), dvv)
    return dk, dv


class LocalAttention(torch.autograd.Function):
    """Exact attention on one device with the blockwise forward and backward above (chapter 9).

    ``apply(q, k, v, q_pieces, k_pieces, causal)``: q (B, H, Nq, D), k, v (B, H, Nk, D/Dv) ->
    (B, H, Nq, Dv). Saves q, k, v, o and the log-sum-exp, never the scores.
    """

    @staticmethod
    def forward(ctx, q, k, v, q_pieces, k_pieces, causal):
        scale = q.shape[-1] ** -0.5
        o, lse = attend(q, k, v, q_pieces, k_pieces, causal, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = (q_pieces, k_pieces, causal, scale)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        q_pieces, k_pieces, causal, scale = ctx.args
        do = do.contiguous()
        dq = torch.zeros_like(q)
        dk, dv = attend_backward(
            q, k, v, do, lse, (do * o).sum(-1), dq, q_pieces, k_pieces, causal, scale
        )
        return dq, dk, dv, None, None, None
