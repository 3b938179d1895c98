"""attnbook: the companion package of *The computational complexity of attention*.

The package follows the book: ``reference`` and ``dense`` (chapter 1), ``cost``
and ``measure`` (chapters 2-3), ``long`` (chapter 4), and so on. Chapters
import from here instead of re-defining anything.
"""
from . import checks, config, cost, dense, measure, plot, reference
from .attention import attention, method_info, methods
from . import generative  # noqa: E402,F401  registers the chapter-8 GPT mixers "generative", "generative+avg"

__version__ = "0.1.0"
__all__ = ["attention", "methods", "method_info", "checks", "config", "cost", "dense", "measure", "plot", "reference"]
