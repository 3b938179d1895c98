"""attnbook: the companion package of *The computational complexity of attention*.

Organised by role: ``attnbook.mechanisms`` (each attention mechanism with its NumPy float64
reference, torch form and recurrent step), ``attnbook.models`` (GPT, decoder, MoE, training),
``attnbook.experiments`` (tasks, recall, scaling, the chooser, data), ``attnbook.cost``
(formulas by quantity: FLOPs, parameters, memory, IO, bounds), ``attnbook.bench`` (the runner
and one module per suite), and at the top the registry, checks, config, measure, plot and the
NumPy ``reference`` of chapter 1. Importing ``attnbook`` is cheap: it loads the registry,
checks, config and the NumPy/torch reference code, nothing that plots or benchmarks.
"""

from attnbook import checks, config, cost, measure, reference
from attnbook.registry import attention, decode, method_info, methods, mixers, suites

__version__ = "0.2.0"
__all__ = [
    "attention",
    "decode",
    "methods",
    "method_info",
    "mixers",
    "suites",
    "checks",
    "config",
    "cost",
    "measure",
    "reference",
    "__version__",
]


def __getattr__(name: str):
    # attnbook.plot imports matplotlib: loaded on first use, not by `import attnbook`.
    if name == "plot":
        import importlib

        return importlib.import_module("attnbook.plot")
    raise AttributeError(f"module 'attnbook' has no attribute {name!r}")
