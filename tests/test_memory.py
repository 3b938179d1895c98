"""Chapter 3: every memory formula against a measured count."""

import pytest
import torch
from torch import nn

from attnbook import cost
from attnbook.measure import saved_tensor_bytes
from attnbook.models.checkpointing import CheckpointedStack
from attnbook.models.decoder import CachedAttention, Decoder
from attnbook.models.gpt import GPT, Block, GPTConfig


@pytest.mark.parametrize(
    "d, d_ff, H", [(8, 32, 2), (64, 256, 4), (96, 200, 3)], ids=lambda x: str(x)
)
def test_layer_params_match_torch_modules(d, d_ff, H):
    enc = nn.TransformerEncoderLayer(d, H, dim_feedforward=d_ff, batch_first=True, norm_first=True)
    block = Block(GPTConfig(vocab_size=2, n_head=H, d_model=d, d_ff=d_ff))
    expected = cost.layer_params(d, d_ff)
    assert sum(p.numel() for p in enc.parameters()) == expected
    assert sum(p.numel() for p in block.parameters()) == expected


def test_gpt2_small_param_count_is_exact():
    model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768))
    count = cost.gpt_params(12, 768, 50257, block_size=1024)
    assert model.num_params() == count == 124_439_808
    untied = cost.gpt_params(12, 768, 50257, block_size=1024, tied=False)
    assert untied - count == 50257 * 768


def test_gpt3_headline_numbers():
    p = cost.gpt_params(96, 12288, 50257, block_size=2048)
    assert abs(p / 175e9 - 1) < 0.01
    assert abs(cost.param_bytes(p, 4) / 700e9 - 1) < 0.01
    assert cost.training_state_bytes(p) == 16 * p


@pytest.mark.parametrize(
    "b, n, d, H",
    [(1, 1, 8, 1), (2, 16, 32, 4), (3, 33, 64, 8), (1, 128, 48, 3)],
    ids=lambda x: str(x),
)
@pytest.mark.parametrize("mixer", ["dense", "sdpa"])
def test_block_saved_bytes_exact(b, n, d, H, mixer):
    block = Block(GPTConfig(vocab_size=2, block_size=n, n_head=H, d_model=d, mixer=mixer)).train()
    x = torch.randn(b, n, d, requires_grad=True)
    assert saved_tensor_bytes(block, x) == cost.block_saved_bytes(b, n, d, H, fused=mixer == "sdpa")


def test_saved_tensor_bytes_counts_each_storage_once_and_skips_parameters():
    x = torch.randn(100, requires_grad=True)
    assert saved_tensor_bytes(lambda t: (t * t).sum(), x) == 400  # x saved twice, one storage
    lin = nn.Linear(10, 10)
    assert (
        saved_tensor_bytes(lin, torch.randn(3, 10, requires_grad=True)) == 3 * 10 * 4
    )  # input only
    with torch.no_grad():
        assert saved_tensor_bytes(lin, torch.randn(3, 10)) == 0


def test_coarse_and_korthikanti_forms():
    coarse = cost.activation_bytes_coarse(96, 32, 2048, 12288, 96)
    assert coarse["scores"] == 96 * 32 * 96 * 2048**2 * 4  # ≈ 4.9 TB, not ≈ 500 GB
    assert 4.8e12 < coarse["scores"] < 5.0e12
    assert cost.korthikanti_layer_bytes(2048, 1, 4096, 32) == 34 * 2048 * 4096 + 5 * 32 * 2048**2


@pytest.mark.parametrize("layers, every", [(4, 1), (4, 2), (6, 4), (5, 5)])
def test_checkpoint_saved_bytes(layers, every):
    b, n, d = 2, 24, 32
    stack = CheckpointedStack(layers, d, 4, n, every=every).train()
    x = torch.randn(b, n, d, requires_grad=True)
    assert saved_tensor_bytes(stack, x) == cost.checkpoint_saved_bytes(layers, every, b, n, d)


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    stack = CheckpointedStack(4, 16, 2, 12)
    x = torch.randn(2, 12, 16, requires_grad=True)
    grads = []
    for k in (0, 2):
        stack.every = k
        stack.zero_grad()
        x.grad = None
        stack(x).square().sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in stack.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_best_checkpoint_every_is_sqrt_l_when_layer_equals_boundary():
    for layers in (4, 16, 64, 100):
        assert cost.best_checkpoint_every(layers, 1, 1) == int(layers**0.5)


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_kv_cache_decoding_equals_full_forward_and_formula(kv_heads):
    torch.manual_seed(kv_heads)
    model = Decoder(40, 2, 32, 4, kv_heads, max_len=64).eval()
    idx = torch.randint(0, 40, (2, 21))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        steps = [model(idx[:, :3], cache)] + [model(idx[:, t : t + 1], cache) for t in range(3, 21)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)
    assert cache.tokens == 21
    assert cache.nbytes() == cost.kv_cache_bytes(
        2, 32, 21, 4, kv_heads, bytes_per_element=4, batch=2
    )


def test_kv_cache_7b_numbers():
    mha = cost.kv_cache_bytes(32, 4096, 4096, 32)
    assert mha == 2 * 32 * 4096 * 4096 * 2 == 2 * 2**30  # 2 GiB at 4k in 16-bit
    assert cost.kv_cache_bytes(32, 4096, 131072, 32, kv_heads=8) == 64 * 2**30 // 4


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: cost.kv_cache_bytes(32, 4096, 10, 32, kv_heads=5),
            ValueError,
            "heads \\(32\\) must be divisible by kv_heads",
        ),
        (
            lambda: cost.kv_cache_bytes(32, 4096, -1, 32),
            ValueError,
            "tokens must be an integer >= 1",
        ),
        (lambda: cost.gpt_params(0, 8, 10), ValueError, "layers must be an integer >= 1"),
        (
            lambda: cost.block_saved_bytes(1, 4, 8, 2, d_ff=0),
            ValueError,
            "d_ff must be an integer >= 1",
        ),
        (
            lambda: CachedAttention(32, 4, 3),
            ValueError,
            "heads \\(4\\) must be divisible by kv_heads \\(3\\)",
        ),
        (lambda: CheckpointedStack(3, 8, 2, 4, every=4), ValueError, "every must be at most"),
        (
            lambda: CheckpointedStack(3, 8, 2, 4, every=-1),
            ValueError,
            "every must be an integer >= 0",
        ),
        (
            lambda: Decoder(10, 1, 8, 2, max_len=4)(torch.zeros(1, 5, dtype=torch.long)),
            ValueError,
            "exceeds max_len=4",
        ),
        (
            lambda: Decoder(10, 1, 8, 2)(torch.zeros(1, 5)),
            TypeError,
            "idx must be a \\(B, N\\) torch.long tensor",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_unit_layer_stack_has_sqrt_l_optimum_in_saved_memory():
    # Each bias-free Linear keeps only its input: per-segment memory model (L/k + k) inputs.
    torch.manual_seed(0)
    L, b, n, d = 16, 2, 8, 16
    stack = CheckpointedStack.of([nn.Linear(d, d, bias=False) for _ in range(L)])
    x = torch.randn(b, n, d, requires_grad=True)
    for k in (1, 4, 16):
        stack.every = k
        assert saved_tensor_bytes(stack, x) == cost.checkpoint_saved_bytes(L, k, b, n, d)
    assert cost.best_checkpoint_every(L, b * n * d * 4, b * n * d * 4) == 4
    with pytest.raises(ValueError, match="modules must hold at least one module"):
        CheckpointedStack.of([])
