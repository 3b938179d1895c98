"""Chapter 10's serving code: MLA, paged cache, speculative decoding, sinks, cost formulas."""

import math

import pytest
import torch

from attnbook import cost
from attnbook.measure import count_flops
from attnbook.models.decoder import Decoder, KVCache
from attnbook.models.mla import MLADecoder, MLAttention, rope
from attnbook.models.paged import (
    BlockAllocator,
    PagedKVCache,
    contiguous_attention,
    paged_attention,
)
from attnbook.models.speculative import speculative_decode, target_decode
from attnbook.models.streaming import SinkCache, streaming_loss


# ----------------------------------------------------------------------------- MLA
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("rope_dim", [0, 4])
def test_mla_absorbed_decode_equals_naive_forward(dtype, tol, rope_dim):
    torch.manual_seed(0)
    model = MLADecoder(30, 2, 32, 4, 8, 12, rope_dim).to(dtype).eval()
    idx = torch.randint(0, 30, (3, 17))
    with torch.no_grad():
        full = model(idx)
        naive_cache, absorbed_cache = model.new_cache(), model.new_cache()
        naive = torch.cat([model(idx[:, t : t + 1], naive_cache) for t in range(17)], 1)
        absorbed = torch.cat(
            [model(idx[:, t : t + 1], absorbed_cache, absorbed=True) for t in range(17)], 1
        )
        chunked_cache = model.new_cache()
        chunked = torch.cat(
            [model(idx[:, :9], chunked_cache, absorbed=True), model(idx[:, 9:], chunked_cache)], 1
        )
    scale = full.abs().max()
    for other in (naive, absorbed, chunked):
        assert float((other - full).abs().max() / scale) <= tol


def test_mla_cache_holds_latent_plus_rope_numbers_per_token_and_layer():
    layers, d_c, d_r, steps = 3, 16, 6, 11
    model = MLADecoder(20, layers, 48, 6, 8, d_c, d_r).eval()
    cache = model.new_cache()
    with torch.no_grad():
        for t in range(steps):
            model(torch.full((2, 1), t % 20), cache, absorbed=True)
    assert all(c.shape == (2, steps, d_c) for c in cache.latents)
    assert all(k.shape == (2, steps, d_r) for k in cache.rope_keys)
    assert cache.nbytes() == 4 * layers * 2 * steps * (d_c + d_r)
    assert cache.nbytes() == cost.kv_cache_bytes(
        layers, 48, steps, 6, bytes_per_element=4, batch=2, latent_dim=d_c, rope_dim=d_r
    )


def test_mla_is_causal():
    torch.manual_seed(1)
    att = MLAttention(16, 2, 8, 8, 4).double()
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    y = att(x)
    x2 = x.clone()
    x2[:, 6:] += 1.0
    y2 = att(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:])


def test_rope_preserves_norms_and_makes_scores_relative():
    torch.manual_seed(0)
    q, k = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    pos = torch.arange(20)
    rq, rk = rope(q.expand(20, 6), pos), rope(k.expand(20, 6), pos)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(20))
    # q at position i against k at position j depends on i - j only
    torch.testing.assert_close(rq[5] @ rk[2], rq[13] @ rk[10])
    with pytest.raises(ValueError, match="even"):
        rope(torch.randn(3, 5), torch.arange(3))


def test_mla_bad_input_is_named():
    with pytest.raises(ValueError, match="rope_dim"):
        MLAttention(16, 2, 8, 8, 3)
    with pytest.raises(ValueError, match="latent_dim"):
        MLAttention(16, 2, 8, 0, 4)


def test_kv_cache_bytes_mla_and_deepseek_v2_gqa_equivalence():
    # DeepSeek-V2: L = 60, n_h = 128, d_h = 128, d_c = 4 d_h, d_h^R = d_h / 2
    per_token = cost.kv_cache_bytes(
        60, 5120, 1, 128, bytes_per_element=1, latent_dim=512, rope_dim=64
    )
    assert per_token == 60 * (512 + 64)  # (d_c + d_h^R)·L elements, the paper's 4.5·d_h·L
    assert per_token == 60 * 4.5 * 128
    groups = cost.mla_gqa_groups(512, 64, 128)
    assert groups == 2.25
    # GQA with G groups caches 2·G·d_h·L: MLA equals GQA with 2.25 groups
    assert per_token == 2 * groups * 128 * 60
    with pytest.raises(ValueError, match="kv_heads"):
        cost.kv_cache_bytes(2, 64, 1, 4, kv_heads=2, latent_dim=8)
    with pytest.raises(ValueError, match="rope_dim"):
        cost.kv_cache_bytes(2, 64, 1, 4, rope_dim=8)


