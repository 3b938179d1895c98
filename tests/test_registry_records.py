"""The catalogue: lists read from the records, option defaults, a reader's own method."""

import pytest
import torch

import attnbook
from attnbook.registry import METHODS, Method, add, method_info, methods, mixer_names


def _qkv(B, H, N, D, seed=0, M=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    M = N if M is None else M
    return (
        torch.randn(B, H, N, D, generator=g, dtype=dtype),
        torch.randn(B, H, M, D, generator=g, dtype=dtype),
        torch.randn(B, H, M, D, generator=g, dtype=dtype),
    )


def test_lists_come_from_the_records():
    assert methods(family="sparse") == ["sliding_window", "strided", "longformer", "block_sparse"]
    assert "sdpa" not in methods(variants=False) and "dense" in methods(variants=False)
    assert "linformer" not in methods(causal=True) and "retention" not in methods(causal=False)
    assert mixer_names()[-2:] == ["generative", "generative+avg"]
    assert set(methods()) - set(methods(device="cpu")) == {"flash_triton", "linear_triton"}
    for name in methods():
        info = method_info(name)
        assert callable(info.fn) and info.doc and info.causal in ("both", "causal", "noncausal")


def test_a_reader_can_add_a_method():
    def doubled(q, k, v, *, causal=False):
        return 2 * attnbook.attention(q, k, v, causal=causal)

    add(Method("doubled", doubled, "01", "twice dense attention"))
    try:
        q, k, v = _qkv(1, 1, 5, 3)
        torch.testing.assert_close(
            attnbook.attention(q, k, v, method="doubled"), 2 * attnbook.attention(q, k, v)
        )
        with pytest.raises(ValueError, match="already registered"):
            add(Method("dense", doubled, "01", "clash"))
    finally:
        METHODS.pop("doubled")


def test_option_defaults_are_declared_options_and_reach_the_patterns():
    for name in methods():
        info = method_info(name)
        assert set(info.defaults) <= set(info.options), name
    info = method_info("sliding_window")
    pattern, tile = info.pattern(1000)
    assert (pattern.window, tile) == (info.defaults["window"], info.defaults["block_size"])
    assert info.pattern(1000, window=5)[0].window == 5  # a given option beats the default
    strided, _ = method_info("strided").pattern(100)
    assert strided.stride == 10  # its default None means ceil(sqrt(n))
    with pytest.raises(ValueError, match="defaults must name declared options"):
        add(Method("bad", lambda q, k, v, *, causal=False: v, "00", "x", defaults={"w": 1}))
    assert "bad" not in methods()


def test_every_option_default_is_in_the_record_and_the_functions_agree():
    """The record holds every option's default; a function's own keyword defaults (for calls that
    bypass attention()) may not differ from it."""
    import inspect

    for name in methods():
        info = method_info(name)
        assert set(info.defaults) == set(info.options), name  # every option has its default
        params = inspect.signature(info.fn).parameters
        for option, default in info.defaults.items():
            if option in params and params[option].default is not inspect.Parameter.empty:
                assert params[option].default == default, (name, option)
        described = " ".join(info.options.values())
        assert "default " not in described.replace("default chosen", ""), name  # stated once


def test_attention_passes_the_record_defaults():
    q, k, v = _qkv(1, 2, 40, 8)
    info = method_info("performer")
    assert torch.equal(
        attnbook.attention(q, k, v, method="performer"),
        info.fn(q, k, v, causal=False, **info.defaults),
    )
