"""One entry point for every attention mechanism in the book (chapter 4, Long sequences).

``attention(q, k, v, method=..., causal=..., **options)`` validates the inputs,
looks the method up in a registry and calls it. Modules that provide methods
register them with :func:`register`; the list of such modules is ``_PROVIDERS``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from .checks import check_qkv

__all__ = ["Method", "register", "methods", "method_info", "attention"]

_PROVIDERS = ("attnbook.dense", "attnbook.long", "attnbook.elementwise")


@dataclass(frozen=True)
class Method:
    """A registered mechanism: its function, whether it is exact, its options (name -> description)."""

    name: str
    fn: Callable
    exact: bool
    chapter: str
    options: dict = field(default_factory=dict)
    doc: str = ""


_REGISTRY: dict[str, Method] = {}
_loaded = False


def register(name: str, *, exact: bool, chapter: str, options: dict | None = None):
    """Decorator: register ``fn(q, k, v, *, causal, **options) -> (B, H, N, D)`` under ``name``."""

    def wrap(fn):
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"attention method {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Method(name, fn, exact, chapter, dict(options or {}), doc[0] if doc else "")
        return fn

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in _PROVIDERS:
            importlib.import_module(module)
        _loaded = True


def methods() -> list[str]:
    """Names of every registered attention method, in registration order."""
    _load()
    return list(_REGISTRY)


def method_info(name: str) -> Method:
    """The :class:`Method` record of ``name``; ``ValueError`` listing the known names otherwise."""
    _load()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"method must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, /, method: str = "dense",
              causal: bool = False, **options) -> torch.Tensor:
    """Attention by any registered method.

    q: (B, H, N, D), k: (B, H, N, D), v: (B, H, N, Dv) -> (B, H, N, Dv), on the inputs' device.
    ``attnbook.methods()`` lists the methods; ``attnbook.method_info(name).options`` their options.
    """
    info = method_info(method)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for method {method!r}; its options are {sorted(info.options)}")
    check_qkv(q, k, v)
    return info.fn(q, k, v, causal=causal, **options)