# ----------------------------------------------------------------------------- paged cache
def test_allocator_free_list_and_reference_counts():
    a = BlockAllocator(3)
    pages = [a.allocate() for _ in range(3)]
    assert pages == [0, 1, 2] and a.used == 3
    with pytest.raises(MemoryError):
        a.allocate()
    a.share(1)
    a.release(1)
    assert a.used == 3
    a.release(1)
    assert a.used == 2 and a.allocate() == 1
    with pytest.raises(ValueError, match="not allocated"):
        BlockAllocator(2).release(0)


def _filled(lengths, block=4, kv_heads=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    cache = PagedKVCache(sum(-(-n // block) for n in lengths) + 4, block, kv_heads, d)
    keys, values = [], []
    for i, n in enumerate(lengths):
        k, v = torch.randn(kv_heads, n, d, generator=g), torch.randn(kv_heads, n, d, generator=g)
        cache.add(i)
        cache.append(i, k[:, : n // 2], v[:, : n // 2])  # two appends: pages fill across calls
        cache.append(i, k[:, n // 2 :], v[:, n // 2 :])
        keys.append(k)
        values.append(v)
    return cache, keys, values


@pytest.mark.parametrize("n_query", [1, 3])
@pytest.mark.parametrize("heads", [2, 4])
def test_paged_attention_equals_contiguous_on_a_ragged_batch(n_query, heads):
    lengths = [5, 13, 3, 8]
    cache, keys, values = _filled(lengths)
    for i, k in enumerate(keys):
        got_k, got_v = cache.gather(i)
        assert torch.equal(got_k, k) and torch.equal(got_v, values[i])
    q = torch.randn(len(lengths), heads, n_query, 8, generator=torch.Generator().manual_seed(1))
    paged = paged_attention(q, cache, range(len(lengths)))
    torch.testing.assert_close(paged, contiguous_attention(q, keys, values), rtol=1e-6, atol=1e-6)


def test_paged_attention_is_causal():
    cache, keys, values = _filled([9])
    q = torch.randn(1, 2, 4, 8)
    before = paged_attention(q, cache, [0])
    keys[0][:, -1] += 5.0  # change the last key: only the last query sees it
    cache2 = PagedKVCache(8, 4, 2, 8)
    cache2.add(0)
    cache2.append(0, keys[0], values[0])
    after = paged_attention(q, cache2, [0])
    torch.testing.assert_close(before[:, :, :3], after[:, :, :3])
    assert not torch.allclose(before[:, :, 3], after[:, :, 3])


def test_fork_shares_pages_and_copies_on_write():
    cache, keys, values = _filled([6], block=4)
    used = cache.allocator.used
    cache.fork(0, "child")
    assert cache.allocator.used == used  # nothing copied yet
    k_new, v_new = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    cache.append("child", k_new, v_new)
    assert cache.allocator.used == used + 1  # the shared last page was copied
    assert cache.tables["child"][0] == cache.tables[0][0]  # the full first page is still shared
    assert cache.tables["child"][1] != cache.tables[0][1]
    torch.testing.assert_close(cache.gather(0)[0], keys[0])  # the parent is untouched
    torch.testing.assert_close(cache.gather("child")[0], torch.cat([keys[0], k_new], 1))
    cache.free(0)
    cache.free("child")
    assert cache.allocator.used == 0


def test_paged_bad_input_is_named():
    cache, _, _ = _filled([3])
    with pytest.raises(ValueError, match="fewer than N"):
        paged_attention(torch.randn(1, 2, 5, 8), cache, [0])
    with pytest.raises(ValueError, match="kv_heads"):
        cache.append(0, torch.randn(3, 1, 8), torch.randn(3, 1, 8))
    with pytest.raises(KeyError, match="unknown"):
        cache.gather(7)


def test_waste_formulas():
    assert cost.contiguous_waste([1, 3], 4) == 0.5
    assert cost.paged_waste([1, 3, 4], 4) == 1 - 8 / 12
    with pytest.raises(ValueError, match="max_len"):
        cost.contiguous_waste([5], 4)
    with pytest.raises(ValueError, match="lengths"):
        cost.paged_waste([], 4)


# ----------------------------------------------------------------------------- speculative
def _models(vocab=12, seed=0):
    torch.manual_seed(seed)
    target = Decoder(vocab, 2, 32, 4, max_len=64).double().eval()
    draft = Decoder(vocab, 1, 16, 2, max_len=64).double().eval()
    return target, draft


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_greedy_speculative_equals_target_only(gamma):
    target, draft = _models()
    prompt = torch.tensor([[1, 5, 2]])
    expected = target_decode(target, prompt, 30)
    got, stats = speculative_decode(target, draft, prompt, 30, gamma)
    assert torch.equal(got, expected)
    assert stats.target_calls < 30 or stats.accepted == 0
    assert stats.emitted >= 30 and stats.drafted <= gamma * stats.target_calls


def test_a_perfect_draft_is_always_accepted():
    target, _ = _models()
    _, stats = speculative_decode(
        target,
        target,
        torch.tensor([[3]]),
        30,
        4,
        greedy=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.alpha == 1.0 and stats.tokens_per_call == 5.0


def test_speculative_sampling_keeps_the_target_distribution():
    """χ² test: the first emitted token over many runs against the target's p(·|context)."""
    vocab, runs = 6, 3000
    target, draft = _models(vocab=vocab, seed=3)
    with torch.no_grad():  # smaller embeddings: flatter distributions, every token expected often
        target.tok.weight.mul_(0.3)
        draft.tok.weight.mul_(0.3)
    prompt = torch.tensor([[0, 4, 1]])
    with torch.no_grad():
        p = target(prompt)[0, -1].softmax(-1)
        q = draft(prompt)[0, -1].softmax(-1)
    assert float((p - q).abs().sum()) > 0.2  # the draft really differs from the target
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(vocab, dtype=torch.float64)
    for _ in range(runs):
        out, _ = speculative_decode(target, draft, prompt, 1, 2, greedy=False, generator=g)
        counts[out[0, -1]] += 1
    expected = runs * p
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    p_value = float(torch.special.gammaincc(torch.tensor((vocab - 1) / 2), torch.tensor(chi2 / 2)))
    assert p_value > 1e-3, f"χ² = {chi2:.1f}, p = {p_value:.2g}"
    # the same test rejects the draft's own distribution
    chi2_q = float(((runs * q - expected) ** 2 / expected).sum())
    assert (
        float(torch.special.gammaincc(torch.tensor((vocab - 1) / 2), torch.tensor(chi2_q / 2)))
        < 1e-3
    )


def test_speculative_bad_input_is_named():
    target, draft = _models()
    with pytest.raises(ValueError, match="gamma"):
        speculative_decode(target, draft, torch.tensor([[1]]), 4, 0)
    with pytest.raises(TypeError, match="prompt"):
        speculative_decode(target, draft, torch.tensor([1]), 4, 2)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.8, 0.999])
def test_expected_tokens_per_step_is_the_truncated_geometric_mean(alpha):
    for gamma in range(1, 7):
        direct = sum(alpha**i for i in range(gamma + 1))  # P(at least i accepted), i = 0..γ
        assert math.isclose(cost.expected_tokens_per_step(alpha, gamma), direct, rel_tol=1e-12)
    assert cost.expected_tokens_per_step(1.0, 4) == 5.0
    with pytest.raises(ValueError, match="alpha"):
        cost.expected_tokens_per_step(1.5, 2)
    with pytest.raises(ValueError, match="gamma"):
        cost.expected_tokens_per_step(0.5, 0)
    assert cost.speculative_speedup(alpha, 3, 0.0) == cost.expected_tokens_per_step(alpha, 3)


def test_expected_tokens_matches_simulated_bernoulli_acceptance():
    g = torch.Generator().manual_seed(0)
    alpha, gamma, steps = 0.7, 4, 20000
    accepted = torch.rand(steps, gamma, generator=g) < alpha
    first_reject = torch.where(accepted.all(1), gamma, (~accepted).int().argmax(1))
    tokens = (first_reject + 1).double().mean()
    assert abs(float(tokens) / cost.expected_tokens_per_step(alpha, gamma) - 1) < 0.02


# ----------------------------------------------------------------------------- sinks
def test_sink_cache_keeps_sinks_and_window_at_constant_size():
    torch.manual_seed(0)
    model = Decoder(10, 2, 16, 2, max_len=200).eval()
    torch.nn.init.zeros_(model.pos.weight)
    stream = torch.randint(0, 10, (2, 60))
    losses, sizes = streaming_loss(model, stream, SinkCache(2, 3, 5))
    assert losses.shape == (59,)
    per_token = cost.kv_cache_bytes(2, 16, 1, 2, bytes_per_element=4, batch=2)
    assert sizes[-1] == sizes[20] == 8 * per_token and max(sizes) == sizes[-1]
    full_losses, full_sizes = streaming_loss(model, stream, KVCache(2))
    assert full_sizes[-1] == 59 * per_token
    # while the stream fits in sinks + window, the streaming cache is the full cache
    torch.testing.assert_close(losses[:7], full_losses[:7])
    assert not torch.allclose(losses[20:], full_losses[20:])


def test_sink_cache_keeps_the_first_tokens():
    cache = SinkCache(1, 2, 3)
    for t in range(10):
        x = torch.full((1, 1, 1, 1), float(t))
        cache.append(0, x, x)
    assert cache.keys[0].flatten().tolist() == [0.0, 1.0, 7.0, 8.0, 9.0]
    window_only = SinkCache(1, 0, 3)
    for t in range(10):
        x = torch.full((1, 1, 1, 1), float(t))
        window_only.append(0, x, x)
    assert window_only.keys[0].flatten().tolist() == [7.0, 8.0, 9.0]
    with pytest.raises(ValueError, match="window"):
        SinkCache(1, 2, 0)


# ----------------------------------------------------------------------------- decode cost
def test_decode_flops_match_the_counter_and_chapter_2():
    from attnbook.experiments.inference import decoder_numbers

    torch.manual_seed(0)
    for kv_heads in (4, 2, 1):
        model = Decoder(30, 2, 32, 4, kv_heads=kv_heads, max_len=64).eval()
        numbers = decoder_numbers(model)
        cache = model.new_cache()
        with torch.no_grad():
            model(torch.zeros(3, 20, dtype=torch.long), cache)
            counted = count_flops(lambda: model(torch.zeros(3, 1, dtype=torch.long), cache))
        formula = cost.decode_flops(
            3, 21, matmul_params=numbers["matmul_params"], layers=2, d_model=32
        )
        assert counted == formula
        assert numbers["kv_bytes_per_token"] * 21 * 3 == cache.nbytes()
    # with multi-head attention it is chapter 2's decode_token_flops
    assert formula != 0
    mha = decoder_numbers(Decoder(30, 2, 32, 4, max_len=64))
    assert cost.decode_flops(
        3, 21, matmul_params=mha["matmul_params"], layers=2, d_model=32
    ) == cost.decode_token_flops(20, 32, 4, 128, 2, 30, batch=3)


def test_decode_intensity_and_critical_batch():
    model = {
        "matmul_params": 10**6,
        "layers": 4,
        "d_model": 256,
        "weight_bytes": 4 * 10**6,
        "kv_bytes_per_token": 8192,
    }
    b = cost.critical_batch(2.0, 128, **model)
    lo, hi = math.floor(b), math.ceil(b)
    assert lo < b < hi
    assert cost.decode_intensity(lo, 128, **model) < 2.0 < cost.decode_intensity(hi, 128, **model)
    assert cost.critical_batch(1000.0, 128, **model) == math.inf
    with pytest.raises(ValueError, match="ridge"):
        cost.critical_batch(0, 128, **model)


def test_train_decoder_without_positions_keeps_them_zero_and_learns():
    from attnbook.experiments.data import CharCorpus
    from attnbook.experiments.inference import decode_step_time, prefill_time, train_decoder

    corpus = CharCorpus("abcabcabd" * 60)
    model, result = train_decoder(
        corpus, layers=1, d_model=16, heads=2, block_size=8, steps=30, positions=False, max_len=40
    )
    assert not model.training and model.max_len == 40
    assert float(model.pos.weight.abs().max()) == 0.0
    assert result.final_val_loss < torch.log(torch.tensor(float(corpus.vocab_size)))
    assert decode_step_time(model, 2, 10, repeats=2) > 0 and prefill_time(model, 1, 8) > 0
    with pytest.raises(ValueError, match="block_size"):
        train_decoder(corpus, layers=1, d_model=16, heads=2, block_size=0, steps=1)
